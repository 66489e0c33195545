"""The side-by-side distillation loop: every method shares the random network, the real batch (one
batched forward, all classes, no autograd for DM), its features and the DSA parameters; each keeps its
own synthetic set and SGD optimiser. docs/DISTILL.md: losses, FairDD pitfalls, RNG / checkpoint design.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import cache
from ..augment import DSA, DSAParams
from ..data import REGISTRY as DATASETS, BiasedSplit
from ..device import autocast, pick_device
from ..errors import Cancelled, InvalidArgument
from ..images import to_float, to_uint8, to_unit
from ..nets import ConvNet, init_network, memory_format
from ..progress import Event, Progress, ShouldStop
from . import experts as X, idc, mtt
from .checkpoint import Checkpoint, State
from .grads import real_grad, syn_grad
from .config import DISTILL_VERSION, DistillConfig, check_config
from .methods import METHODS, REGISTRY, Batch, Context, check_methods
from .sampler import STREAM_BALANCED, STREAM_GROUPS, STREAM_INNER, STREAM_KDE, STREAM_MAIN, Sampler, rng
from .sets import SyntheticSet
from .starts import initial_sets
from .tracking import Tracker, track_points



@dataclass
class _Run:
    """Everything an iteration needs, built once: data on the device, the network, the sampler."""

    cfg: DistillConfig
    methods: tuple[str, ...]
    device: torch.device
    ctx: Context
    net: ConvNet
    dsa: DSA | None
    sampler: Sampler
    images: torch.Tensor
    mean: torch.Tensor           # 1 x C x 1 x 1 on the device
    std: torch.Tensor
    attributes: torch.Tensor
    weights: torch.Tensor | None
    importance: bool             # kde's rows drawn with probability w_i
    syn_labels: torch.Tensor
    fmt: torch.memory_format = field(default=torch.contiguous_format)
    targets: torch.Tensor | None = None  # the real labels on the device (IDC trains its network on them)
    factor: int = 1                      # IDC's multi-formation factor (1: a stored image is one image)
    experts: dict[str, X.ExpertBank] | None = None  # MTT: each method's expert trajectories

    def decoded(self, syn: torch.Tensor) -> torch.Tensor:
        """A method's stored set as training images (IDC decodes its tiles; DM/DC as stored)."""
        return idc.decode(syn, self.factor)

    def decoded_labels(self) -> torch.Tensor:
        """The labels of decoded(): each stored image's label, factor^2 times under IDC."""
        return idc.decode_labels(self.syn_labels, self.factor)

    def pixel_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel values 0 and 1, standardised (1 x C x 1 x 1): IDC's clamp."""
        return -self.mean / self.std, (1 - self.mean) / self.std

    def real_batch(self, gens: "_Gens", params: DSAParams | None) -> Batch:
        """Draw the shared rows, standardise and augment them (one DSA parameter set per class)."""
        d = self.sampler.draw(gens.main, gens.groups, gens.kde, gens.balanced)
        index, labels = d.index.to(self.device), d.labels.to(self.device)
        x = to_float(self.images[index], self.mean, self.std)
        if params is not None:
            x = self.dsa.apply(x, params.take(labels))
        return Batch(x.contiguous(memory_format=self.fmt), labels, self.attributes[index],
                     d.uniform.to(self.device), d.drawn_only.to(self.device),
                     d.kde_take.to(self.device) if self.importance else None,
                     self.weights[index] if self.weights is not None else None,
                     d.balanced_take.to(self.device) if d.balanced_take is not None else None)

    def forward(self, x: torch.Tensor, net: ConvNet | None = None) -> torch.Tensor:
        """Features of a batch through `net` (default: the shared one; cache-sized row chunks on CPU), float32."""
        with autocast(self.device):
            return (net or self.net).embed_rows(x.contiguous(memory_format=self.fmt)).float()


@dataclass
class _Gens:
    """One iteration's RNG streams (pure functions of seed and iteration: resume needs no RNG state)."""

    main: torch.Generator
    groups: torch.Generator
    kde: torch.Generator
    balanced: torch.Generator
    it: int

    @classmethod
    def at(cls, seed: int, it: int) -> "_Gens":
        return cls(rng(seed, it, STREAM_MAIN), rng(seed, it, STREAM_GROUPS), rng(seed, it, STREAM_KDE),
                   rng(seed, it, STREAM_BALANCED), it)


def _warmed(run: _Run, m: str) -> bool:
    """Whether method m matches through its own warm-started copy of the iteration's network."""
    return REGISTRY[m].warm_start and run.cfg.warmup_epochs() > 0


