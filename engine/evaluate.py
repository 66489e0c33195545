"""Train-on-synthetic evaluation and group fairness metrics (the bias-attribute probe: attribute_probe.py).

Protocol (docs/EVALUATION.md, docs/REFERENCES.md "Evaluation protocol"): a fresh ConvNet is trained
on a (synthetic or baseline) image set with SGD and DSA augmentation, several seeds, then
tested on the balanced test split. Every metric is in percent. A (class, attribute) cell with
no test sample is *missing* (None) and excluded from every aggregate, never counted as 0.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from . import cache, eval_train, presets
from .data import BiasedSplit, check_seed
from .device import autocast, pick_device
from .errors import DDAuditError, InvalidArgument
from .images import to_float
from .nets import ConvNet
from .progress import Progress, ShouldStop, report
from .results import METRICS

log = logging.getLogger("ddaudit")

EVAL_VERSION = 3   # bump when training on a set changes (2: fused / batched training modes chosen by size; 3: the CPU
#                   fuses only where the measured saving beats a compile, and never stacks unless asked)
# One evaluation training's spread (std, points) of conflicting accuracy when a run has no spread of its own
# (1 training per set): measured over 3 trainings per set, quick preset, colored-digits (docs/EVALUATION.md).
# The report's noise verdict and reproduce's agreement rule use it.
EVAL_NOISE = 1.1




# --------------------------------------------------------------------------- metrics

def _as_np(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise InvalidArgument(f"{name} must be one-dimensional, got shape {arr.shape}", "pass one value per sample")
    return arr


def _pct(hits: np.ndarray) -> float | None:
    return None if hits.size == 0 else float(hits.mean() * 100.0)


def group_metrics(pred, targets, attributes, aligned, num_classes: int, num_attributes: int) -> dict:
    """Overall, aligned, conflicting, per-(class, attribute), worst-group accuracy and DEO, in percent."""
    pred, targets = _as_np(pred, "pred"), _as_np(targets, "targets")
    attributes, aligned = _as_np(attributes, "attributes"), _as_np(aligned, "aligned").astype(bool)
    n = len(targets)
    if n == 0 or not (len(pred) == len(attributes) == len(aligned) == n):
        raise InvalidArgument(f"metric inputs have lengths {len(pred)}, {n}, {len(attributes)}, {len(aligned)}",
                              "pass the same non-zero number of predictions, targets, attributes and flags")
    if targets.min() < 0 or targets.max() >= num_classes or attributes.min() < 0 or attributes.max() >= num_attributes:
        raise InvalidArgument("a target or attribute is outside [0, num_classes) / [0, num_attributes)",
                              "check num_classes and num_attributes")
    hit = pred == targets
    cells: list[list[float | None]] = [[None] * num_attributes for _ in range(num_classes)]
    counts = np.zeros((num_classes, num_attributes), dtype=np.int64)
    np.add.at(counts, (targets, attributes), 1)
    correct = np.zeros_like(counts)
    np.add.at(correct, (targets, attributes), hit.astype(np.int64))
    for c, a in zip(*np.nonzero(counts)):
        cells[c][a] = float(correct[c, a] / counts[c, a] * 100.0)
    present = [v for row in cells for v in row if v is not None]
    # DEO(y) needs two non-empty cells in the row: with one cell the gap is undefined, not 0
    deo = []
    for row in cells:
        vals = [v for v in row if v is not None]
        deo.append(max(vals) - min(vals) if len(vals) >= 2 else None)
    defined = [d for d in deo if d is not None]
    return {
        "accuracy": _pct(hit),
        "aligned_accuracy": _pct(hit[aligned]),
        "conflicting_accuracy": _pct(hit[~aligned]),
        "group_accuracy": cells,
        "group_counts": counts.tolist(),
        "worst_group_accuracy": min(present),
        "deo_per_class": deo,
        "deo_m": max(defined) if defined else None,
        "deo_a": float(np.mean(defined)) if defined else None,
    }


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population std (ddof=0, as the DC/DM code) over the defined values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean and std over evaluation seeds of every scalar metric; cell-wise mean group matrix."""
    out: dict = {}
    for key in METRICS:
        out[key], out[f"{key}_std"] = _mean_std([r[key] for r in runs])
    rows, cols = len(runs[0]["group_accuracy"]), len(runs[0]["group_accuracy"][0])
    out["group_accuracy"] = [[_mean_std([r["group_accuracy"][c][a] for r in runs])[0] for a in range(cols)]
                             for c in range(rows)]
    out["per_seed"] = [{k: r[k] for k in METRICS} for r in runs]
    return out


