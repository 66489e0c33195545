"""Dataset distillation (DM, DC) with the vanilla, KDE and FairDD methods run side by side.

One run distills several methods at once. Every iteration they share the random network,
the real batch (one batched forward, all classes, no autograd for DM), its features and the
DSA parameters; each method keeps its own synthetic set and SGD optimiser. See
docs/DISTILL.md for the losses, the FairDD pitfalls and the RNG / checkpoint design.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import cache
from .augment import DSA, DSAParams
from .data import REGISTRY, BiasedSplit
from .device import autocast, pick_device
from .errors import Cancelled, CorruptArtifact, InvalidArgument
from .nets import ConvNet, ConvNetConfig

DISTILL_VERSION = 3  # bump when a change alters the synthetic sets a config produces
METHODS = ("vanilla", "kde", "fairdd")
ALGORITHMS = ("dm", "dc")
INITS = ("method", "real", "balanced", "noise")
CHECKPOINT = "checkpoint.safetensors"
_STREAM_MAIN, _STREAM_GROUPS, _STREAM_INIT, _STREAM_INNER = 0, 1, 2, 3
_STREAM_KDE = 16  # after the per-method inner streams (3 + method index)
KDE_SAMPLINGS = ("importance", "weighted")

Progress = Callable[[dict], None]


@dataclass(frozen=True)
class DistillConfig:
    """Everything that determines a distillation run (device aside)."""

    algorithm: str = "dm"
    ipc: int = 10
    iterations: int = 200
    batch_real: int = 64          # real images per class per iteration
    lr_img: float = 1.0
    momentum: float = 0.5         # SGD momentum on the synthetic images
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    dsa: str = "color_crop_cutout_flip_scale_rotate"  # "none" disables; flip dropped for digits
    # method: each method starts from the real images its target favours (vanilla random, kde drawn
    # with probability w_i, fairdd attribute-balanced); real | balanced | noise: one shared start
    init: str = "method"
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    group_min: int = 2            # FairDD: top each present group up to this many real images
    fairdd_reduction: str = "mean"  # mean over groups (our choice) | sum (FairDD's code)
    lr_net: float = 0.01          # DC: network SGD between matching steps
    outer_loop: int = 0           # DC: 0 = by IPC (REFERENCE.md table)
    inner_loop: int = 0
    batch_train: int = 256        # DC: batch when training the network on the synthetic set
    # KDE: "importance" draws kde_batch real images per class with probability w_i and matches their
    # plain mean; "weighted" weights the uniform batch. Both estimate sum_i w_i phi(x_i), but with
    # most weight on a few % of samples a weighted uniform batch has an effective size of ~1
    # (measured: ESS 2,139 of 60,000 on bg-fmnist at 5%), so its target jumps between samples.
    kde_sampling: str = "importance"
    kde_batch: int = 64

    def loops(self) -> tuple[int, int]:
        """DC (outer, inner) loops: explicit, else DC's table by IPC."""
        if self.outer_loop and self.inner_loop:
            return self.outer_loop, self.inner_loop
        table = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15))
        for ipc_max, outer, inner in table:
            if self.ipc <= ipc_max:
                return self.outer_loop or outer, self.inner_loop or inner
        return self.outer_loop or 50, self.inner_loop or 10

    def key(self) -> dict:
        """The fields that determine the result (not the device or the checkpoint cadence)."""
        d = asdict(self)
        d.pop("device")
        d.pop("checkpoint_every")
        return d


# quick: narrow net, small real batch, 10x image lr, 100 iterations. With each method starting from its
# own target (init="method") 100 iterations get within 1.5-3.5 points of 300 on both audited datasets
# (docs/RESULTS.md); from a shared random start 300 were needed and still fell short.
_QUICK_DM = DistillConfig(algorithm="dm", iterations=100, batch_real=32, lr_img=10.0, width=32,
                          checkpoint_every=25, kde_batch=32)
_QUICK_DC = DistillConfig(algorithm="dc", iterations=10, batch_real=32, lr_img=0.1, width=32,
                          outer_loop=5, inner_loop=5, checkpoint_every=2, kde_batch=32)
_PAPER_DM = DistillConfig(algorithm="dm", iterations=20000, batch_real=256, lr_img=1.0, width=128,
                          checkpoint_every=500)
_PAPER_DC = DistillConfig(algorithm="dc", iterations=1000, batch_real=256, lr_img=0.1, width=128,
                          checkpoint_every=50)
PRESETS: dict[str, dict[str, DistillConfig]] = {
    "quick": {"dm": _QUICK_DM, "dc": _QUICK_DC},
    "paper": {"dm": _PAPER_DM, "dc": _PAPER_DC},
}


