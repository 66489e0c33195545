"""The planner: a Request is validated once (nothing loaded, nothing written), resolved into a Plan
(every stage's settings and the device) and keyed by everything that determines its result (every
version and the resolved settings). engine.stored runs a Plan in the run store; the CLI, the
dashboard and sweeps all plan here, so an identical request is one run wherever it starts.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import torch

from . import attribute_probe, data, distill, embed, evaluate
from .density import check_kernel_variance, check_temperature
from .device import pick_device
from .errors import InvalidArgument

PRESETS = ("tiny", "quick", "paper")
MAX_EVAL_SEEDS = 100


@dataclass(frozen=True)
class Request:
    """One distillation or audit: which data, which methods, how hard to work (not where to copy it)."""

    dataset: str
    conflict_ratio: float
    methods: tuple[str, ...] | str = distill.METHODS
    algorithm: str = "dm"
    ipc: int = 10
    preset: str = "quick"
    embed_preset: str | None = None     # SupCon settings for the KDE weights; None: the preset's
    kernel_variance: float | None = None
    temperature: float = 1.0
    seed: int = 0
    eval_seeds: int | None = None       # audit: None = the evaluation preset's number of trainings
    baseline: bool = True               # audit: also evaluate IPC random real images per class ("random")
    track_every: int | None = None      # trajectory points every N iterations; None: ~10 per run, 0: off
    track_eval: bool = False            # also a short evaluation training at every point (costly)
    data_root: str | None = None
    device: str | None = None           # auto | cpu | cuda (never part of the key)
    # experiments and tests: field overrides of the stage presets
    distill_overrides: dict = field(default_factory=dict)
    eval_overrides: dict = field(default_factory=dict)
    probe_overrides: dict = field(default_factory=dict)
    embed_overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A validated request and the stage settings derived from it."""

    request: Request
    methods: tuple[str, ...]
    distill_cfg: distill.DistillConfig
    eval_cfg: evaluate.EvalPreset
    probe_cfg: attribute_probe.ProbePreset
    embed: embed.EmbedPreset
    seeds: list[int]
    device: torch.device                # resolved once here; every stage computes on it

    @property
    def uses_weights(self) -> bool:
        """Whether a method needs the KDE weights (and so the SupCon embeddings)."""
        return any(distill.REGISTRY[m].needs_weights for m in self.methods)


def positive_int(value, name: str, fix: str, upper: int | None = None) -> int:
    """An integer >= 1 (and <= upper) from an int or a string, else InvalidArgument with the fix."""
    if isinstance(value, bool):
        value = None
    try:
        as_int = int(str(value).strip()) if isinstance(value, (int, str)) else None
    except ValueError:
        as_int = None
    if as_int is None or as_int < 1:
        raise InvalidArgument(f"{name} {value!r} is not a positive integer", fix)
    if upper is not None and as_int > upper:
        raise InvalidArgument(f"{name} {as_int} is above the limit of {upper:,}", fix)
    return as_int