# --------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class EvalPreset:
    """How a fresh ConvNet is trained on a set before testing it."""

    name: str
    epochs: int            # lr x lr_decay at half of them
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_decay: float
    dsa: bool              # DSA augmentation (color_crop_cutout_flip_scale_rotate) while training
    seeds: int             # evaluation trainings per set
    width: int
    depth: int
    norm: str
    full_set_epochs: int   # epochs for the whole-training-set baseline (0: no such baseline)


PRESETS: dict[str, EvalPreset] = {
    # docs/REFERENCES.md protocol. The whole-set baseline (50-60k images) with 1,000 epochs would cost
    # ~400x a synthetic evaluation; 30 epochs is where ConvNet-3 has converged on such sets (our choice).
    "paper": EvalPreset("paper", epochs=1000, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                        lr_decay=0.1, dsa=True, seeds=5, width=128, depth=3, norm="instancenorm",
                        full_set_epochs=30),
    # CPU: 300 epochs of an IPC-10 set are 300 SGD steps; width 32 keeps one training to ~20 s
    # on 2 cores (the distillation quick preset's width, so the evaluated net matches phi).
    "quick": EvalPreset("quick", epochs=300, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                        lr_decay=0.1, dsa=True, seeds=3, width=32, depth=3, norm="instancenorm",
                        full_set_epochs=0),
}
# tiny: seconds, for tests and the dashboard's DDAUDIT_TINY mode (plumbing, not results)
PRESETS["tiny"] = replace(PRESETS["quick"], name="tiny", epochs=2, seeds=1, width=8, batch_size=64)


def get_preset(preset: str | EvalPreset, **overrides) -> EvalPreset:
    """A preset by name (or as given), with field overrides checked against its fields."""
    out = presets.choose(PRESETS, preset, "evaluation", ("epochs", "batch_size", "seeds", "width", "depth"), **overrides)
    if not isinstance(out.full_set_epochs, int) or out.full_set_epochs < 0:
        raise InvalidArgument(f"full_set_epochs={out.full_set_epochs!r} must be >= 0", "give 0 to skip the baseline")
    for field in ("lr", "momentum", "weight_decay", "lr_decay"):
        v = getattr(out, field)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InvalidArgument(f"evaluation setting {field}={v!r} must be a finite number >= 0", "fix the value")
    return out


# --------------------------------------------------------------------------- training

