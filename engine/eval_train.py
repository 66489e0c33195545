"""The evaluation training, in three modes that train the same nets (docs/EVALUATION.md, "Training modes").

- `eager`: one net at a time, every operation launched on its own (the reference).
- `fused`: the same step with the net's forward and backward compiled by torch.compile: inductor fuses the
  memory-bound instance norm, ReLU and pooling around the convolutions. Compiled once per shape and machine:
  the kernels are kept on disk under DDAUDIT_HOME/cache/kernels, so a later process only loads them.
- `batched`: several trainings of one shape (same images per set, same schedule) as ONE stacked model:
  grouped convolutions, a per-channel group norm over all the nets' channels, a per-net linear layer and the
  sum of the nets' losses (their parameters are disjoint, so each gets its own gradient; SGD is elementwise,
  so each its own update). Each training keeps its own seed, initial weights, batch order, DSA draws and
  schedule. On the CPU the stacked step is compiled like `fused` when torch.compile works.

`choose_mode` picks the measured-faster mode per device and size; DDAUDIT_EVAL_MODE=eager|fused|batched
overrides it. Without a working torch.compile (no C++ compiler, ...) fused and the CPU's batched compile fall
back to eager with one logged line. The modes agree within float rounding, not bit for bit, so the evaluation
cache keys results by mode.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from . import cache
from .augment import DSA, DSAParams
from .device import autocast
from .errors import Cancelled, InvalidArgument
from .nets import AvgPool2x2, ConvNet, ConvNetConfig, seeded
from .progress import Event, Progress, ShouldStop

log = logging.getLogger("ddaudit")

MODES = ("eager", "fused", "batched")
MODE_ENV = "DDAUDIT_EVAL_MODE"
COSTS_FILE = Path(__file__).with_name("costs.json")
# The set size engine/costs.json's evaluation costs were measured at (bench/bench_costs.py: IPC 5 of 10 classes):
# (eager - fused) seconds per image-epoch x this = what fusing saves per SGD step.
COST_IMAGES = 50

_compile_state: dict[str, bool | str] = {}  # "ok": compile works here; "why": the notice given once
# dynamo compiles on a graph's first call and is not meant to compile from two threads at once (the dashboard's
# runs are threads): the first epoch of a compiled training, where a shape's graph is compiled, takes this lock
_COMPILING = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One evaluation training: a set (floats in the nets' space) and the seed of its net, batches and DSA."""

    images: torch.Tensor
    labels: torch.Tensor
    seed: int


def requested_mode() -> str | None:
    """DDAUDIT_EVAL_MODE when set (checked), else None."""
    raw = os.environ.get(MODE_ENV, "").strip().lower()
    if not raw or raw == "auto":
        return None
    if raw not in MODES:
        raise InvalidArgument(f"{MODE_ENV}={raw!r} is not an evaluation mode",
                              f"set it to one of {', '.join(MODES)} or auto (or unset it)")
    return raw


def choose_mode(device: torch.device, images_per_set: int, trainings: int, steps: int,
                norm: str = "instancenorm", costs: dict | None = None) -> str:
    """The mode `trainings` trainings of `steps` SGD steps each run in here (DDAUDIT_EVAL_MODE first), resolved to
    what this machine can do (resolve_mode). GPU: batched from two trainings (each is bound by kernel launches).
    CPU: fused when compiling pays (compile_pays), else eager; never batched unless asked for: stacking measured
    slower than fused one by one at every size on 2 quiet cores (docs/EVALUATION.md). The rule depends on the
    request and engine/costs.json only, not on what is cached, so a request always trains in the same mode."""
    forced = requested_mode()
    if forced is None:
        if device.type == "cuda":
            forced = "batched" if trainings > 1 else "eager"
        else:
            forced = "fused" if compile_pays(trainings, steps, costs) else "eager"
    return resolve_mode(forced, device, norm)


_costs: dict | None = None  # engine/costs.json, read once


def load_costs() -> dict:
    """engine/costs.json: the measured unit costs (bench/bench_costs.py)."""
    global _costs
    if _costs is None:
        _costs = cache.read_json(COSTS_FILE)
    return _costs


