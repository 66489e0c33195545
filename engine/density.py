"""Per-class Gaussian KDE on embeddings, inverse-density weights and their diagnostics (docs/KDE.md).

f_i = mean_{j in class(i)} exp(-||z_i - z_j||^2 / (2 s2))   (self term included, as scikit-learn does)
w_i = f_i^(-1/T) / sum_{j in class(i)} f_j^(-1/T)          (weights sum to 1 within each class)

Exact: every pair of a class is visited, block by block (no N x N matrix), with matmul-based
squared distances; everything that can underflow is kept in log space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InvalidArgument
from .progress import Progress, report

DEFAULT_CHUNK = 512  # rows per strip
COL_CHUNK = 16384  # columns per block: a strip block is at most 512 x 16384 floats (32 MiB)
SUGGEST_SCALE = 0.5  # s2 = median within-class squared distance / 2: a typical pair scores exp(-1) (docs/KDE.md)
SUGGEST_MAX_PER_CLASS = 1000  # rows per class used by the heuristic (seeded subsample)


# --------------------------------------------------------------------------- validation

def _check_positive(value: Any, name: str, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} {value!r} is not a number", fix) from None
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        raise InvalidArgument(f"{name} must be a finite number > 0, got {value!r}", fix)
    return v


# on L2-normalised embeddings squared distances lie in [0, 4]: below 1e-6 every sample is its own bump
# (the weights are noise), above 1e4 the kernel is flat (uniform weights); both are refused before any work
KERNEL_VARIANCE_RANGE = (1e-6, 1e4)


def check_kernel_variance(s2: Any) -> float:
    """A kernel variance is a finite number in KERNEL_VARIANCE_RANGE."""
    fix = "give a number such as 0.1 (between 1e-6 and 1e4), or leave it out for the suggested value"
    v = _check_positive(s2, "kernel variance", fix)
    lo, hi = KERNEL_VARIANCE_RANGE
    if not lo <= v <= hi:
        raise InvalidArgument(f"kernel variance {v:.3g} is outside [{lo:g}, {hi:g}]", fix)
    return v



def check_temperature(t: Any) -> float:
    """A temperature is a finite number > 0 (1 = plain inverse density)."""
    return _check_positive(t, "temperature", "give a positive number; 1 is plain inverse density, "
                                             "larger flattens the weights")


def _check_inputs(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(z, torch.Tensor):
        z = torch.as_tensor(np.asarray(z))
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if z.dim() != 2 or z.shape[0] == 0:
        raise InvalidArgument(f"embeddings must be a non-empty N x D matrix, got shape {tuple(z.shape)}",
                              "pass one embedding row per sample")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise InvalidArgument(f"{z.shape[0]} embeddings but labels of shape {tuple(labels.shape)}",
                              "pass exactly one class label per embedding row")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise InvalidArgument("class labels must be integers", "pass the integer class of each sample")
    if not z.dtype.is_floating_point:
        z = z.float()
    if not bool(torch.isfinite(z).all()):
        raise InvalidArgument("embeddings contain NaN or infinite values",
                              "recompute the embeddings (the surrogate model may have diverged)")
    return z, labels.to(z.device)


# --------------------------------------------------------------------------- KDE

def _class_log_density(x: torch.Tensor, s2: float, chunk: int) -> torch.Tensor:
    """log mean_j exp(-||x_i - x_j||^2 / (2 s2)) for the rows of one class, strip by strip."""
    n = x.shape[0]
    # Centring leaves distances unchanged but shrinks the norms, so |a|^2 + |b|^2 - 2ab cancels less.
    x = x - x.mean(0, keepdim=True)
    sq = (x * x).sum(1, keepdim=True)
    ones = torch.ones_like(sq)
    # One matmul gives the scaled log-kernel: [a, |a|^2, 1] . [-2b, 1, |b|^2] = ||a - b||^2.
    left = torch.cat([x, sq, ones], 1).mul_(-0.5 / s2)
    right = torch.cat([-2.0 * x, ones, sq], 1)
    # exp of anything below this is denormal (slow on CPU) and far below the resolution of a sum >= 1
    floor = -87.0 if x.dtype == torch.float32 else -708.0
    use_numpy = x.device.type == "cpu"
    acc = torch.zeros(n, dtype=x.dtype, device=x.device)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        # The kernel matrix is symmetric: strip i0 only visits columns >= i0; its row sums go to its own
        # rows and its column sums (beyond its own square block) to the later rows.
        for j0 in range(i0, n, COL_CHUNK):
            k = left[i0:i1] @ right[j0:j0 + COL_CHUNK].T
            k.clamp_(min=floor, max=0.0)  # rounding can push a distance below 0: the kernel is <= 1
            # logsumexp with its shift known exactly: the self term exp(0) = 1 is every row's maximum,
            # so the sum is >= 1 (no overflow of any term, no underflow of the total).
            if use_numpy:  # numpy's SIMD exp is about twice as fast as torch's on CPU; same buffer
                kn = k.numpy()
                np.exp(kn, out=kn)
            else:
                k.exp_()
            if j0 == i0:
                k.diagonal().fill_(1.0)  # the self terms, exactly
            acc[i0:i1] += k.sum(1)
            lo = max(j0, i1)  # columns of later strips only: the own square block is already in the rows
            if lo < j0 + k.shape[1]:
                acc[lo:j0 + k.shape[1]] += k[:, lo - j0:].sum(0)
    return acc.log_() - math.log(n)


def kde_log_density(z: torch.Tensor, labels: torch.Tensor, kernel_variance: float,
                    chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Per-class log f_i = log mean_j exp(-||z_i - z_j||^2 / (2 s2)), exact, on z's device and dtype."""
    s2 = _check_positive(kernel_variance, "kernel variance", "give a positive number")  # user bounds: plan()
    z, labels = _check_inputs(z, labels)
    if int(chunk_size) < 1:
        raise InvalidArgument(f"chunk size {chunk_size} must be >= 1", "use the default")
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        out[idx] = _class_log_density(z[idx], s2, int(chunk_size))
    return out