def _to_input(images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images -> floats standardised with mean/std (or [0, 1]); float images are used as they are."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InvalidArgument("images must be a tensor N x C x H x W", "pass a batch of images")
    return to_float(images, mean, std) if images.dtype == torch.uint8 else images.float()


def train_on(images: torch.Tensor, labels: torch.Tensor, cfg: EvalPreset, seed: int, device=None, *,
             num_classes: int | None = None, flip: bool = True, epochs: int | None = None, mode: str | None = None,
             progress: Progress | None = None, should_stop: ShouldStop | None = None, stage: str = "evaluate") -> ConvNet:
    """Train a fresh ConvNet-D on (images, labels) with the preset's SGD schedule; returns it in eval mode.
    `mode`: eval_train's eager | fused | batched, None = eval_train.choose_mode."""
    device = pick_device(device) if not isinstance(device, torch.device) else device
    job = _job(images, labels, seed)
    num_classes = num_classes or int(job.labels.max()) + 1
    steps = (cfg.epochs if epochs is None else epochs) * math.ceil(len(job.labels) / cfg.batch_size)
    mode = mode or eval_train.choose_mode(device, len(job.labels), 1, steps, cfg.norm)
    nets, _ = eval_train.train_jobs([job], cfg, device, num_classes=num_classes, flip=flip, epochs=epochs, mode=mode,
                                    progress=progress, should_stop=should_stop, stage=stage)
    return nets[0]


def _job(images: torch.Tensor, labels: torch.Tensor, seed: int) -> eval_train.Job:
    x, y = _to_input(images), labels.long().cpu()
    if len(x) != len(y) or len(y) == 0:
        raise InvalidArgument(f"{len(x)} images but {len(y)} labels", "pass one label per image (and >= 1)")
    return eval_train.Job(x, y, check_seed(seed))


def warm_up(images: int = 50, size: int = 32, channels: int = 3, classes: int = 10) -> float:
    """Compile the fused step of a quick evaluation of `images` images (the Distill form's default: IPC 5 of 10
    classes) into DDAUDIT_HOME's kernel cache (`make install`), so a first fused evaluation (an audit of several
    methods, eval_train.compile_pays) only loads it; seconds."""
    t = time.perf_counter()
    x = torch.rand(images, channels, size, size, generator=torch.Generator().manual_seed(0))
    eval_train.train_jobs([eval_train.Job(x, torch.arange(images) % classes, 0)], get_preset("quick"),
                          torch.device("cpu"), num_classes=classes, flip=False, epochs=1, mode="fused")
    return time.perf_counter() - t


@torch.no_grad()
def predict(net: ConvNet, images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
            device=None, batch_size: int = 1024) -> torch.Tensor:
    """Arg-max predictions for uint8 (standardised with mean/std on the fly) or float images (CPU int64)."""
    device = next(net.parameters()).device if device is None else device
    out = []
    for start in range(0, len(images), batch_size):
        xb = _to_input(images[start:start + batch_size], mean, std).to(device)
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(net(xb).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def evaluate_net(net: ConvNet, test: BiasedSplit, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> dict:
    """group_metrics of a trained net on a test split (its images standardised like the training set)."""
    pred = predict(net, test.images, mean, std)
    return group_metrics(pred, test.targets, test.attributes, test.aligned, test.num_classes, test.num_attributes)


def eval_seeds(n: int, base_seed: int = 0) -> list[int]:
    """The n evaluation seeds of a run: base_seed, base_seed + 1, ..."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgument(f"number of evaluation seeds {n!r} must be a positive integer", "give e.g. 3")
    return [base_seed + i for i in range(n)]


def evaluate_synthetic(images: torch.Tensor, labels: torch.Tensor, test: BiasedSplit,
                       preset: str | EvalPreset = "quick", seeds: int | Sequence[int] | None = None, *,
                       mean: torch.Tensor | None = None, std: torch.Tensor | None = None, device=None,
                       flip: bool = True, epochs: int | None = None, progress: Progress | None = None,
                       should_stop: ShouldStop | None = None, stage: str = "evaluate", use_cache: bool = True,
                       mode: str | None = None) -> dict:
    """Train one net per seed on the set, test each; mean/std of every metric and the mean group matrix.

    `images` are floats in the space the nets see (a SyntheticSet's standardised images);
    mean/std (the set's) standardise the uint8 test images into the same space. Each training's result is
    cached on disk by the content of everything that determines it (the same set evaluated again, e.g. the
    random baseline of another audit of the same split, is read back: `cached` is then True).
    """
    return evaluate_many({stage: (images, labels)}, test, preset, seeds, mean=mean, std=std, device=device,
                         flip=flip, epochs=epochs, progress=progress, should_stop=should_stop,
                         stages={stage: stage}, use_cache=use_cache, mode=mode)[stage]


def evaluate_many(sets: dict[str, tuple[torch.Tensor, torch.Tensor]], test: BiasedSplit,
                  preset: str | EvalPreset = "quick", seeds: int | Sequence[int] | None = None, *,
                  mean: torch.Tensor | None = None, std: torch.Tensor | None = None, device=None, flip: bool = True,
                  epochs: int | None = None, progress: Progress | None = None, should_stop: ShouldStop | None = None,
                  stages: dict[str, str] | None = None, use_cache: bool = True, mode: str | None = None,
                  on_set: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """evaluate_synthetic of every set at once: all sets x seeds are the trainings of one evaluation, so
    trainings of one shape can run as one batched model (eval_train). One cache entry per (set, seed): a
    training read back is not trained again. Returns {name: result} in the sets' order; `on_set(name,
    result)` is called as each set's trainings are done; `stages` names each set's progress stage
    (default "evaluate NAME"; batched trainings report as "evaluate N sets")."""
    cfg = get_preset(preset)
    seed_list = eval_seeds(cfg.seeds if seeds is None else seeds) if seeds is None or isinstance(seeds, int) \
        else [check_seed(s) for s in seeds]
    if not seed_list:
        raise InvalidArgument("no evaluation seeds given", "give at least one seed")
    if not sets:
        return {}
    device = pick_device(device) if not isinstance(device, torch.device) else device
    stages = {name: (stages or {}).get(name, f"evaluate {name}") for name in sets}
    jobs = {(name, seed): _job(x, y, seed) for name, (x, y) in sets.items() for seed in seed_list}
    n_epochs = cfg.epochs if epochs is None else epochs
    shapes: dict[tuple, list] = {}
    for key, job in jobs.items():
        shapes.setdefault(tuple(job.images.shape), []).append(key)
    runs: dict[tuple, dict] = {}
    paths: dict[tuple, object] = {}
    same: dict[tuple, tuple] = {}
    seconds = {name: 0.0 for name in sets}
    for shape, keys in shapes.items():
        steps = n_epochs * math.ceil(shape[0] / cfg.batch_size)
        want = mode or eval_train.choose_mode(device, shape[0], len(keys), steps, cfg.norm)
        tag = eval_train.tag(eval_train.resolve_mode(want, device, cfg.norm), device)
        first: dict[object, tuple] = {}  # an identical training asked twice (two equal sets) is trained once
        for key in keys:
            name, seed = key
            paths[key] = _eval_path(jobs[key], test, cfg, seed, mean, std, device, flip, epochs, tag) \
                if use_cache else None
            hit = _read_eval(paths[key])
            if hit is not None:
                runs[key] = hit
            elif paths[key] is not None and paths[key] in first:
                same[key] = first[paths[key]]
            elif paths[key] is not None:
                first[paths[key]] = key
        todo = [k for k in keys if k not in runs and k not in same]
        for name in dict.fromkeys(n for n, _ in keys):
            if all((name, s) in runs for s in seed_list):
                report(progress, stages[name], 1, 1, cached=True)
        if not todo:
            continue
        together = eval_train.resolve_mode(want, device, cfg.norm) == "batched"
        groups = [todo] if together else [[k] for k in todo]
        for group in groups:
            names = list(dict.fromkeys(n for n, _ in group))
            stage = stages[names[0]] if len(names) == 1 else f"evaluate {len(names)} sets"
            sub = progress
            if len(group) == 1 and progress is not None:  # one bar over the set's seeds
                sub = _seed_bar(progress, stage, seed_list.index(group[0][1]), len(seed_list))
            t = time.time()
            nets, ran = eval_train.train_jobs([jobs[k] for k in group], cfg, device, num_classes=test.num_classes,
                                              flip=flip, epochs=epochs, mode=want, progress=sub,
                                              should_stop=should_stop, stage=stage)
            for key, net in zip(group, nets):
                runs[key] = {**evaluate_net(net, test, mean, std), "mode": ran}
                if paths[key] is not None:
                    if ran != tag:  # compiling failed mid-way: the result belongs to the mode that ran
                        paths[key] = _eval_path(jobs[key], test, cfg, key[1], mean, std, device, flip, epochs, ran)
                    cache.atomic_write_json(paths[key], runs[key])
                seconds[key[0]] += (time.time() - t) / len(group)
    for key, twin in same.items():  # read back, as a later evaluation of the same set would be
        runs[key] = {**runs[twin], "_read": True}
    out: dict[str, dict] = {}
    for name in sets:
        per = [runs[(name, s)] for s in seed_list]
        res = aggregate(per)
        res["seeds"] = seed_list
        res["cached"] = all(_was_read(r) for r in per)
        res["seconds"] = seconds[name]
        res["mode"] = sorted({r.get("mode", "") for r in per} - {""}) or None
        out[name] = res
        if on_set is not None:
            on_set(name, res)
    return out


def _seed_bar(progress: Progress, stage: str, index: int, n: int) -> Progress:
    return lambda ev: progress(ev.within(stage, index * ev.total, n * ev.total))


def _was_read(run: dict) -> bool:
    return bool(run.get("_read"))


def _eval_path(job: eval_train.Job, test: BiasedSplit, cfg: EvalPreset, seed: int, mean, std, device: torch.device,
               flip: bool, epochs: int | None, mode: str):
    """Cache file of one training's result: keyed by the bytes of the set, the test split and the
    standardisation, the preset, the seed, the training mode (eval_train: the modes agree within float
    rounding), device and (CPU) thread count, which changes float sums, and the library versions."""
    tensors = [job.images.detach().cpu(), job.labels.cpu(), test.images, test.targets, test.attributes,
               test.aligned] + [t.detach().float().cpu() for t in (mean, std) if t is not None]
    key = cache.cache_key(version=EVAL_VERSION, cfg=asdict(cfg), seed=seed, flip=flip, epochs=epochs, mode=mode,
                          classes=test.num_classes, attributes=test.num_attributes, device=device.type,
                          threads=torch.get_num_threads() if device.type == "cpu" else None,
                          torch=torch.__version__, data=cache.tensor_digest(*tensors))
    return cache.cache_dir("evaluations") / f"{key}.json"


def _read_eval(path) -> dict | None:
    """A cached evaluation, or None (absent, or unreadable: then it is recomputed and rewritten)."""
    if path is None or not path.is_file():
        return None
    try:
        hit = cache.read_json(path)
    except (OSError, DDAuditError):
        return None
    ok = isinstance(hit, dict) and all(k in hit for k in METRICS) and "group_accuracy" in hit
    return {**hit, "_read": True} if ok else None


# --------------------------------------------------------------------------- baselines

def random_subset(train: BiasedSplit, ipc: int, seed: int, mean: torch.Tensor | None = None,
                  std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K random real training images per class (seeded), as the `random` baseline (standardised if mean/std)."""
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise InvalidArgument(f"images per class {ipc!r} must be a positive integer", "give e.g. 10")
    gen = torch.Generator().manual_seed(check_seed(seed) + 7919)  # distinct stream from distillation's init
    idx = []
    for c in range(train.num_classes):
        members = (train.targets == c).nonzero().flatten()
        if len(members) < ipc:
            raise InvalidArgument(f"class {train.class_names[c]} has {len(members)} images, fewer than IPC {ipc}",
                                  f"use --ipc {len(members)} or less")
        idx.append(members[torch.randperm(len(members), generator=gen)[:ipc]])
    idx = torch.cat(idx)
    return to_float(train.images[idx], mean, std), train.targets[idx].clone()