def compile_pays(trainings: int, steps: int, costs: dict | None = None) -> bool:
    """Whether fusing these trainings saves more than a compile costs a process whose kernels are on disk (`make
    install` puts the default form's there): the measured saving per step (costs.json, at COST_IMAGES images) x
    trainings x steps against the measured warm compile. Larger sets save more per step, so this errs to eager."""
    c = costs or load_costs()
    per = c.get("eval_image_epoch")
    if not isinstance(per, dict) or "eager" not in per or "fused" not in per:
        return trainings * steps >= 100  # an old costs file without per-mode costs: the former rule
    saving_per_step = max(per["eager"] - per["fused"], 0.0) * c.get("eval_cost_images", COST_IMAGES)
    return trainings * steps * saving_per_step > c.get("eval_compile_warm", 0.0)


def resolve_mode(mode: str, device: torch.device, norm: str = "instancenorm") -> str:
    """The mode that will really run: batched needs a per-sample norm (batch norm mixes a batch's rows:
    fused on the CPU, eager on a GPU instead), fused a working torch.compile (eager otherwise)."""
    if mode not in MODES:
        raise InvalidArgument(f"evaluation mode {mode!r} is unknown", f"use one of {', '.join(MODES)}")
    if mode == "batched" and norm != "instancenorm":
        mode = "fused" if device.type == "cpu" else "eager"
    if mode == "fused" and not compile_available():
        mode = "eager"
    return mode


def _compiles(mode: str, device: torch.device) -> bool:
    return mode == "fused" or (mode == "batched" and device.type == "cpu" and compile_available())


def tag(mode: str, device: torch.device) -> str:
    """What a (resolved) mode runs as here, for cache keys: its results differ from the other modes' in float
    rounding. `batched-eager`: the stack without torch.compile (on the CPU when compiling is unavailable)."""
    mode = resolve_mode(mode, device)
    return "batched-eager" if mode == "batched" and device.type == "cpu" and not _compiles(mode, device) else mode


def compile_available() -> bool:
    """Whether torch.compile has not failed in this process (the first compile tells)."""
    return _compile_state.get("ok", True) is not False


def _compile_failed(exc: BaseException) -> None:
    _compile_state["ok"] = False
    if "why" not in _compile_state:
        _compile_state["why"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log.warning("evaluation: torch.compile is unavailable here (%s); training eagerly (slower, same protocol)",
                    _compile_state["why"][:200])


_USER_KERNEL_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def _kernel_cache() -> None:
    """Inductor's on-disk cache under the current DDAUDIT_HOME (unless the user pointed it elsewhere): a shape
    is compiled once per machine; inductor reads the variable whenever it looks for a kernel."""
    if not _USER_KERNEL_DIR:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache.cache_dir("kernels"))


def _module_loss(net: ConvNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(x), y)


_fused_module_loss = None


def _allow_recompiles() -> None:
    """One graph per set shape: a long-lived process (the dashboard) meets many; dynamo's default of 8 would
    then fall back to eager silently. (Also quiets inductor's "No CUDA runtime is found" line on a CPU machine:
    a CUDA-built torch looking for nvcc, which the CPU kernels do not need.)"""
    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch._dynamo.config as dynamo_config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))


def _compiled_module_loss():
    global _fused_module_loss
    if _fused_module_loss is None:
        _allow_recompiles()
        _kernel_cache()
        # dynamic=False: one graph per shape (an audit's sets share one); nets are inlined, so a new net of the
        # same configuration reuses the compiled graph instead of compiling again
        _fused_module_loss = torch.compile(_module_loss, dynamic=False)
    return _fused_module_loss


# --------------------------------------------------------------------------- the stacked model (batched)

def _stack(nets: Sequence[ConvNet]) -> list[torch.Tensor]:
    """The nets' parameters as one stacked model's: per block conv weight/bias and norm weight/bias
    concatenated along the output channels, the classifier's stacked along a leading net axis."""
    params: list[torch.Tensor] = []
    for b in range(nets[0].cfg.blocks()):  # features: conv, norm, ReLU, pool per block
        convs, norms = [n.features[4 * b] for n in nets], [n.features[4 * b + 1] for n in nets]
        params += [torch.cat([c.weight.detach() for c in convs]), torch.cat([c.bias.detach() for c in convs]),
                   torch.cat([g.weight.detach() for g in norms]), torch.cat([g.bias.detach() for g in norms])]
    params += [torch.stack([n.classifier.weight.detach() for n in nets]),
               torch.stack([n.classifier.bias.detach() for n in nets])]
    return [p.clone().requires_grad_(True) for p in params]