def weights_from_log_density(log_f: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """w ∝ f^(-1/T) normalised per class, in float64 log space; returned as float32 (the temperature
    step alone: a temperature change reuses kde_log_density's O(n^2) result)."""
    t = check_temperature(temperature)
    labels = torch.as_tensor(labels)
    logw = -log_f.double() / t
    return _normalise_per_class(logw, labels)


def _normalise_per_class(logw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """exp(logw) normalised to sum 1 within each class."""
    out = torch.empty_like(logw)
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        lw = logw[idx]
        out[idx] = (lw - torch.logsumexp(lw, 0)).exp()
    return out.float()


def kde_weights(z: torch.Tensor, labels: torch.Tensor, kernel_variance: float,
                temperature: float = 1.0) -> torch.Tensor:
    """Inverse-density weights w_i ∝ f_i^(-1/T), summing to 1 within each class."""
    t = check_temperature(temperature)
    log_f = kde_log_density(z, labels, kernel_variance)
    _, labels = _check_inputs(z, labels)
    return weights_from_log_density(log_f, labels, t)


# --------------------------------------------------------------------------- diagnostics

def _ess(w: torch.Tensor) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2."""
    w = w.double()
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


def weight_diagnostics(weights: torch.Tensor, labels: torch.Tensor, aligned: torch.Tensor) -> dict:
    """Conflict share by count vs by weight, per class and overall, and effective sample sizes."""
    w = torch.as_tensor(weights).detach().cpu().double()
    labels = torch.as_tensor(labels).detach().cpu().long()
    conf = ~torch.as_tensor(aligned).detach().cpu().bool()
    if not (len(w) == len(labels) == len(conf)):
        raise InvalidArgument(f"lengths differ: {len(w)} weights, {len(labels)} labels, {len(conf)} aligned flags",
                              "pass one weight, label and aligned flag per sample")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InvalidArgument("weights must be finite and non-negative", "recompute the weights")
    total = float(w.sum())
    per_class, ess_per_class = [], []
    for c in torch.unique(labels).tolist():
        m = labels == c
        wc = w[m]
        per_class.append({"class": int(c), "conflict_fraction": float(conf[m].double().mean()),
                          "conflict_weight_mass": float(wc[conf[m]].sum() / wc.sum()) if wc.sum() > 0 else 0.0})
        ess_per_class.append(_ess(wc))
    return {
        "n": len(w), "n_conflicting": int(conf.sum()),
        "conflict_fraction": float(conf.double().mean()) if len(w) else 0.0,
        "conflict_weight_mass": float(w[conf].sum() / total) if total > 0 else 0.0,
        # sum of the per-class Kish ESS: N for uniform weights, whatever the class sizes
        "effective_sample_size": float(sum(ess_per_class)),
        "effective_sample_size_per_class": ess_per_class,
        "per_class": per_class,
    }


# --------------------------------------------------------------------------- heuristic

def suggest_kernel_variance(z: torch.Tensor, labels: torch.Tensor) -> float:
    """s2 = SUGGEST_SCALE x the median within-class squared distance (seeded subsample; docs/KDE.md)."""
    z, labels = _check_inputs(z, labels)
    gen = torch.Generator().manual_seed(0)
    meds = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten().cpu()
        if len(idx) < 2:
            continue
        if len(idx) > SUGGEST_MAX_PER_CLASS:
            idx = idx[torch.randperm(len(idx), generator=gen)[:SUGGEST_MAX_PER_CLASS]]
        x = z[idx.to(z.device)].double()
        d = torch.cdist(x, x).pow(2)
        iu = torch.triu_indices(len(idx), len(idx), offset=1, device=d.device)
        meds.append(d[iu[0], iu[1]])
    if not meds:
        raise InvalidArgument("every class has fewer than 2 samples", "a KDE needs at least 2 samples per class")
    med = float(torch.cat(meds).median())
    if not med > 0:
        raise InvalidArgument("all embeddings within each class coincide (median distance 0)",
                              "give --kernel-variance explicitly or check the embeddings")
    return SUGGEST_SCALE * med


# --------------------------------------------------------------------------- one call for distill / UI

@dataclass
class WeightResult:
    """Weights and what they came from (all tensors on CPU, in the order of the training split)."""

    weights: torch.Tensor          # float32 [N], sums to 1 within each class
    log_density: torch.Tensor      # float32 [N], log f_i
    kernel_variance: float
    temperature: float
    diagnostics: dict = field(default_factory=dict)
    embeddings: torch.Tensor | None = None  # float32 [N, D], L2-normalised


def weigh(log_f: torch.Tensor, labels: torch.Tensor, aligned: torch.Tensor,
          temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """log-densities -> inverse-density weights (per class, w ∝ f^(-1/T)) and their diagnostics: the one
    composition behind training_weights, the Embeddings page's sliders and the report's histogram."""
    w = weights_from_log_density(log_f, labels, temperature)
    return w, weight_diagnostics(w, labels, aligned)


def training_weights(train, *, kernel_variance: float | None = None, temperature: float = 1.0,
                     preset: str = "quick", seed: int = 0, device=None,
                     progress: Progress | None = None) -> WeightResult:
    """SupCon embeddings of `train` (cached) -> per-class KDE -> inverse-density weights + diagnostics."""
    from . import embed
    from .device import pick_device
    t = check_temperature(temperature)
    s2 = None if kernel_variance is None else check_kernel_variance(kernel_variance)
    embed.get_preset(preset)  # validate before any heavy work
    dev = device if isinstance(device, torch.device) else pick_device(device)
    z = embed.get_embeddings(train, preset=preset, seed=seed, device=dev, progress=progress)
    labels = train.targets
    if s2 is None:
        s2 = suggest_kernel_variance(z, labels)
    report(progress, "kde", 0, 1)
    log_f = kde_log_density(z.to(dev), labels.to(dev), s2).cpu()
    w, diag = weigh(log_f, labels, train.aligned, t)
    report(progress, "kde", 1, 1)
    return WeightResult(w, log_f.float(), float(s2), t, diag, z)