def _dm_batch(run: _Run, gens: _Gens) -> tuple[DSAParams | None, Batch]:
    """What every method of a DM iteration shares: the DSA parameters (siamese: one set per class, for
    real and synthetic images) and the augmented real batch."""
    params = run.dsa.sample(run.ctx.num_classes, gens.main) if run.dsa is not None else None
    return params, run.real_batch(gens, params)


def _dm_step(run: _Run, state: State, gens: _Gens) -> dict[str, torch.Tensor]:
    """One DM iteration for every method: shared real forward (no autograd), one synthetic forward;
    a warm-started method (COBRA) matches through its own trained copy of the network instead."""
    net, syn = run.net, state.syn
    net.requires_grad_(False)
    net.train()
    params, b = _dm_batch(run, gens)
    methods = [m for m in run.methods if not _warmed(run, m)]
    feats: dict[str, torch.Tensor] = {}
    if methods:
        with torch.no_grad():
            real = run.forward(b.x)
        feats = _syn_features(run, net, syn, methods, params)
    d = net.feature_dim
    losses = {m: REGISTRY[m].dm_loss(real, b, feats[m].view(run.ctx.num_classes, -1, d).mean(1), run.ctx)
              for m in methods}
    for m in run.methods:
        if _warmed(run, m):
            losses[m] = _warm_dm_loss(run, syn[m], m, b, params, gens.it)
    losses = {m: losses[m] for m in run.methods}
    for m in run.methods:
        state.opts[m].zero_grad(set_to_none=True)
    torch.stack(list(losses.values())).sum().backward()
    for m in run.methods:
        state.opts[m].step()
    return losses


def _syn_features(run: _Run, net: ConvNet, syn: dict[str, torch.Tensor], methods: list[str],
                  params: DSAParams | None) -> dict[str, torch.Tensor]:
    """Synthetic features of the methods through `net`, with the iteration's DSA parameters."""
    dsa = run.dsa
    if run.cfg.norm == "batchnorm":  # batch statistics must not mix methods: one whole forward each
        feats = {}
        for m in methods:
            xs = syn[m] if params is None else dsa.apply(syn[m], params.take(run.syn_labels))
            with autocast(run.device):
                feats[m] = net.embed(xs.contiguous(memory_format=run.fmt)).float()
        return feats
    xs = torch.cat([syn[m] for m in methods])  # per-sample norm: one forward of every method's images together
    if params is not None:
        xs = dsa.apply(xs, params.take(run.syn_labels.repeat(len(methods))))
    return dict(zip(methods, run.forward(xs, net).split(len(run.syn_labels))))


def _warm_dm_loss(run: _Run, syn: torch.Tensor, m: str, b: Batch, params: DSAParams | None,
                  it: int) -> torch.Tensor:
    """COBRA's DM: a copy of the iteration's random net trained warmup_epochs on the method's current set
    (SGD lr_net, batch_train, DSA on its own stream), frozen, then its own real forward of the rows the
    method uses (uniform + top-up) and its own synthetic forward."""
    own = copy.deepcopy(run.net).requires_grad_(True)
    opt = torch.optim.SGD(own.parameters(), lr=run.cfg.lr_net)
    _train_net(run, own, opt, syn.detach(), rng(run.cfg.seed, it, STREAM_INNER + METHODS.index(m)),
               run.cfg.warmup_epochs())
    own.requires_grad_(False)
    rows = b.group_rows()
    with torch.no_grad():
        real = torch.zeros(len(b.x), own.feature_dim, device=run.device)
        real[rows] = run.forward(b.x[rows], own)
    feats = _syn_features(run, own, {m: syn}, [m], params)[m]
    return REGISTRY[m].dm_loss(real, b, feats.view(run.ctx.num_classes, -1, own.feature_dim).mean(1), run.ctx)


def _dc_match(run: _Run, net: ConvNet, method: str, syn: torch.Tensor, b: Batch,
              params: DSAParams | None, per_class: int | None = None) -> torch.Tensor:
    """Sum over classes of one method's gradient-matching loss against the shared real batch (`syn`:
    class-major, `per_class` images each, default the IPC)."""
    ipc, loss = per_class or run.cfg.ipc, torch.zeros((), device=run.device)
    for c in range(run.ctx.num_classes):
        xs = syn[c * ipc:(c + 1) * ipc]
        if params is not None:
            xs = run.dsa.apply(xs, params.take(torch.full((ipc,), c, device=run.device)))
        gw_syn = syn_grad(net, xs.contiguous(memory_format=run.fmt), c, run.device)
        grad_of = lambda rows, w, c=c: real_grad(net, b.x[rows], c, w, run.device)  # noqa: E731
        loss = loss + REGISTRY[method].grad_loss(run.cfg.algorithm)(gw_syn, grad_of, b, c, run.ctx)
    return loss