def config_for(preset: str, algorithm: str, ipc: int, **overrides) -> DistillConfig:
    """A preset's config for an algorithm and IPC, with explicit overrides (None = keep)."""
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown preset {preset!r}", f"use one of: {', '.join(PRESETS)}")
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unknown algorithm {algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
    cfg = replace(PRESETS[preset][algorithm], ipc=ipc)
    if preset == "paper" and algorithm == "dm" and isinstance(ipc, int) and ipc >= 100:
        cfg = replace(cfg, lr_img=10.0)  # DM paper: lr_img 10 for IPC >= 100
    unknown = set(overrides) - set(asdict(cfg))
    if unknown:
        raise InvalidArgument(f"unknown distillation setting(s) {sorted(unknown)}",
                              f"use fields of DistillConfig: {', '.join(asdict(cfg))}")
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    check_config(cfg)
    return cfg


def check_config(cfg: DistillConfig) -> None:
    """Range checks that need no data."""
    def bad(what: str, fix: str) -> None:
        raise InvalidArgument(what, fix)

    if cfg.algorithm not in ALGORITHMS:
        bad(f"unknown algorithm {cfg.algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
    for name in ("ipc", "iterations", "batch_real", "width", "depth", "checkpoint_every", "batch_train",
                 "kde_batch"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            bad(f"{name.replace('_', '-')} must be a positive integer, got {v!r}", f"give {name} >= 1")
    for name in ("outer_loop", "inner_loop", "group_min"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            bad(f"{name} must be a non-negative integer, got {v!r}", f"give {name} >= 0")
    for name in ("lr_img", "lr_net"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad(f"{name} must be a positive number, got {v!r}", f"give {name} > 0")
    if not isinstance(cfg.momentum, (int, float)) or not 0 <= cfg.momentum < 1:
        bad(f"momentum must be in [0, 1), got {cfg.momentum!r}", "use e.g. 0.5")
    if cfg.init not in INITS:
        bad(f"unknown init {cfg.init!r}", f"use one of: {', '.join(INITS)}")
    if cfg.norm not in ("instancenorm", "batchnorm", "none"):
        bad(f"unknown norm {cfg.norm!r}", "use instancenorm, batchnorm or none")
    if cfg.kde_sampling not in KDE_SAMPLINGS:
        bad(f"unknown kde_sampling {cfg.kde_sampling!r}", f"use one of: {', '.join(KDE_SAMPLINGS)}")
    if cfg.fairdd_reduction not in ("mean", "sum"):
        bad(f"unknown fairdd_reduction {cfg.fairdd_reduction!r}", "use mean or sum")
    if cfg.depth > 6:
        bad(f"depth {cfg.depth} is too deep for 32x32 images", "use depth 1..5 (3 is the standard)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2 ** 63:
        bad(f"seed {cfg.seed!r} is not a non-negative integer", "give a whole number such as 0")
    if cfg.dsa != "none":
        DSA(cfg.dsa)  # raises InvalidArgument for unknown families


def check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Parse 'a,b' or a sequence; refuse unknown or repeated methods."""
    items = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    items = [m for m in items if m]
    unknown = [m for m in items if m not in METHODS]
    if unknown or not items:
        raise InvalidArgument(f"unknown method(s) {unknown or 'none given'}",
                              f"use a comma-separated list of: {', '.join(METHODS)}")
    if len(set(items)) != len(items):
        raise InvalidArgument(f"method listed twice in {items}", "list each method once")
    return tuple(items)


# --------------------------------------------------------------------------- results

@dataclass
class SyntheticSet:
    """One method's distilled images (normalised space) and how they were made."""

    method: str
    images: torch.Tensor        # float32 N x C x H x W, standardised with mean/std
    labels: torch.Tensor        # int64 N
    mean: torch.Tensor          # per-channel mean of the real training images in [0, 1]
    std: torch.Tensor
    final_loss: float
    seconds: float              # wall time of the whole side-by-side run (shared by its methods)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def unit(self) -> torch.Tensor:
        """Images in [0, 1] for display (un-standardised, clipped)."""
        return to_unit(self.images, self.mean, self.std)

    def to_uint8(self) -> torch.Tensor:
        return (self.unit() * 255).round().to(torch.uint8)


def to_unit(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Standardised images back to [0, 1] (clipped): what a synthetic set looks like."""
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0, 1)


def save_synthetic(sets: dict[str, SyntheticSet], out_dir: str | Path) -> dict[str, Path]:
    """Write out_dir/<method>/synthetic.safetensors and grid.png; returns the tensor paths."""
    out = {}
    for name, s in sets.items():
        folder = Path(out_dir) / cache.safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"method": s.method, "final_loss": s.final_loss, "seconds": s.seconds,
                "loss_history": s.loss_history, **s.meta}
        cache.save_tensors(folder / "synthetic.safetensors",
                           {"images": s.images, "labels": s.labels, "mean": s.mean, "std": s.std}, meta)
        cache.atomic_write_bytes(folder / "grid.png", grid_png(s))
        out[name] = folder / "synthetic.safetensors"
    return out


def load_synthetic(path: str | Path) -> SyntheticSet:
    """Read a set written by save_synthetic (the file, or its method folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "synthetic.safetensors"
    if not path.is_file():
        raise InvalidArgument(f"no synthetic set at {path}", "pass a folder written by `distill --out`")
    tensors, meta = cache.load_tensors(path)
    missing = {"images", "labels", "mean", "std"} - set(tensors)
    if missing:
        raise CorruptArtifact(f"{path} lacks {sorted(missing)}", "distill again")
    return SyntheticSet(meta.get("method", path.parent.name), tensors["images"].float(), tensors["labels"].long(),
                        tensors["mean"].float(), tensors["std"].float(), float(meta.get("final_loss", "nan")),
                        float(meta.get("seconds", 0.0)), [tuple(x) for x in meta.get("loss_history", [])],
                        {k: v for k, v in meta.items()
                         if k not in ("method", "final_loss", "seconds", "loss_history")})


def grid_png(s: SyntheticSet, scale: int = 2, pad: int = 2) -> bytes:
    """A PNG with one row per class and one column per synthetic image."""
    import io

    from PIL import Image
    imgs = s.to_uint8()
    classes = sorted(set(s.labels.tolist()))
    per = max(int((s.labels == c).sum()) for c in classes)
    _, ch, h, w = imgs.shape
    canvas = torch.full((3, len(classes) * (h + pad) + pad, per * (w + pad) + pad), 255, dtype=torch.uint8)
    for r, c in enumerate(classes):
        for k, img in enumerate(imgs[s.labels == c]):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            canvas[:, y:y + h, x:x + w] = img.expand(3, -1, -1) if ch == 1 else img
    pic = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- losses

def dm_losses(real: torch.Tensor, real_labels: torch.Tensor, uniform: torch.Tensor, groups: torch.Tensor,
              syn: dict[str, torch.Tensor], num_classes: int, num_groups: int,
              weights: torch.Tensor | None = None, reduction: str = "mean",
              kde_only: torch.Tensor | None = None, kde_take: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
    """DM loss per method from real features (rows), and synthetic features (class-major, ipc per class).

    vanilla: sum_c ||mean phi(real_c) - mean phi(S_c)||^2 over the uniform rows;
    kde: the real mean replaced by sum_i w_i phi(x_i): estimated by the plain mean of the rows in
    kde_take (positions drawn with probability w_i, repeats counted) when given, else by the uniform
    rows weighted by w renormalised within the class batch;
    fairdd: sum_c red_g ||mean phi(real_{c,g}) - mean phi(S_c)||^2 over groups present (every row
    but the kde_only rows), red = mean (our default) or sum.
    """
    out = {}
    d = real.shape[1]
    not_kde = torch.ones_like(uniform) if kde_only is None else ~kde_only
    for method, feats in syn.items():
        mu_syn = feats.view(num_classes, -1, d).mean(1)
        if method == "vanilla":
            out[method] = ((_class_mean(real[uniform], real_labels[uniform], num_classes) - mu_syn) ** 2).sum()
        elif method == "kde" and kde_take is not None:
            out[method] = ((_class_mean(real[kde_take], real_labels[kde_take], num_classes) - mu_syn) ** 2).sum()
        elif method == "kde":
            if weights is None:
                raise InvalidArgument("the kde method needs per-sample weights", "pass weights (density.training_weights)")
            w = _within_class(weights[uniform], real_labels[uniform], num_classes)
            target = torch.zeros(num_classes, d, device=real.device, dtype=real.dtype)
            target.index_add_(0, real_labels[uniform], real[uniform] * w[:, None])
            out[method] = ((target - mu_syn) ** 2).sum()
        elif method == "fairdd":
            key = real_labels[not_kde] * num_groups + groups[not_kde]
            count = torch.bincount(key, minlength=num_classes * num_groups).to(real.dtype)
            sums = torch.zeros(num_classes * num_groups, d, device=real.device, dtype=real.dtype)
            sums.index_add_(0, key, real[not_kde])
            mu_g = (sums / count.clamp_min(1)[:, None]).view(num_classes, num_groups, d)
            present = (count > 0).view(num_classes, num_groups).to(real.dtype)
            per = ((mu_g - mu_syn[:, None, :]) ** 2).sum(-1) * present   # absent groups contribute 0
            if reduction == "mean":
                per = per / present.sum(1, keepdim=True).clamp_min(1)
            out[method] = per.sum()
        else:
            raise InvalidArgument(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    return out


def _class_mean(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    sums = torch.zeros(num_classes, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, labels, x)
    return sums / torch.bincount(labels, minlength=num_classes).clamp_min(1).to(x.dtype)[:, None]


def _within_class(w: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Renormalise weights to sum 1 within each class of the batch (uniform if a class sums to 0)."""
    w = w.to(torch.float32)
    tot = torch.zeros(num_classes, device=w.device).index_add_(0, labels, w)
    cnt = torch.bincount(labels, minlength=num_classes).to(w.dtype)
    zero = tot[labels] <= 0
    return torch.where(zero, 1.0 / cnt[labels].clamp_min(1), w / tot[labels].clamp_min(1e-30))


def match_distance(gw_syn: Sequence[torch.Tensor], gw_real: Sequence[torch.Tensor]) -> torch.Tensor:
    """DC distance: sum over weight tensors and output rows of 1 - cosine; 1-D params (biases, norms) ignored."""
    total = gw_syn[0].new_zeros(())
    for gs, gr in zip(gw_syn, gw_real):
        if gs.dim() == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


# --------------------------------------------------------------------------- RNG and networks

def _gen(seed: int, iteration: int, stream: int) -> torch.Generator:
    """A CPU generator determined by (seed, iteration, stream): resume needs no RNG state."""
    h = hashlib.sha256(f"ddaudit-distill:{seed}:{iteration}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2 ** 63 - 1))


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor cores); contiguous on CPU, where channels_last ran this ConvNet's
    forward and backward 1.1-2x slower (bench/bench_distill.py, docs/DISTILL.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def init_network(net: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default initialisation, drawn from `gen` (not the global RNG)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = torch.empty(m.weight.shape)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    bound = 1 / math.sqrt(w[0].numel())
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=gen))
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                m.weight.fill_(1)
                m.bias.fill_(0)
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()


# --------------------------------------------------------------------------- the run

class _Sampler:
    """Per-class (and per class x attribute) index lists; draws the shared real batch."""

    def __init__(self, train: BiasedSplit, batch_real: int, group_min: int, fairdd: bool,
                 kde_weights: torch.Tensor | None = None, kde_batch: int = 0):
        self.num_classes, self.num_groups = train.num_classes, max(train.num_attributes, 1)
        self.by_class = [torch.nonzero(train.targets == c).flatten() for c in range(self.num_classes)]
        self.by_group = [[torch.nonzero((train.targets == c) & (train.attributes == g)).flatten()
                          for g in range(self.num_groups)] for c in range(self.num_classes)]
        self.batch_real, self.group_min, self.fairdd = batch_real, group_min, fairdd
        self.attributes, self.targets = train.attributes, train.targets
        # importance sampling for kde: per-class probabilities, computed once (None = no kde rows)
        self.kde_probs = None if kde_weights is None else [_draw_probs(kde_weights[p]) for p in self.by_class]
        self.kde_batch = kde_batch
        self.gen_kde: torch.Generator | None = None

    def draw(self, gen: torch.Generator, gen_groups: torch.Generator, gen_kde: torch.Generator | None = None
             ) -> "_Draw":
        """A uniform batch per class, FairDD's group top-up rows, then the kde draws (probability
        proportional to the weights). Own RNG streams: vanilla's batch is the same whichever methods
        run beside it. A kde draw of an image already in the batch reuses its row (DSA parameters are
        per class, so its embedding is the same), and repeated draws share one row: only images new
        to the batch add real forwards. `kde_take` lists the drawn rows with multiplicity."""
        idx, labels = [], []
        for c, pool in enumerate(self.by_class):
            take = pool[torch.randperm(len(pool), generator=gen)[:self.batch_real]]
            idx.append(take)
            labels.append(torch.full((len(take),), c, dtype=torch.long))
        n_uniform = sum(len(t) for t in idx)
        if self.fairdd and self.group_min > 0:
            # rare groups are topped up from their own pool (own RNG stream: vanilla's batch is unchanged)
            for c in range(self.num_classes):
                have = torch.bincount(self.attributes[idx[c]], minlength=self.num_groups)
                for g, pool in enumerate(self.by_group[c]):
                    need = min(self.group_min, len(pool)) - int(have[g])
                    if need <= 0:
                        continue
                    rest = pool[~torch.isin(pool, idx[c])]
                    extra = rest[torch.randperm(len(rest), generator=gen_groups)[:need]]
                    idx.append(extra)
                    labels.append(torch.full((len(extra),), c, dtype=torch.long))
        n_before_kde = sum(len(t) for t in idx)
        kde_take = None
        if self.kde_probs is not None and gen_kde is not None:
            draws = []
            for pool, p in zip(self.by_class, self.kde_probs):
                draws.append(pool[torch.multinomial(p, self.kde_batch, replacement=True, generator=gen_kde)])
            drawn = torch.cat(draws)
            have = torch.cat(idx)
            row_of = torch.full((len(self.targets),), -1, dtype=torch.long)
            row_of[have] = torch.arange(len(have))
            new = torch.unique(drawn)
            new = new[row_of[new] < 0]                 # images not yet in the batch, once each
            row_of[new] = torch.arange(n_before_kde, n_before_kde + len(new))
            idx.append(new)
            labels.append(self.targets[new])
            kde_take = row_of[drawn]
        index, lab = torch.cat(idx), torch.cat(labels)
        rows = torch.arange(len(index))
        return _Draw(index, lab, rows < n_uniform, rows >= n_before_kde, kde_take)


def _draw_probs(weights: torch.Tensor) -> torch.Tensor:
    """Sampling probabilities proportional to a class's KDE weights (negatives as 0; all zero: uniform)."""
    p = weights.double().clamp_min(0)
    return p if float(p.sum()) > 0 else torch.ones_like(p)


@dataclass
class _Draw:
    """One iteration's real rows: training-split indices, labels, the uniform part, the rows that
    only kde uses, and kde's draws as row positions with multiplicity (None without kde rows)."""

    index: torch.Tensor
    labels: torch.Tensor
    uniform: torch.Tensor
    kde_only: torch.Tensor
    kde_take: torch.Tensor | None


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


def check_ipc(train: BiasedSplit, ipc: int) -> None:
    """IPC must not exceed the smallest class of the training split (InvalidArgument with the range)."""
    smallest = int(torch.bincount(train.targets, minlength=train.num_classes).min())
    if ipc > smallest:
        raise InvalidArgument(f"IPC {ipc} exceeds the smallest class of {train.dataset} ({smallest} images)",
                              f"use --ipc between 1 and {smallest}")


def _check_inputs(train: BiasedSplit, cfg: DistillConfig, methods: tuple[str, ...],
                  weights: torch.Tensor | None) -> None:
    check_config(cfg)
    if len(train) == 0:
        raise InvalidArgument("the training split is empty", "load a dataset with images")
    check_ipc(train, cfg.ipc)
    if "kde" in methods:
        if weights is None:
            raise InvalidArgument("the kde method needs per-sample KDE weights",
                                  "compute them with engine.density.training_weights, or drop kde")
        if weights.shape != (len(train),) or not torch.isfinite(weights).all() or (weights < 0).any():
            raise InvalidArgument(f"KDE weights must be {len(train)} finite non-negative numbers",
                                  "recompute them for this training split")
        per_class = torch.zeros(train.num_classes, dtype=torch.float64).index_add_(
            0, train.targets, weights.double())
        if (per_class <= 0).any():
            raise InvalidArgument("KDE weights sum to zero within a class", "recompute them (temperature too low?)")


def _fingerprint(train: BiasedSplit, weights: torch.Tensor | None, methods: tuple[str, ...],
                 cfg: DistillConfig) -> str:
    h = hashlib.sha256()
    for t in (train.images, train.targets, train.attributes) + ((weights.float(),) if weights is not None else ()):
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return cache.cache_key(data=h.hexdigest(), methods=methods, cfg=cfg.key(), version=DISTILL_VERSION)


def _init_images(train: BiasedSplit, cfg: DistillConfig, mean: torch.Tensor, std: torch.Tensor,
                 methods: Sequence[str] = ("vanilla",), weights: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """Each method's starting synthetic set (class-major, ipc per class), standardised.

    init "method": vanilla starts from random real images, kde from images drawn with probability
    w_i (no bias labels), fairdd from attribute-balanced images (bias labels, as FairDD itself).
    Why: with 95% aligned images in the start, 300 CPU iterations recolour only part of them, so a
    shared random start holds every method near the biased distribution (docs/DISTILL.md).
    """
    kind = {m: cfg.init for m in methods}
    if cfg.init == "method":
        kind = {m: {"vanilla": "real", "kde": "weighted", "fairdd": "balanced"}[m] for m in methods}
    cache_by_kind: dict[str, torch.Tensor] = {}
    for k in dict.fromkeys(kind.values()):
        if k == "weighted" and weights is None:
            raise InvalidArgument("the kde initialisation needs per-sample KDE weights", "pass weights, or init='real'")
        cache_by_kind[k] = _start(train, cfg, k, mean, std, weights)
    return {m: cache_by_kind[kind[m]] for m in methods}


def _start(train: BiasedSplit, cfg: DistillConfig, kind: str, mean: torch.Tensor, std: torch.Tensor,
           weights: torch.Tensor | None) -> torch.Tensor:
    """One starting set: noise, random real, real drawn with probability w_i, or attribute-balanced real."""
    gen = _gen(cfg.seed, -1, _STREAM_INIT)  # the same stream for every kind: vanilla's start never changes
    c, h, w = train.images.shape[1:]
    if kind == "noise":
        return torch.randn(train.num_classes * cfg.ipc, c, h, w, generator=gen)
    picks = []
    for k in range(train.num_classes):
        pool = torch.nonzero(train.targets == k).flatten()
        if kind == "real":
            picks.append(pool[torch.randperm(len(pool), generator=gen)[:cfg.ipc]])
            continue
        if kind == "weighted":  # without replacement: ipc distinct images, dense clusters rarely picked
            p = _draw_probs(weights[pool])
            n_pos = int((p > 0).sum())
            take = torch.multinomial(p, min(cfg.ipc, n_pos), replacement=False, generator=gen)
            if len(take) < cfg.ipc:  # fewer positive weights than ipc: fill with random others
                rest = torch.nonzero(p <= 0).flatten()
                take = torch.cat([take, rest[torch.randperm(len(rest), generator=gen)[:cfg.ipc - len(take)]]])
            picks.append(pool[take])
            continue
        # balanced: round-robin over the class's attribute groups, random image within each group
        groups = [pool[train.attributes[pool] == g] for g in torch.unique(train.attributes[pool]).tolist()]
        groups = [g[torch.randperm(len(g), generator=gen)] for g in groups]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < cfg.ipc:
            for g in groups:
                if depth < len(g) and len(chosen) < cfg.ipc:
                    chosen.append(int(g[depth]))
            depth += 1
        picks.append(torch.tensor(chosen))
    x = train.images[torch.cat(picks)].float() / 255.0
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def distill(train: BiasedSplit, cfg: DistillConfig, methods: Sequence[str], weights: torch.Tensor | None = None,
            progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
            checkpoint_dir: str | Path | None = None) -> dict[str, SyntheticSet]:
    """Distill `train` with every method side by side; resumes from checkpoint_dir if it holds a checkpoint."""
    methods = check_methods(methods)
    _check_inputs(train, cfg, methods, weights)
    device = pick_device(cfg.device)
    fmt = memory_format(device)
    t_start = time.perf_counter()

    # normalisation: per-channel statistics of the real training images
    mean, std = channel_stats(train.images)
    spec = REGISTRY.get(train.dataset)
    dsa = DSA(cfg.dsa, flip=not (spec and spec.digits)) if cfg.dsa != "none" else None

    nc, ipc = train.num_classes, cfg.ipc
    c, h, w = train.images.shape[1:]
    net_cfg = ConvNetConfig(channels=c, num_classes=nc, image_size=h, width=cfg.width, depth=cfg.depth, norm=cfg.norm)
    images_dev = train.images.to(device)
    mean_d, std_d = mean.to(device).view(1, -1, 1, 1), std.to(device).view(1, -1, 1, 1)
    attrs_dev, w_dev = train.attributes.to(device), (weights.float().to(device) if weights is not None else None)
    importance = "kde" in methods and cfg.kde_sampling == "importance"
    sampler = _Sampler(train, cfg.batch_real, cfg.group_min, "fairdd" in methods,
                       kde_weights=weights if importance else None, kde_batch=cfg.kde_batch)
    syn_labels = torch.arange(nc).repeat_interleave(ipc)
    syn_labels_d = syn_labels.to(device)

    starts = _init_images(train, cfg, mean, std, methods, weights)
    syn = {m: starts[m].clone().to(device).requires_grad_(True) for m in methods}
    opts = {m: torch.optim.SGD([syn[m]], lr=cfg.lr_img, momentum=cfg.momentum) for m in methods}
    log_every = max(1, cfg.iterations // 200)
    history: dict[str, list[tuple[int, float]]] = {m: [] for m in methods}
    acc = torch.zeros(len(methods), dtype=torch.float64, device=device)  # loss sum since the last log point
    acc_n, it0, seconds_before = 0, 0, 0.0

    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    fp = _fingerprint(train, weights, methods, cfg) if ckpt is not None else ""
    if ckpt is not None and ckpt.exists():
        tensors, meta = cache.load_tensors(ckpt)
        if meta.get("fingerprint") != fp:
            raise InvalidArgument(f"{ckpt} belongs to another run (different data, methods or settings)",
                                  "use a new checkpoint folder, or delete this one to start over")
        it0, acc_n, seconds_before = int(meta["iteration"]), int(meta["acc_n"]), float(meta["seconds"])
        history = {m: [tuple(x) for x in meta["history"][m]] for m in methods}
        acc = tensors["loss_acc"].to(device)
        for m in methods:
            with torch.no_grad():
                syn[m].copy_(tensors[f"{m}.images"].to(device))
            if f"{m}.momentum" in tensors:
                opts[m].state[syn[m]]["momentum_buffer"] = tensors[f"{m}.momentum"].to(device).clone()

    def save_checkpoint(done: int) -> None:
        if ckpt is None:
            return
        tensors = {"loss_acc": acc}
        for m in methods:
            tensors[f"{m}.images"] = syn[m].detach()
            buf = opts[m].state.get(syn[m], {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"{m}.momentum"] = buf
        cache.save_tensors(ckpt, tensors, {"fingerprint": fp, "iteration": done, "acc_n": acc_n,
                                           "seconds": seconds_before + time.perf_counter() - t_start,
                                           "history": history, "config": cfg.key(), "methods": list(methods)})

    net = ConvNet(net_cfg).to(device).to(memory_format=fmt)

    def real_batch(gen: torch.Generator, gen_groups: torch.Generator, params: DSAParams | None) -> _Batch:
        d = sampler.draw(gen, gen_groups, sampler.gen_kde)
        index, lab, uniform = d.index, d.labels, d.uniform
        index_d, lab_d = index.to(device), lab.to(device)
        x = (images_dev[index_d].float() / 255.0 - mean_d) / std_d
        if params is not None:
            x = dsa.apply(x, params.take(lab_d))
        return _Batch(x.contiguous(memory_format=fmt), index, lab, uniform, train.attributes[index],
                      lab_d, uniform.to(device), attrs_dev[index_d],
                      w_dev[index_d] if w_dev is not None else None,
                      d.kde_only if importance else None, d.kde_only.to(device) if importance else None,
                      d.kde_take if importance else None, d.kde_take.to(device) if importance else None)

    t_loop = time.perf_counter()
    for it in range(it0, cfg.iterations):
        if should_stop is not None and should_stop():
            save_checkpoint(it)
            raise Cancelled(f"distillation cancelled at iteration {it} of {cfg.iterations}",
                            "run again with the same checkpoint folder to resume" if ckpt else None)
        gen, gen_groups = _gen(cfg.seed, it, _STREAM_MAIN), _gen(cfg.seed, it, _STREAM_GROUPS)
        sampler.gen_kde = _gen(cfg.seed, it, _STREAM_KDE)  # per iteration: resume stays exact
        init_network(net, gen)
        if cfg.algorithm == "dm":
            losses = _dm_step(net, syn, opts, gen, gen_groups, real_batch, dsa, syn_labels_d, nc,
                              sampler.num_groups, cfg, device)
        else:
            losses = _dc_step(net, syn, opts, gen, gen_groups, real_batch, dsa, syn_labels_d, nc,
                              sampler.num_groups, cfg, device, it)
        acc += torch.stack([losses[m].detach().double() for m in methods])
        acc_n += 1
        done = it + 1
        if done % log_every == 0 or done == cfg.iterations:
            vals = (acc / max(acc_n, 1)).tolist()
            for m, v in zip(methods, vals):
                history[m].append((done, float(v)))
            acc.zero_()
            acc_n = 0
        if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            save_checkpoint(done)
        if progress is not None:
            elapsed = time.perf_counter() - t_loop
            rate = elapsed / (done - it0)
            progress({"stage": "distill", "step": done, "total": cfg.iterations, "algorithm": cfg.algorithm,
                      "losses": {m: history[m][-1][1] if history[m] else None for m in methods},
                      "elapsed": seconds_before + time.perf_counter() - t_start,
                      "eta": rate * (cfg.iterations - done)})
    seconds = seconds_before + time.perf_counter() - t_start
    if ckpt is not None:
        save_checkpoint(cfg.iterations)
    meta = {"algorithm": cfg.algorithm, "ipc": ipc, "iterations": cfg.iterations, "dataset": train.dataset,
            "conflict_ratio": train.meta.get("conflict_ratio"), "class_names": list(train.class_names),
            "config": cfg.key(), "methods_side_by_side": list(methods), "version": DISTILL_VERSION}
    return {m: SyntheticSet(m, syn[m].detach().float().cpu().contiguous(), syn_labels.clone(), mean, std,
                            history[m][-1][1] if history[m] else float("nan"), seconds, history[m], dict(meta))
            for m in methods}


@dataclass
class _Batch:
    """The shared real batch: augmented images on the device, bookkeeping on CPU and device."""

    x: torch.Tensor
    index: torch.Tensor      # rows of the training split (CPU)
    labels: torch.Tensor     # CPU
    uniform: torch.Tensor    # CPU bool: the uniform per-class part (vanilla, kde); the rest is FairDD's top-up
    groups: torch.Tensor     # CPU attributes
    labels_d: torch.Tensor
    uniform_d: torch.Tensor
    groups_d: torch.Tensor
    weights_d: torch.Tensor | None
    kde_only: torch.Tensor | None = None    # CPU bool: rows that only kde uses (importance sampling)
    kde_only_d: torch.Tensor | None = None
    kde_take: torch.Tensor | None = None    # CPU: kde's draws (probability w_i) as row positions, with repeats
    kde_take_d: torch.Tensor | None = None


def _dm_step(net, syn, opts, gen, gen_groups, real_batch, dsa, syn_labels, nc, ng, cfg, device):
    """One DM iteration for every method: shared real forward (no autograd), one synthetic forward."""
    net.requires_grad_(False)
    net.train()
    params = dsa.sample(nc, gen) if dsa is not None else None  # one parameter set per class (siamese)
    b = real_batch(gen, gen_groups, params)
    with torch.no_grad(), autocast(device):
        real = net.embed_rows(b.x).float()
    methods = list(syn)
    if cfg.norm == "batchnorm":  # batch statistics must not mix methods
        feats = {}
        for m in methods:
            xs = syn[m] if params is None else dsa.apply(syn[m], params.take(syn_labels))
            with autocast(device):
                feats[m] = net.embed(xs.contiguous(memory_format=memory_format(device))).float()  # whole: batch stats
    else:  # per-sample norm: one forward of every method's images together
        xs = torch.cat([syn[m] for m in methods])
        if params is not None:
            xs = dsa.apply(xs, params.take(syn_labels.repeat(len(methods))))
        with autocast(device):
            out = net.embed_rows(xs.contiguous(memory_format=memory_format(device))).float()
        feats = dict(zip(methods, out.split(len(syn_labels))))
    losses = dm_losses(real, b.labels_d, b.uniform_d, b.groups_d, feats, nc, ng, weights=b.weights_d,
                       reduction=cfg.fairdd_reduction, kde_only=b.kde_only_d, kde_take=b.kde_take_d)
    for m in methods:
        opts[m].zero_grad(set_to_none=True)
    torch.stack([losses[m] for m in methods]).sum().backward()
    for m in methods:
        opts[m].step()
    return losses


def _real_grad(net: nn.Module, x: torch.Tensor, c: int, w: torch.Tensor | None, device) -> list[torch.Tensor]:
    """Gradient of the (weighted) cross-entropy of real images of class c w.r.t. the weights."""
    with autocast(device):
        logits = net(x).float()
    target = torch.full((len(x),), c, device=x.device, dtype=torch.long)
    if w is None:
        loss = F.cross_entropy(logits, target)
    else:
        loss = (F.cross_entropy(logits, target, reduction="none") * w).sum()
    return [g.detach() for g in torch.autograd.grad(loss, list(net.parameters()))]


def dc_class_loss(net: nn.Module, xs: torch.Tensor, c: int, x_real: torch.Tensor, method: str,
                  groups: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                  reduction: str = "mean", device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Gradient-matching loss of class c for one method (xs: the class's synthetic images, augmented).

    vanilla: D(g_syn, g_real); kde: the real gradient of the weighted CE (weights renormalised
    over the batch); fairdd: red_g D(g_syn, g_real_g) over the attribute groups present.
    """
    with autocast(device):
        logits = net(xs).float()
    loss_s = F.cross_entropy(logits, torch.full((len(xs),), c, device=xs.device, dtype=torch.long))
    gw_syn = torch.autograd.grad(loss_s, list(net.parameters()), create_graph=True)
    if method == "vanilla":
        return match_distance(gw_syn, _real_grad(net, x_real, c, None, device))
    if method == "kde" and weights is None:  # importance-sampled rows: their plain gradient
        return match_distance(gw_syn, _real_grad(net, x_real, c, None, device))
    if method == "kde":
        w = weights.float()
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(w))
        return match_distance(gw_syn, _real_grad(net, x_real, c, w, device))
    if method == "fairdd":
        dists = [match_distance(gw_syn, _real_grad(net, x_real[groups == g], c, None, device))
                 for g in torch.unique(groups).tolist()]
        total = torch.stack(dists).sum()
        return total / len(dists) if reduction == "mean" else total
    raise InvalidArgument(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")


def _dc_step(net, syn, opts, gen, gen_groups, real_batch, dsa, syn_labels, nc, ng, cfg, device, it):
    """One DC outer iteration: per-method copies of the shared random network, matched and trained in turn.

    The network is trained on each method's own synthetic set between matching steps (DC), so
    the copies diverge after the first step and their real gradients cannot be shared; the
    random init, the real batches and the DSA parameters are shared.
    """
    outer, inner = cfg.loops()
    methods = list(syn)
    net.requires_grad_(True)
    net.train()
    nets = {m: copy.deepcopy(net) for m in methods}
    net_opts = {m: torch.optim.SGD(nets[m].parameters(), lr=cfg.lr_net) for m in methods}
    inner_gens = {m: _gen(cfg.seed, it, _STREAM_INNER + METHODS.index(m)) for m in methods}
    totals = {m: torch.zeros((), device=device) for m in methods}
    ipc = cfg.ipc
    for ol in range(outer):
        params = dsa.sample(nc, gen) if dsa is not None else None
        b = real_batch(gen, gen_groups, params)
        # fairdd: the uniform rows and the top-up, not the rows only kde uses; vanilla (and weighted kde): uniform
        fairdd_rows = ~b.kde_only if b.kde_only is not None else torch.ones_like(b.uniform)
        for m in methods:
            loss = torch.zeros((), device=device)
            for c in range(nc):
                importance = m == "kde" and b.kde_take is not None
                if importance:  # kde's draws of class c, repeats included
                    rows_d = b.kde_take[b.labels[b.kde_take] == c].to(device)
                else:
                    rows = (b.labels == c) & (fairdd_rows if m == "fairdd" else b.uniform)
                    rows_d = torch.nonzero(rows).flatten().to(device)
                xs = syn[m][c * ipc:(c + 1) * ipc]
                if params is not None:
                    xs = dsa.apply(xs, params.take(torch.full((ipc,), c, device=device)))
                loss = loss + dc_class_loss(
                    nets[m], xs.contiguous(memory_format=memory_format(device)), c, b.x[rows_d], m,
                    groups=None if importance else b.groups[rows].to(device),
                    weights=b.weights_d[rows_d] if m == "kde" and not importance else None,
                    reduction=cfg.fairdd_reduction, device=device)
            opts[m].zero_grad(set_to_none=True)
            loss.backward()
            opts[m].step()
            totals[m] += loss.detach()
        if ol == outer - 1:
            break
        for m in methods:  # train the method's network on its own synthetic set (DSA on, as in DC/DSA)
            data = syn[m].detach()
            g = inner_gens[m]
            for _ in range(inner):
                perm = torch.randperm(len(data), generator=g).to(device)
                for s in range(0, len(data), cfg.batch_train):
                    sel = perm[s:s + cfg.batch_train]
                    xb = data[sel] if dsa is None else dsa.apply(data[sel], dsa.sample(len(sel), g))
                    with autocast(device):
                        out = nets[m](xb.contiguous(memory_format=memory_format(device))).float()
                    net_opts[m].zero_grad(set_to_none=True)
                    F.cross_entropy(out, syn_labels[sel]).backward()
                    net_opts[m].step()
    return {m: totals[m] / outer for m in methods}
