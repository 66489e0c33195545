"""The one stored-run path: a request is validated once, keyed by everything that determines its
result (every version and the resolved stage settings), and run in the run store. The CLI, the
dashboard and sweeps all come through here, so an identical request is one run wherever it starts.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from . import attribute_probe, cache, data, distill, embed, evaluate, trajectory
from .density import check_kernel_variance, check_temperature
from .errors import InvalidArgument

PRESETS = ("tiny", "quick", "paper")
MAX_EVAL_SEEDS = 100
Progress = Callable[[dict], None]
ShouldStop = Callable[[], bool]


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
    embed_overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A validated request and the stage settings derived from it."""

    request: Request
    methods: tuple[str, ...]
    distill_cfg: distill.DistillConfig
    eval_cfg: evaluate.EvalPreset
    embed: embed.EmbedPreset
    seeds: list[int]

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
    if req.device is not None:
        from .device import pick_device
        pick_device(req.device)
    distill_cfg = distill.config_for(req.preset, req.algorithm, ipc, seed=seed, device=req.device or "auto",
                                     **req.distill_overrides)
    eval_cfg = evaluate.get_preset(req.preset, **req.eval_overrides)
    n_seeds = eval_cfg.seeds if req.eval_seeds is None else positive_int(
        req.eval_seeds, "number of evaluation seeds", f"give --eval-seeds between 1 and {MAX_EVAL_SEEDS}",
        MAX_EVAL_SEEDS)
    embed_name = _choose(req.embed_preset or req.preset, PRESETS, "embedding preset")
    try:
        embed_cfg = embed.with_overrides(embed_name, **req.embed_overrides)
    except TypeError as exc:
        raise InvalidArgument(f"bad embedding setting: {exc}", "use fields of engine.embed.EmbedPreset") from None
    every = trajectory.resolve_every(distill_cfg.iterations, req.track_every)
    if req.track_eval not in (True, False):
        raise InvalidArgument(f"track_eval {req.track_eval!r} is not true or false", "pass --track-eval or leave it out")
    if req.track_eval and not every:
        raise InvalidArgument("--track-eval needs tracking, but --track-every is 0",
                              "drop --track-every 0, or drop --track-eval")
    norm = replace(req, dataset=dataset, conflict_ratio=data.check_ratio(req.conflict_ratio), seed=seed, methods=methods, ipc=ipc,
                   kernel_variance=kv, temperature=check_temperature(req.temperature), eval_seeds=n_seeds,
                   embed_preset=embed_name, track_every=every, track_eval=bool(req.track_eval))
    # evaluation seeds are offset from the run seed so different runs are not trained identically
    return Plan(norm, methods, distill_cfg, eval_cfg, embed_cfg, evaluate.eval_seeds(n_seeds, seed * 1000))


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
        key.update(evaluate=asdict(p.eval_cfg), eval_seeds=p.seeds)
        key["versions"].update(evaluate=evaluate.EVAL_VERSION, probe=attribute_probe.PROBE_VERSION)
    if kind == "audit":
        key.update(baseline=r.baseline)
    key.update(track={"every": r.track_every, "eval": r.track_eval})
    return key


def load_train(p: Plan) -> data.BiasedSplit:
    """The training split, with IPC checked against its smallest class (still before anything is written)."""
    r = p.request
    train = data.load_split(r.dataset, r.conflict_ratio, "train", r.seed, r.data_root)
    distill.check_ipc(train, r.ipc)
    return train


def kde_weights(p: Plan, train: data.BiasedSplit, progress: Progress | None = None):
    """The KDE WeightResult the plan's methods need, or None."""
    if not p.uses_weights:
        return None
    from .density import training_weights
    r = p.request
    return training_weights(train, kernel_variance=r.kernel_variance, temperature=r.temperature,
                            preset=p.embed, seed=r.seed, device=r.device, progress=progress)


def make_tracker(p: Plan, train: data.BiasedSplit, probe: attribute_probe.Probe | None = None,
                 test: data.BiasedSplit | None = None, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> trajectory.Tracker | None:
    """The plan's trajectory tracker (None when tracking is off); trains or loads the attribute probe."""
    r = p.request
    if not r.track_every:
        return None
    if probe is None:
        probe = attribute_probe.train_probe(train, p.eval_cfg, seed=r.seed, device=r.device, progress=progress,
                                     should_stop=should_stop)
    if r.track_eval and test is None:
        test = data.load_split(r.dataset, r.conflict_ratio, "test", r.seed, r.data_root)
    return trajectory.Tracker(r.track_every, probe, train.aligned_attribute, attribute_probe.real_aligned_share(train),
                              test if r.track_eval else None, p.eval_cfg, p.seeds[0],
                              flip=not data.get_spec(r.dataset).digits, device=r.device)


def _stopper(should_stop: ShouldStop | None, run) -> ShouldStop:
    """Stop when the caller asks or someone cancels the stored run (python -m engine runs cancel)."""
    return lambda: bool(should_stop and should_stop()) or run.should_stop()


def distill_stored(req: Request | Plan, force: bool = False, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None, checkpoint_dir=None):
    """Distillation only, as a run of kind 'distill': (sets, run); an identical finished run is reused."""
    from .store import RunStore
    p = req if isinstance(req, Plan) else plan(req)
    train = load_train(p)
    with RunStore().run("distill", run_key(p, "distill"), force=force) as run:
        if run.reused and all((run.dir / m / distill.sets.SET_FILE).is_file() for m in p.methods):
            return synthetic_sets(run, p.methods), run
        wr = kde_weights(p, train, progress)
        stop = _stopper(should_stop, run)
        tracker = make_tracker(p, train, progress=progress, should_stop=stop)
        sets = distill.distill(train, p.distill_cfg, p.methods, weights=wr.weights if wr else None,
                               progress=progress, should_stop=stop, tracker=tracker,
                               checkpoint_dir=checkpoint_dir or run.checkpoint_dir)
        distill.save_synthetic(sets, run.dir)
        metrics = {"methods": {m: {"final_loss": s.final_loss, "seconds": s.seconds} for m, s in sets.items()},
                   "iterations": p.distill_cfg.iterations}
        if tracker is not None:
            metrics.update(real_aligned_share=tracker.real_aligned_share,
                           trajectory={m: s.trajectory for m, s in sets.items()})
        run.finish(metrics)
        return sets, run


def audit_stored(req: Request | Plan, force: bool = False, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> tuple[dict, object]:
    """The whole audit as a run of kind 'audit': (results, run); an identical finished run is reused."""
    from . import audit
    from .store import RunStore
    p = req if isinstance(req, Plan) else plan(req)
    train = load_train(p)  # the data and IPC are checked before the store is touched
    with RunStore().run("audit", run_key(p, "audit"), force=force) as run:
        if run.reused and (run.dir / "results.json").is_file():
            return cache.read_json(run.dir / "results.json"), run
        results = audit.run_audit(p, run.dir, progress=progress, should_stop=_stopper(should_stop, run), train=train)
        run.finish(results)
        return results, run


def synthetic_sets(run, methods) -> dict[str, distill.SyntheticSet]:
    """The stored sets of a run's methods (those present)."""
    return {m: distill.load_synthetic(run.dir / m) for m in methods if (run.dir / m / distill.sets.SET_FILE).is_file()}

