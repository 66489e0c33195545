"""The side-by-side distillation loop: iterate, checkpoint, track, report progress, cancel. What an iteration
does is the backbone's (engine/distill/backbones); every method of a run shares its random network, real batch
and DSA parameters, and keeps its own synthetic set and optimiser. docs/DISTILL.md: losses, FairDD pitfalls,
RNG / checkpoint design.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from .. import cache
from ..augment import DSA
from ..data import REGISTRY as DATASETS, BiasedSplit
from ..device import pick_device
from ..errors import Cancelled, InvalidArgument
from ..images import to_uint8, to_unit
from ..nets import ConvNet, init_network, memory_format
from ..progress import Event, Progress, ShouldStop
from . import backbones
from .backbones import Backbone
from .checkpoint import Checkpoint, State
from .config import DISTILL_VERSION, DistillConfig
from .methods import REGISTRY, Context, check_methods
from .sampler import Sampler
from .sets import SyntheticSet
from .toolkit import Gens, Run
from .tracking import Tracker, track_points


# --------------------------------------------------------------------------- setup, checkpoint, the run

def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1], in chunks (a float copy of 60k images is 0.7 GB)."""
    c = images.shape[1]
    s1, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].double().div_(255.0).transpose(0, 1).reshape(c, -1)
        s1 += x.sum(1)
        s2 += (x * x).sum(1)
        n += x.shape[1]
    mean = s1 / n
    var = (s2 / n - mean ** 2).clamp_min(0) * n / max(n - 1, 1)
    return mean.float(), var.sqrt().float().clamp_min(1e-3)


def check_ipc(train: BiasedSplit, ipc: int, cfg: DistillConfig | None = None) -> None:
    """IPC must not exceed the smallest class of the training split, nor what cfg's backbone needs to start
    its set from real images (InvalidArgument with the range)."""
    cfg = cfg if cfg is not None else DistillConfig(ipc=ipc)
    backbones.get(cfg.algorithm).check_data(train, cfg if cfg.ipc == ipc else cfg.replace(ipc=ipc))


def check_inputs(train: BiasedSplit, cfg: DistillConfig, methods: tuple[str, ...],
                 weights: torch.Tensor | None) -> None:
    """Everything distill() refuses, checked before any work."""
    backbones.check_config(cfg)
    if len(train) == 0:
        raise InvalidArgument("the training split is empty", "load a dataset with images")
    check_ipc(train, cfg.ipc, cfg)
    if not any(REGISTRY[m].needs_weights for m in methods):
        return
    if weights is None:
        raise InvalidArgument("the kde method needs per-sample KDE weights",
                              "compute them with engine.density.training_weights, or drop kde")
    if weights.shape != (len(train),) or not torch.isfinite(weights).all() or (weights < 0).any():
        raise InvalidArgument(f"KDE weights must be {len(train)} finite non-negative numbers",
                              "recompute them for this training split")
    per_class = torch.zeros(train.num_classes, dtype=torch.float64).index_add_(0, train.targets, weights.double())
    if (per_class <= 0).any():
        raise InvalidArgument("KDE weights sum to zero within a class", "recompute them (temperature too low?)")


def _fingerprint(train: BiasedSplit, weights: torch.Tensor | None, methods: tuple[str, ...],
                 cfg: DistillConfig, track: dict | None = None) -> str:
    tensors = (train.images, train.targets, train.attributes) + ((weights.float(),) if weights is not None else ())
    extra = {"track": track} if track is not None else {}  # untracked runs keep their old fingerprint
    return cache.cache_key(data=cache.tensor_digest(*tensors), methods=methods, cfg=cfg.key(),
                           version=DISTILL_VERSION, **extra)