def _train_net(run: _Run, net: ConvNet, opt: torch.optim.Optimizer, data: torch.Tensor, g: torch.Generator,
               epochs: int) -> None:
    """Train a network on a method's synthetic set for some epochs (DSA on, as in DC/DSA): DC's inner
    loop and COBRA's warm start."""
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g).to(run.device)
        for s in range(0, len(data), run.cfg.batch_train):
            sel = perm[s:s + run.cfg.batch_train]
            xb = data[sel] if run.dsa is None else run.dsa.apply(data[sel], run.dsa.sample(len(sel), g))
            with autocast(run.device):
                out = net(xb.contiguous(memory_format=run.fmt)).float()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(out, run.syn_labels[sel]).backward()
            opt.step()


def _dc_step(run: _Run, state: State, gens: _Gens) -> dict[str, torch.Tensor]:
    """One DC outer iteration: per-method copies of the shared random network, matched and trained in turn.

    The network is trained on each method's own synthetic set between matching steps (DC), so the
    copies diverge after the first step and their real gradients cannot be shared; the random init,
    the real batches and the DSA parameters are shared.
    """
    outer, _ = run.cfg.loops()
    run.net.requires_grad_(True)
    run.net.train()
    nets = {m: copy.deepcopy(run.net) for m in run.methods}
    net_opts = {m: torch.optim.SGD(nets[m].parameters(), lr=run.cfg.lr_net) for m in run.methods}
    inner_gens = {m: rng(run.cfg.seed, gens.it, STREAM_INNER + METHODS.index(m)) for m in run.methods}
    totals = {m: torch.zeros((), device=run.device) for m in run.methods}
    for ol in range(outer):
        params = run.dsa.sample(run.ctx.num_classes, gens.main) if run.dsa is not None else None
        b = run.real_batch(gens, params)
        for m in run.methods:
            loss = _dc_match(run, nets[m], m, state.syn[m], b, params)
            state.opts[m].zero_grad(set_to_none=True)
            loss.backward()
            state.opts[m].step()
            totals[m] += loss.detach()
        if ol < outer - 1:
            for m in run.methods:
                _train_net(run, nets[m], net_opts[m], state.syn[m].detach(), inner_gens[m], run.cfg.loops()[1])
    return {m: totals[m] / outer for m in run.methods}


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
    """IPC must not exceed the smallest class of the training split; under IDC (cfg) IPC x factor^2 real
    images start the set and the factor must divide the image size (InvalidArgument with the range)."""
    smallest = int(torch.bincount(train.targets, minlength=train.num_classes).min())
    if ipc > smallest:
        raise InvalidArgument(f"IPC {ipc} exceeds the smallest class of {train.dataset} ({smallest} images)",
                              f"use --ipc between 1 and {smallest}")
    size = train.images.shape[-1]
    factor = cfg.formation(size) if cfg is not None else 1
    if factor > 1 and size % factor:
        raise InvalidArgument(f"IDC's factor {factor} does not divide the {size}-pixel images",
                              "give --factor that divides the image size (2 or 4 for 32 or 64 pixels)")
    if ipc * factor ** 2 > smallest:
        raise InvalidArgument(f"IDC starts IPC {ipc} x factor^2 {factor ** 2} = {ipc * factor ** 2} images per "
                              f"class from real ones; the smallest class of {train.dataset} has {smallest}",
                              f"use --ipc up to {smallest // factor ** 2} or a smaller --factor")


def check_inputs(train: BiasedSplit, cfg: DistillConfig, methods: tuple[str, ...],
                 weights: torch.Tensor | None) -> None:
    """Everything distill() refuses, checked before any work."""
    check_config(cfg)
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