def _unstack(params: Sequence[torch.Tensor], nets: Sequence[ConvNet]) -> None:
    """Copy the trained stacked parameters back into each net."""
    s = len(nets)
    with torch.no_grad():
        for b in range(nets[0].cfg.blocks()):
            w, bias, gw, gb = (p.detach().chunk(s) for p in params[4 * b:4 * b + 4])
            for i, n in enumerate(nets):
                n.features[4 * b].weight.copy_(w[i])
                n.features[4 * b].bias.copy_(bias[i])
                n.features[4 * b + 1].weight.copy_(gw[i])
                n.features[4 * b + 1].bias.copy_(gb[i])
        for i, n in enumerate(nets):
            n.classifier.weight.copy_(params[-2][i])
            n.classifier.bias.copy_(params[-1][i])


_pool = AvgPool2x2()


def _stacked_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over nets of each net's mean cross-entropy; x: S x B x C x H x W, y: S x B."""
    s, b = y.shape
    h = x.transpose(0, 1).reshape(b, s * x.shape[2], *x.shape[3:])
    if x.is_cuda:
        h = h.contiguous(memory_format=torch.channels_last)
    for i in range(0, len(params) - 2, 4):
        w, bias, gw, gb = params[i:i + 4]
        h = F.conv2d(h, w, bias, padding=1, groups=s)
        h = F.group_norm(h, h.shape[1], gw, gb)  # one group per channel: every net's instance norm
        h = _pool(F.relu(h))
    feats = h.reshape(b, s, -1)
    logits = torch.einsum("bsf,skf->sbk", feats, params[-2].to(feats.dtype)) + params[-1].to(feats.dtype)[:, None]
    losses = F.cross_entropy(logits.reshape(s * b, -1).float(), y.reshape(-1), reduction="none")
    return losses.view(s, b).mean(1).sum()


_fused_stacked_loss = None


def _compiled_stacked_loss():
    global _fused_stacked_loss
    if _fused_stacked_loss is None:
        _allow_recompiles()
        _kernel_cache()
        _fused_stacked_loss = torch.compile(_stacked_loss, dynamic=False)
    return _fused_stacked_loss


# --------------------------------------------------------------------------- DSA over many trainings

def augment_many(batches: Sequence[torch.Tensor], params: Sequence[DSAParams], dsa: DSA) -> list[torch.Tensor]:
    """Each batch augmented with its own drawn parameters; batches whose draw picked the same family go
    through one call (DSA.apply works row by row, so the rows come out as they would alone)."""
    out: list[torch.Tensor | None] = [None] * len(batches)
    families: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        families.setdefault(p.family, []).append(i)
    for family, members in families.items():
        if len(members) == 1:
            i = members[0]
            out[i] = dsa.apply(batches[i], params[i])
            continue
        keys = params[members[0]].values
        joined = DSAParams(family, {k: torch.cat([params[i].values[k] for i in members]) for k in keys})
        done = dsa.apply(torch.cat([batches[i] for i in members]), joined)
        for i, part in zip(members, done.split([len(batches[i]) for i in members])):
            out[i] = part
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- training

def _grad_scaler(device: torch.device):
    # fp16 autocast (GPUs without bf16) needs loss scaling; bf16 and CPU do not
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)


def net_config(job: Job, cfg, num_classes: int) -> ConvNetConfig:
    """The ConvNet-D an evaluation trains on this set (cfg: an evaluate.EvalPreset)."""
    return ConvNetConfig(channels=job.images.shape[1], num_classes=num_classes, image_size=job.images.shape[-1],
                         width=cfg.width, depth=cfg.depth, norm=cfg.norm)


def train_jobs(jobs: Sequence[Job], cfg, device: torch.device, *, num_classes: int, flip: bool = True,
               epochs: int | None = None, mode: str = "eager", progress: Progress | None = None,
               should_stop: ShouldStop | None = None, stage: str = "evaluate",
               compile: bool = True) -> tuple[list[ConvNet], str]:
    """Train one fresh net per job with the preset's SGD schedule (cfg: an evaluate.EvalPreset) in `mode`:
    the nets in eval mode, in the jobs' order, and the tag of what ran (tag(); eager when compiling failed).
    `batched` needs jobs of one shape (one job is a stack of one). compile=False: never torch.compile (fused then
    trains eagerly, batched stacks uncompiled; benchmarks' smoke runs)."""
    mode = resolve_mode(mode, device, cfg.norm)
    if not compile and mode == "fused":
        mode = "eager"
    compiled = compile and _compiles(mode, device)
    try:
        _kernel_cache()
        if mode == "batched":
            nets = _train(jobs, cfg, device, num_classes, flip, epochs, progress, should_stop, stage, compiled, True)
        else:
            nets = [_train([j], cfg, device, num_classes, flip, epochs, _within(progress, i, len(jobs)), should_stop,
                           stage, compiled, False)[0] for i, j in enumerate(jobs)]
        return nets, "batched-eager" if mode == "batched" and device.type == "cpu" and not compiled else mode
    except Cancelled:
        raise
    except Exception as exc:  # a compiler that is missing or fails: say so once, train eagerly from the start
        if not compiled or not _is_compile_error(exc):
            raise
        _compile_failed(exc)
        return train_jobs(jobs, cfg, device, num_classes=num_classes, flip=flip, epochs=epochs, mode=mode,
                          progress=progress, should_stop=should_stop, stage=stage, compile=compile)