def build(train: BiasedSplit, cfg: DistillConfig, methods: tuple[str, ...], weights: torch.Tensor | None,
          mean: torch.Tensor, std: torch.Tensor, device: torch.device,
          backbone: Backbone | None = None) -> tuple[Run, State]:
    """The run's device data, network and sampler, and its state at iteration 0 (before backbone.prepare)."""
    backbone = backbone or backbones.get(cfg.algorithm)
    spec = DATASETS.get(train.dataset)
    dsa = DSA(cfg.dsa, flip=not (spec and spec.digits)) if cfg.dsa != "none" else None
    nc, (c, h, _) = train.num_classes, train.images.shape[1:]
    net_cfg = cfg.net_config(c, nc, h)
    fmt = memory_format(device)
    importance = any(REGISTRY[m].weighted_draws for m in methods) and cfg.kde_sampling == "importance"
    sampler = Sampler(train, cfg.batch_real, cfg.group_min, any(REGISTRY[m].group_topup for m in methods),
                      kde_weights=weights if importance else None, kde_batch=cfg.kde_batch,
                      balanced=any(REGISTRY[m].balanced_draws for m in methods))
    run = Run(cfg, methods, device, Context(nc, sampler.num_groups, cfg.fairdd_reduction),
              ConvNet(net_cfg).to(device).to(memory_format=fmt), dsa, sampler, train.images.to(device),
              mean.to(device).view(1, -1, 1, 1), std.to(device).view(1, -1, 1, 1), train.attributes.to(device),
              weights.float().to(device) if weights is not None else None, importance,
              torch.arange(nc).repeat_interleave(cfg.ipc).to(device), fmt, train.targets.to(device),
              backbone.form(cfg, h))
    starts = backbone.initial_sets(train, cfg, mean, std, methods, weights)
    syn = {m: starts[m].clone().to(device).requires_grad_(True) for m in methods}
    opts = {m: torch.optim.SGD([syn[m]], lr=cfg.lr_img, momentum=cfg.momentum) for m in methods}
    state = State(syn, opts, {m: [] for m in methods}, torch.zeros(len(methods), dtype=torch.float64, device=device))
    return run, state


def _log_losses(state: State, methods: Sequence[str], losses: torch.Tensor, log_every: int, total: int) -> None:
    """Accumulate the iteration's losses (float64, one per method); every log_every iterations append
    their mean to the history."""
    state.acc += losses
    state.acc_n += 1
    if state.done % log_every == 0 or state.done == total:
        for m, v in zip(methods, (state.acc / max(state.acc_n, 1)).tolist()):
            state.history[m].append((state.done, float(v)))
        state.acc.zero_()
        state.acc_n = 0


def _track(run: Run, state: State, tracker: Tracker, mean: torch.Tensor, std: torch.Tensor,
           should_stop: ShouldStop | None) -> dict[str, dict]:
    """Measure every method's set at state.done (a track point); the points are kept only once all are measured."""
    losses = (state.track_acc / state.track_n).tolist() if state.track_n else [None] * len(run.methods)
    labels = run.decoded_labels().cpu()
    images = {m: run.decoded(state.syn[m].detach()).float().cpu() for m in run.methods}
    units = {m: to_unit(x, mean, std) for m, x in images.items()}
    new = {m: {"iteration": state.done, **tracker.measure(images[m], units[m], labels, mean, std, should_stop),
               "loss": loss} for m, loss in zip(run.methods, losses)}
    for m in run.methods:
        state.trajectory[m].append(new[m])
        state.snapshots[m].append(to_uint8(units[m]))
    state.track_acc.zero_()
    state.track_n = 0
    return new


