"""End-to-end audit: data -> KDE weights (when asked) -> distillation -> evaluation -> probe audit.

`run_audit(AuditConfig(...))` validates everything before writing anything, then writes
OUT/<method>/synthetic.safetensors + grid.png (engine.distill.save_synthetic), OUT/checkpoints/<key>
(a re-run with the same settings resumes or reuses the distillation) and OUT/results.json.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from . import cache, data, distill, evaluate
from .errors import InvalidArgument
from .images import to_float

log = logging.getLogger("ddaudit")

AUDIT_PRESETS = ("quick", "paper")
METHOD_KEYS = ("accuracy", "accuracy_std", "aligned_accuracy", "conflicting_accuracy", "worst_group_accuracy",
               "deo_m", "deo_a", "synthetic_aligned_share", "group_accuracy")


@dataclass(frozen=True)
class AuditConfig:
    """One audit: which data, which methods, how hard to work, where to write."""

    dataset: str
    conflict_ratio: float
    out: str | os.PathLike
    methods: tuple[str, ...] | str = ("vanilla", "kde", "fairdd")
    algorithm: str = "dm"
    ipc: int = 10
    preset: str = "quick"
    kernel_variance: float | None = None
    temperature: float = 1.0
    seed: int = 0
    eval_seeds: int | None = None       # None: the evaluation preset's number of seeds
    baseline: bool = True               # also evaluate IPC random real images per class ("random")
    data_root: str | None = None
    device: str | None = None           # auto | cpu | cuda
    # tests and experiments: field overrides of the stage presets
    distill_overrides: dict = field(default_factory=dict)
    eval_overrides: dict = field(default_factory=dict)
    embed_overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """A validated config and the stage settings derived from it."""

    cfg: AuditConfig
    out: Path
    methods: tuple[str, ...]
    distill_cfg: distill.DistillConfig
    eval_cfg: evaluate.EvalPreset
    embed_preset: object
    seeds: list[int]


def positive_int(value, name: str, fix: str) -> int:
    """An integer >= 1 from an int or a string, else InvalidArgument with the fix."""
    if isinstance(value, bool):
        value = None
    try:
        as_int = int(value) if isinstance(value, (int, str)) else None
    except ValueError:
        as_int = None
    if as_int is None or as_int < 1:
        raise InvalidArgument(f"{name} {value!r} is not a positive integer", fix)
    return as_int


def _check_out(out) -> Path:
    """OUT must be (or become) a writable folder; checked before anything is written."""
    if out is None or str(out).strip() == "":
        raise InvalidArgument("no output folder given", "pass --out DIR")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidArgument(f"output {path} exists and is not a folder", "pass a folder path to --out")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidArgument(f"cannot write under {probe}", "pass an --out folder you can write to")
    return path


def plan(cfg: AuditConfig) -> _Plan:
    """Validate every argument (no data loaded, nothing written) and derive the stage settings."""
    data.get_spec(cfg.dataset)
    ratio = data.check_ratio(cfg.conflict_ratio)
    seed = data.check_seed(cfg.seed)
    methods = distill.check_methods(cfg.methods)
    if cfg.preset not in AUDIT_PRESETS:
        raise InvalidArgument(f"unknown preset {cfg.preset!r}", f"use one of: {', '.join(AUDIT_PRESETS)}")
    ipc = positive_int(cfg.ipc, "IPC", "give --ipc as a whole number such as 10")
    kv = cfg.kernel_variance
    if kv is not None:
        from .density import check_kernel_variance
        kv = check_kernel_variance(kv)
    from .density import check_temperature
    temperature = check_temperature(cfg.temperature)
    if cfg.device is not None:
        from .device import pick_device
        pick_device(cfg.device)
    distill_cfg = distill.config_for(cfg.preset, cfg.algorithm, ipc, seed=seed, device=cfg.device or "auto",
                                     **cfg.distill_overrides)
    eval_cfg = evaluate.get_preset(cfg.preset, **cfg.eval_overrides)
    n_seeds = eval_cfg.seeds if cfg.eval_seeds is None else positive_int(
        cfg.eval_seeds, "number of evaluation seeds", "give --eval-seeds as a whole number such as 3")
    embed_preset = cfg.preset
    if cfg.embed_overrides:
        from . import embed
        try:
            embed_preset = embed.with_overrides(cfg.preset, **cfg.embed_overrides)
        except TypeError as exc:
            raise InvalidArgument(f"bad embedding setting: {exc}", "use fields of engine.embed.EmbedPreset") from None
    out = _check_out(cfg.out)
    norm = replace(cfg, conflict_ratio=ratio, seed=seed, methods=methods, ipc=ipc, kernel_variance=kv,
                   temperature=temperature, eval_seeds=n_seeds)
    # evaluation seeds are offset from the run seed so different runs are not trained identically
    return _Plan(norm, out, methods, distill_cfg, eval_cfg, embed_preset, evaluate.eval_seeds(n_seeds, seed * 1000))


def run_audit(cfg: AuditConfig, progress: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict:
    """Run the whole audit and return (and write to OUT/results.json) its results."""
    t0 = time.time()
    p = plan(cfg)
    c = p.cfg
    say = progress or (lambda ev: None)
    timings: dict[str, float] = {}

    def stage(name: str) -> Callable[[], None]:
        start = time.time()
        say({"stage": name, "step": 0, "total": 1})
        return lambda: timings.__setitem__(name, round(time.time() - start, 2))

    done = stage("data")
    train, test = data.load_pair(c.dataset, c.conflict_ratio, c.seed, c.data_root)
    distill.check_ipc(train, c.ipc)  # still before anything is written
    done()
    flip = not data.get_spec(c.dataset).digits
    p.out.mkdir(parents=True, exist_ok=True)

    weights, weight_info = None, None
    if "kde" in p.methods:
        from .density import training_weights
        done = stage("weights")
        wr = training_weights(train, kernel_variance=c.kernel_variance, temperature=c.temperature,
                              preset=p.embed_preset, seed=c.seed, device=c.device, progress=progress)
        weights = wr.weights
        weight_info = {"kernel_variance": wr.kernel_variance, "temperature": wr.temperature,
                       **{k: v for k, v in wr.diagnostics.items() if k != "per_class"}}
        done()

    done = stage("distill")
    # one checkpoint folder per setting: re-running into the same OUT with other settings starts afresh
    ckpt_key = cache.cache_key(dataset=c.dataset, ratio=c.conflict_ratio, methods=p.methods,
                               distill=p.distill_cfg.key(), kv=c.kernel_variance, t=c.temperature,
                               embed=str(p.embed_preset))
    sets = distill.distill(train, p.distill_cfg, p.methods, weights=weights, progress=progress,
                           should_stop=should_stop, checkpoint_dir=p.out / "checkpoints" / ckpt_key)
    distill.save_synthetic(sets, p.out)
    done()
    any_set = next(iter(sets.values()))
    mean, std = any_set.mean, any_set.std

    # every set evaluated in the same space: the distillation's standardisation
    candidates: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {
        m: (s.images, s.labels, s.unit()) for m, s in sets.items()}
    if c.baseline:
        rx, ry = evaluate.random_subset(train, c.ipc, c.seed, mean, std)
        candidates["random"] = (rx, ry, evaluate.random_subset(train, c.ipc, c.seed)[0])

    done = stage("probe")
    probe = evaluate.train_probe(train, p.eval_cfg, seed=c.seed, device=c.device, progress=progress,
                                 should_stop=should_stop)
    probe_acc = evaluate.probe_accuracy(probe, test)
    done()

    results: dict[str, dict] = {}
    for name, (x, y, x_unit) in candidates.items():
        done = stage(f"evaluate {name}")
        ev = evaluate.evaluate_synthetic(x, y, test, p.eval_cfg, p.seeds, mean=mean, std=std, device=c.device,
                                         flip=flip, progress=progress, should_stop=should_stop,
                                         stage=f"evaluate {name}")
        results[name] = _method_entry(ev, evaluate.synthetic_aligned_share(probe, x_unit, y, train.aligned_attribute))
        if name in sets:
            results[name]["final_loss"] = sets[name].final_loss
        done()

    if p.eval_cfg.full_set_epochs > 0:  # paper: the whole biased training set, same evaluation
        done = stage("evaluate full")
        full_x = to_float(train.images, mean, std)
        ev = evaluate.evaluate_synthetic(full_x, train.targets, test, p.eval_cfg, p.seeds, mean=mean, std=std,
                                         device=c.device, flip=flip, epochs=p.eval_cfg.full_set_epochs,
                                         progress=progress, should_stop=should_stop, stage="evaluate full")
        results["full"] = _method_entry(ev, evaluate.synthetic_aligned_share(
            probe, train.images, train.targets, train.aligned_attribute))
        del full_x
        done()

    out = {
        "dataset": c.dataset, "conflict_ratio": c.conflict_ratio, "ipc": c.ipc, "preset": c.preset,
        "algorithm": c.algorithm, "seed": c.seed, "eval_seeds": p.seeds,
        "real_aligned_share": evaluate.real_aligned_share(train),
        "probe_accuracy": probe_acc,
        "methods": results,
        "weights": weight_info,
        "distill_seconds": any_set.seconds,
        "timings": timings,
        "seconds": round(time.time() - t0, 2),
    }
    cache.atomic_write_json(p.out / "results.json", out)
    say({"stage": "done", "step": 1, "total": 1})
    return out


def _method_entry(ev: dict, share: float) -> dict:
    """The per-method block of results.json: the issue's keys, then every std and the eval time."""
    entry = {k: ev[k] for k in METHOD_KEYS if k in ev}
    entry["synthetic_aligned_share"] = share
    for k in evaluate.SCALAR_METRICS:
        entry[f"{k}_std"] = ev[f"{k}_std"]
    entry["eval_seconds"] = round(ev["seconds"], 2)
    return entry