def _is_compile_error(exc: BaseException) -> bool:
    mod = type(exc).__module__
    return mod.startswith(("torch._dynamo", "torch._inductor")) or isinstance(exc, (OSError, RuntimeError)) and \
        any(w in str(exc) for w in ("compile", "Compiler", "compiler", "inductor", "cpp"))


def _layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def _within(progress: Progress | None, i: int, n: int) -> Progress | None:
    if progress is None or n == 1:
        return progress
    return lambda ev: progress(ev.within(ev.stage, i * ev.total, n * ev.total))


def _train(jobs: Sequence[Job], cfg, device: torch.device, num_classes: int, flip: bool, epochs: int | None,
           progress: Progress | None, should_stop: ShouldStop | None, stage: str, compiled: bool,
           stacked: bool) -> list[ConvNet]:
    """The training loop all modes share: per job its own generator for the batch order and DSA draws."""
    shapes = {tuple(j.images.shape) for j in jobs}
    if len(shapes) != 1:
        raise InvalidArgument(f"trainings stacked together need one set shape, got {sorted(shapes)}",
                              "group the trainings by set size (evaluate.evaluate_many does)")
    nets = [seeded(lambda j=j: ConvNet(net_config(j, cfg, num_classes)), j.seed).to(device) for j in jobs]
    if stacked:
        params = _stack(nets)
        fn = _compiled_stacked_loss() if compiled else _stacked_loss
        step_loss = lambda x, y: fn(params, torch.stack(x), torch.stack(y))  # noqa: E731
    else:
        if device.type == "cuda":
            nets[0] = nets[0].to(memory_format=torch.channels_last)
        params = list(nets[0].parameters())
        fn = _compiled_module_loss() if compiled else _module_loss
        step_loss = lambda x, y: fn(nets[0], _layout(x[0]), y[0])  # noqa: E731
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    epochs = cfg.epochs if epochs is None else epochs
    gens = [torch.Generator().manual_seed(j.seed) for j in jobs]
    dsa = DSA(strategy="color_crop_cutout_flip_scale_rotate", flip=flip) if cfg.dsa else None
    scaler = _grad_scaler(device)
    xs = [j.images.to(device) for j in jobs]  # synthetic sets are small: keep them on the device
    ys = [j.labels.long().to(device) for j in jobs]
    n, step = len(jobs[0].labels), 0
    total = epochs * math.ceil(n / cfg.batch_size)
    for net in nets:
        net.train()
    loss = torch.zeros(())
    for epoch in range(epochs):
        if epoch == epochs // 2:  # the protocol's single lr step at half the epochs
            for group in opt.param_groups:
                group["lr"] = cfg.lr * cfg.lr_decay
        orders = [torch.randperm(n, generator=g) for g in gens]
        for start in range(0, n, cfg.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("evaluation cancelled", "start it again; evaluation has no checkpoint")
            idx = [o[start:start + cfg.batch_size].to(device) for o in orders]
            xb = [x[i] for x, i in zip(xs, idx)]
            if dsa is not None:
                xb = augment_many(xb, [dsa.sample(len(i), g) for i, g in zip(idx, gens)], dsa)
            yb = [y[i] for y, i in zip(ys, idx)]
            with _COMPILING if compiled and epoch == 0 else contextlib.nullcontext():  # forward + backward
                with autocast(device):
                    loss = step_loss(xb, yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
        if progress is not None and (epoch + 1) % max(1, epochs // 20) == 0:
            progress(Event(stage, step, total, loss=float(loss.detach()) / len(jobs)))
    if stacked:
        _unstack(params, nets)
    return [net.eval() for net in nets]