def distill(train: BiasedSplit, cfg: DistillConfig, methods: Sequence[str], weights: torch.Tensor | None = None,
            progress: Progress | None = None, should_stop: ShouldStop | None = None,
            checkpoint_dir: str | Path | None = None, tracker: Tracker | None = None,
            device: torch.device | None = None) -> dict[str, SyntheticSet]:
    """Distill `train` with every method side by side; resumes from checkpoint_dir if it holds a checkpoint.
    `device`: where to compute, already resolved (default: pick_device(cfg.device)).

    With a tracker (engine.trajectory) every method is measured at the track points; the sets are the
    same with or without it (it draws on no RNG stream of the loop)."""
    methods = check_methods(methods)
    check_inputs(train, cfg, methods, weights)
    t_start = time.perf_counter()
    mean, std = channel_stats(train.images)
    backbone = backbones.get(cfg.algorithm)
    run, state = build(train, cfg, methods, weights, mean, std, device or pick_device(cfg.device), backbone)
    step = backbone.prepare(run, state, train, weights, progress, should_stop)
    points = set(track_points(cfg.iterations, tracker.every)) if tracker is not None else set()
    if points:
        state.trajectory, state.snapshots = {m: [] for m in methods}, {m: [] for m in methods}
        state.track_acc = torch.zeros(len(methods), dtype=torch.float64, device=run.device)
    fingerprint = _fingerprint(train, weights, methods, cfg, tracker.key() if points else None) if checkpoint_dir else ""
    ckpt = Checkpoint(checkpoint_dir, fingerprint, tracking=bool(points))
    ckpt.load(state, methods)
    elapsed = lambda: state.seconds_before + time.perf_counter() - t_start  # noqa: E731

    def track() -> None:
        if state.done not in points or state.done <= state.last_tracked():
            return
        try:
            new = _track(run, state, tracker, mean, std, should_stop)
        except Cancelled:  # a --track-eval training was stopped: keep what the loop has done
            ckpt.save(state, cfg, methods, elapsed())
            raise
        if progress is not None:
            progress(Event("distill", state.done, cfg.iterations, track=new,
                           real_aligned_share=tracker.real_aligned_share))

    log_every, it0, t_loop = max(1, cfg.iterations // 200), state.done, time.perf_counter()
    for it in range(it0, cfg.iterations):
        if should_stop is not None and should_stop():
            ckpt.save(state, cfg, methods, elapsed())
            raise Cancelled(f"distillation cancelled at iteration {it} of {cfg.iterations}",
                            "run again with the same checkpoint folder to resume" if ckpt.path else None)
        track()
        gens = Gens.at(cfg.seed, it)
        init_network(run.net, gens.main)
        losses = step(run, state, gens)
        state.done = it + 1
        step_losses = torch.stack([losses[m].detach().double() for m in methods])
        _log_losses(state, methods, step_losses, log_every, cfg.iterations)
        if points:
            state.track_acc += step_losses
            state.track_n += 1
        if state.done % cfg.checkpoint_every == 0 and state.done < cfg.iterations:
            ckpt.save(state, cfg, methods, elapsed())
        if progress is not None:
            rate = (time.perf_counter() - t_loop) / (state.done - it0)
            progress(Event("distill", state.done, cfg.iterations, elapsed=elapsed(),
                           losses={m: state.history[m][-1][1] if state.history[m] else None for m in methods},
                           eta=rate * (cfg.iterations - state.done)))
    track()
    seconds = elapsed()
    ckpt.save(state, cfg, methods, seconds)
    return _results(run, train, state, mean, std, seconds)


def _results(run: Run, train: BiasedSplit, state: State, mean: torch.Tensor, std: torch.Tensor,
             seconds: float) -> dict[str, SyntheticSet]:
    """Each method's set as training images (a backbone that stores sets otherwise, as IDC's tiles, keeps the stored
    images beside as `formation`), with the backbone's learned values (MTT's syn_lr) in its metadata."""
    cfg, methods = run.cfg, run.methods
    meta = {"algorithm": cfg.algorithm, "ipc": cfg.ipc, "iterations": cfg.iterations, "dataset": train.dataset,
            "conflict_ratio": train.meta.get("conflict_ratio"), "class_names": list(train.class_names),
            "config": cfg.key(), "methods_side_by_side": list(methods), "version": DISTILL_VERSION, **run.form.meta()}
    out = {}
    labels = run.decoded_labels().cpu()
    for m in methods:
        stored = state.syn[m].detach().float()
        own = dict(meta, **{name: float(values[m].detach()) for name, values in state.learned.items() if m in values})
        if state.records:
            own["records"] = {name: [list(x) for x in values[m]] for name, values in state.records.items()}
        out[m] = SyntheticSet(m, run.decoded(stored).cpu().contiguous(), labels.clone(), mean, std,
                              state.history[m][-1][1] if state.history[m] else float("nan"), seconds,
                              state.history[m], own, list(state.trajectory.get(m, [])),
                              torch.stack(state.snapshots[m]) if state.snapshots.get(m) else None,
                              stored.cpu().contiguous() if run.form.per_stored > 1 else None)
    return out