def table(result: dict) -> str:
    """A plain-text table of the methods (the CLI's non-JSON output)."""
    cols = ("accuracy", "aligned_accuracy", "conflicting_accuracy", "worst_group_accuracy", "deo_m", "deo_a",
            "synthetic_aligned_share")
    heads = ("acc", "aligned", "conflict", "worst", "DEO_M", "DEO_A", "aligned share")
    order = [m for m in ("random", "vanilla", "kde", "fairdd", "full") if m in result["methods"]]

    def fmt(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    lines = [f"{result['dataset']}  conflict ratio {result['conflict_ratio']}  IPC {result['ipc']}  "
             f"preset {result['preset']}  ({result['seconds']:.0f} s)",
             f"{'method':<9}" + "".join(f"{h:>14}" for h in heads)]
    for m in order:
        r = result["methods"][m]
        acc = f"{fmt(r['accuracy'])}+-{fmt(r['accuracy_std'])}"
        lines.append(f"{m:<9}{acc:>14}" + "".join(f"{fmt(r[k]):>14}" for k in cols[1:]))
    lines.append(f"real aligned share {result['real_aligned_share']:.1f}%   probe accuracy {result['probe_accuracy']:.1f}%")
    return "\n".join(lines)


def markdown_table(result: dict, published: dict[str, str] | None = None) -> str:
    """The methods as a Markdown table (docs/RESULTS.md), with an optional published column."""
    order = [m for m in ("random", "vanilla", "kde", "fairdd", "full") if m in result["methods"]]

    def fmt(v, std=None) -> str:
        if v is None:
            return "-"
        return f"{v:.1f} ± {std:.1f}" if std is not None else f"{v:.1f}"

    head = "| method | accuracy | aligned | conflicting | worst group | DEO_M | DEO_A | synthetic aligned share |"
    if published is not None:
        head += " published (Acc / DEO_M / DEO_A) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in order:
        r = result["methods"][m]
        row = (f"| {m} | {fmt(r['accuracy'], r['accuracy_std'])} | {fmt(r['aligned_accuracy'])} | "
               f"{fmt(r['conflicting_accuracy'], r.get('conflicting_accuracy_std'))} | "
               f"{fmt(r['worst_group_accuracy'])} | {fmt(r['deo_m'])} | {fmt(r['deo_a'])} | "
               f"{fmt(r['synthetic_aligned_share'])} |")
        if published is not None:
            row += f" {published.get(m, '-')} |"
        lines.append(row)
    return "\n".join(lines)


def check_ipc_fits(cfg: AuditConfig) -> None:
    """IPC must not exceed the smallest class (loads the cached split; writes nothing)."""
    p = plan(cfg)
    distill.check_ipc(data.load_split(p.cfg.dataset, p.cfg.conflict_ratio, "train", p.cfg.seed, p.cfg.data_root),
                      p.cfg.ipc)


def store_key(cfg: AuditConfig) -> dict:
    """Everything that determines an audit's results (not where it is written or on which device)."""
    p = plan(cfg)
    key = {k: v for k, v in asdict(p.cfg).items() if k not in ("out", "device")}
    from . import embed
    # the resolved stage settings, not only the request: a changed preset must not reuse old results
    key["resolved"] = {"distill": p.distill_cfg.key(), "evaluate": asdict(p.eval_cfg),
                       "embed": asdict(embed.get_preset(p.embed_preset))}
    key["versions"] = {"data": data.BUILD_VERSION, "distill": distill.DISTILL_VERSION,
                       "evaluate": getattr(evaluate, "EVAL_VERSION", 0), "embed": embed.EMBED_VERSION}
    return key


def run_stored(cfg: AuditConfig, force: bool = False, progress: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> tuple[dict, "object"]:
    """run_audit as a run in the run store: an identical finished request is reused unless force.

    Validation (including IPC against the data) happens before the store is touched, so bad input
    writes nothing. Returns (results, run); the run's folder holds results.json, the sets and grids.
    """
    from .store import RunStore
    check_ipc_fits(cfg)
    key = store_key(cfg)
    with RunStore().run("audit", key, force=force) as run:
        if run.reused and (run.dir / "results.json").is_file():
            return cache.read_json(run.dir / "results.json"), run
        stop = should_stop or (lambda: False)
        results = run_audit(replace(cfg, out=str(run.dir)), progress=progress,
                            should_stop=lambda: stop() or run.should_stop())
        run.finish(results)
        return results, run