def _choose(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise InvalidArgument(f"unknown {what} {value!r}", f"use one of: {', '.join(choices)}")
    return value


def plan(req: Request) -> Plan:
    """Validate every argument (no data loaded, nothing written) and derive the stage settings."""
    dataset = data.get_spec(req.dataset).name  # a variant's canonical name: identical requests are one run
    _choose(req.preset, PRESETS, "preset")
    methods = distill.check_methods(req.methods)
    ipc = positive_int(req.ipc, "IPC", "give --ipc as a whole number such as 10")  # upper bound: config_for
    seed = data.check_seed(req.seed)
    kv = None if req.kernel_variance is None else check_kernel_variance(req.kernel_variance)
    device = pick_device(req.device)
    distill_cfg = distill.config_for(req.preset, req.algorithm, ipc, seed=seed, device=req.device or "auto",
                                     **req.distill_overrides)
    eval_cfg = evaluate.get_preset(req.preset, **req.eval_overrides)
    # the probe has the evaluation net's depth and norm unless told otherwise (as when it shared the preset)
    probe_cfg = attribute_probe.get_preset(req.preset, **{"depth": eval_cfg.depth, "norm": eval_cfg.norm,
                                                          **req.probe_overrides})
    n_seeds = eval_cfg.seeds if req.eval_seeds is None else positive_int(
        req.eval_seeds, "number of evaluation seeds", f"give --eval-seeds between 1 and {MAX_EVAL_SEEDS}",
        MAX_EVAL_SEEDS)
    embed_name = _choose(req.embed_preset or req.preset, PRESETS, "embedding preset")
    try:
        embed_cfg = embed.with_overrides(embed_name, **req.embed_overrides)
    except TypeError as exc:
        raise InvalidArgument(f"bad embedding setting: {exc}", "use fields of engine.embed.EmbedPreset") from None
    every = distill.resolve_every(distill_cfg.iterations, req.track_every)
    if req.track_eval not in (True, False):
        raise InvalidArgument(f"track_eval {req.track_eval!r} is not true or false", "pass --track-eval or leave it out")
    if req.track_eval and not every:
        raise InvalidArgument("--track-eval needs tracking, but --track-every is 0",
                              "drop --track-every 0, or drop --track-eval")
    norm = replace(req, dataset=dataset, conflict_ratio=data.check_ratio(req.conflict_ratio), seed=seed, methods=methods, ipc=ipc,
                   kernel_variance=kv, temperature=check_temperature(req.temperature), eval_seeds=n_seeds,
                   embed_preset=embed_name, track_every=every, track_eval=bool(req.track_eval))
    # evaluation seeds are offset from the run seed so different runs are not trained identically
    return Plan(norm, methods, distill_cfg, eval_cfg, probe_cfg, embed_cfg, evaluate.eval_seeds(n_seeds, seed * 1000),
                device)


def run_key(p: Plan, kind: str) -> dict:
    """Everything that determines a run's result: the request, the resolved settings, every version."""
    r = p.request
    key = {"dataset": r.dataset, "conflict_ratio": r.conflict_ratio, "seed": r.seed, "methods": list(p.methods),
           "data_root": os.path.abspath(r.data_root) if r.data_root else None,
           "distill": p.distill_cfg.key(), "versions": {"data": data.BUILD_VERSION, "distill": distill.DISTILL_VERSION}}
    if p.uses_weights:  # the KDE weights' knobs and the encoder they come from
        key.update(kernel_variance=r.kernel_variance, temperature=r.temperature, embed=asdict(p.embed))
        key["versions"]["embed"] = embed.EMBED_VERSION
    if kind == "audit" or r.track_every:  # the probe (and --track-eval's training) measure the trajectory
        # one "evaluate" block holds the evaluation and the probe settings, as before ProbePreset had its own
        # dataclass: stored runs keep their ids
        key.update(evaluate={**asdict(p.eval_cfg), **attribute_probe.key_fields(p.probe_cfg, p.eval_cfg)}, eval_seeds=p.seeds)
        key["versions"].update(evaluate=evaluate.EVAL_VERSION, probe=attribute_probe.PROBE_VERSION)
    if kind == "audit":
        key.update(baseline=r.baseline)
    key.update(track={"every": r.track_every, "eval": r.track_eval})
    return key


# --------------------------------------------------------------------------- sets made elsewhere (audit-set)

@dataclass(frozen=True)
class SetRequest:
    """Audit synthetic sets made elsewhere on one split: which split, which files, how to evaluate them."""

    dataset: str
    conflict_ratio: float
    sets: tuple[str, ...]               # PATH[=NAME] each (engine.set_files reads them)
    seed: int = 0
    normalization: str | None = None    # split (default) | unit | mean=...,std=...
    experiment: int | None = None       # DatasetCondensation result files: which experiment (default the last)
    soft_labels: str | None = None      # None: refused; "argmax"
    preset: str = "quick"
    eval_seeds: int | None = None
    baseline: bool = True
    data_root: str | None = None
    device: str | None = None
    eval_overrides: dict = field(default_factory=dict)
    probe_overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SetPlan:
    """A validated SetRequest: the evaluation and probe settings, the evaluation seeds, the device."""

    request: SetRequest
    eval_cfg: evaluate.EvalPreset
    probe_cfg: attribute_probe.ProbePreset
    seeds: list[int]
    device: torch.device


def plan_sets(req: SetRequest) -> SetPlan:
    """Validate a SetRequest (no file read, nothing written); the evaluation is the native audit's for the
    same preset and seed (same trainings, same seeds), so imported and native sets compare one to one."""
    dataset = data.get_spec(req.dataset).name
    _choose(req.preset, PRESETS, "preset")
    seed = data.check_seed(req.seed)
    if not req.sets:
        raise InvalidArgument("no set to audit", "pass --set PATH[=NAME] (one or more)")
    if req.soft_labels not in (None, "argmax"):
        raise InvalidArgument(f"unknown --soft-labels {req.soft_labels!r}", "use --soft-labels argmax or leave it out")
    if req.experiment is not None and (isinstance(req.experiment, bool) or not isinstance(req.experiment, int)):
        raise InvalidArgument(f"experiment {req.experiment!r} is not a whole number", "give --experiment 0, 1, ...")
    eval_cfg = evaluate.get_preset(req.preset, **req.eval_overrides)
    probe_cfg = attribute_probe.get_preset(req.preset, **{"depth": eval_cfg.depth, "norm": eval_cfg.norm,
                                                          **req.probe_overrides})
    n_seeds = eval_cfg.seeds if req.eval_seeds is None else positive_int(
        req.eval_seeds, "number of evaluation seeds", f"give --eval-seeds between 1 and {MAX_EVAL_SEEDS}",
        MAX_EVAL_SEEDS)
    device = pick_device(req.device)
    norm = replace(req, dataset=dataset, conflict_ratio=data.check_ratio(req.conflict_ratio), seed=seed,
                   sets=tuple(req.sets), eval_seeds=n_seeds, baseline=bool(req.baseline))
    return SetPlan(norm, eval_cfg, probe_cfg, evaluate.eval_seeds(n_seeds, seed * 1000), device)


def set_run_key(p: SetPlan, digests: dict[str, str]) -> dict:
    """Everything that determines an imported sets' audit: the split, each set's content, the evaluation."""
    r = p.request
    return {"dataset": r.dataset, "conflict_ratio": r.conflict_ratio, "seed": r.seed, "methods": list(digests),
            "sets": digests, "data_root": os.path.abspath(r.data_root) if r.data_root else None,
            "evaluate": {**asdict(p.eval_cfg), **attribute_probe.key_fields(p.probe_cfg, p.eval_cfg)},
            "eval_seeds": p.seeds, "baseline": r.baseline,
            "versions": {"data": data.BUILD_VERSION, "evaluate": evaluate.EVAL_VERSION,
                         "probe": attribute_probe.PROBE_VERSION}}