def _build(train: BiasedSplit, cfg: DistillConfig, methods: tuple[str, ...], weights: torch.Tensor | None,
           mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> tuple[_Run, State]:
    """The run's device data, network and sampler, and its state at iteration 0."""
    spec = DATASETS.get(train.dataset)
    dsa = DSA(cfg.dsa, flip=not (spec and spec.digits)) if cfg.dsa != "none" else None
    nc, (c, h, _) = train.num_classes, train.images.shape[1:]
    net_cfg = cfg.net_config(c, nc, h)
    fmt = memory_format(device)
    factor = cfg.formation(h)
    importance = any(REGISTRY[m].weighted_draws for m in methods) and cfg.kde_sampling == "importance"
    sampler = Sampler(train, cfg.batch_real, cfg.group_min, any(REGISTRY[m].group_topup for m in methods),
                      kde_weights=weights if importance else None, kde_batch=cfg.kde_batch,
                      balanced=any(REGISTRY[m].balanced_draws for m in methods))
    run = _Run(cfg, methods, device, Context(nc, sampler.num_groups, cfg.fairdd_reduction),
               ConvNet(net_cfg).to(device).to(memory_format=fmt), dsa, sampler, train.images.to(device),
               mean.to(device).view(1, -1, 1, 1), std.to(device).view(1, -1, 1, 1), train.attributes.to(device),
               weights.float().to(device) if weights is not None else None, importance,
               torch.arange(nc).repeat_interleave(cfg.ipc).to(device), fmt, train.targets.to(device), factor)
    starts = initial_sets(train, cfg, mean, std, methods, weights)
    syn = {m: starts[m].clone().to(device).requires_grad_(True) for m in methods}
    opts = {m: torch.optim.SGD([syn[m]], lr=cfg.lr_img, momentum=cfg.momentum) for m in methods}
    state = State(syn, opts, {m: [] for m in methods}, torch.zeros(len(methods), dtype=torch.float64, device=device))
    if cfg.algorithm == "mtt":  # MTT's learnable step size starts at the experts' lr, SGD momentum 0.5 (distill.py)
        state.syn_lr = {m: torch.tensor(cfg.lr_teacher, device=device).requires_grad_(True) for m in methods}
        state.lr_opts = {m: torch.optim.SGD([state.syn_lr[m]], lr=cfg.lr_lr, momentum=0.5) for m in methods}
    return run, state


def _experts(run: _Run, train: BiasedSplit, weights: torch.Tensor | None, progress: Progress | None,
             should_stop: ShouldStop | None) -> dict[str, X.ExpertBank]:
    """MTT: each method's experts (its registry objective), from the cache or trained now."""
    setup = X.ExpertSetup(run.images, run.targets, run.mean, run.std, run.net.cfg, run.dsa, run.fmt, run.device)
    return X.ensure_experts(setup, X.objectives(train, run.cfg, run.methods, weights), run.cfg,
                            X.split_digest(train), progress, should_stop)


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


def _track(run: _Run, state: State, tracker: Tracker, mean: torch.Tensor, std: torch.Tensor,
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
    run, state = _build(train, cfg, methods, weights, mean, std, device or pick_device(cfg.device))
    if cfg.algorithm == "mtt":
        run.experts = _experts(run, train, weights, progress, should_stop)
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
    step = {"dm": _dm_step, "dc": _dc_step, "idc": lambda *a: idc.step(*a, match=_dc_match), "mtt": mtt.step}[cfg.algorithm]
    for it in range(it0, cfg.iterations):
        if should_stop is not None and should_stop():
            ckpt.save(state, cfg, methods, elapsed())
            raise Cancelled(f"distillation cancelled at iteration {it} of {cfg.iterations}",
                            "run again with the same checkpoint folder to resume" if ckpt.path else None)
        track()
        gens = _Gens.at(cfg.seed, it)
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


def _results(run: _Run, train: BiasedSplit, state: State, mean: torch.Tensor, std: torch.Tensor,
             seconds: float) -> dict[str, SyntheticSet]:
    """Each method's set as training images (IDC: decoded, its stored tiles kept beside as `formation`)."""
    cfg, methods = run.cfg, run.methods
    meta = {"algorithm": cfg.algorithm, "ipc": cfg.ipc, "iterations": cfg.iterations, "dataset": train.dataset,
            "conflict_ratio": train.meta.get("conflict_ratio"), "class_names": list(train.class_names),
            "config": cfg.key(), "methods_side_by_side": list(methods), "version": DISTILL_VERSION}
    if run.factor > 1:
        meta["factor"] = run.factor
    out = {}
    labels = run.decoded_labels().cpu()
    for m in methods:
        stored = state.syn[m].detach().float()
        own = dict(meta, syn_lr=float(state.syn_lr[m].detach())) if m in state.syn_lr else dict(meta)  # MTT's learned lr
        out[m] = SyntheticSet(m, run.decoded(stored).cpu().contiguous(), labels.clone(), mean, std,
                              state.history[m][-1][1] if state.history[m] else float("nan"), seconds,
                              state.history[m], own, list(state.trajectory.get(m, [])),
                              torch.stack(state.snapshots[m]) if state.snapshots.get(m) else None,
                              stored.cpu().contiguous() if run.factor > 1 else None)
    return out
