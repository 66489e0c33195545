"""Dataset distillation (DM, DC) with every registered method side by side.

    from engine import distill as D
    cfg = D.config_for("quick", "dm", ipc=10)
    sets = D.distill(train, cfg, D.METHODS, weights=w)      # {method: SyntheticSet}
    D.save_synthetic(sets, out_dir); D.load_synthetic(out_dir / "kde")

Layout: config (DistillConfig, presets), methods (the registry: one entry per method), sampler
(the shared real batch, RNG streams), starts (initial sets), loop (the side-by-side loop,
checkpoints), sets (SyntheticSet, files).
"""
from __future__ import annotations

import torch

from ..nets import init_network, memory_format
from .config import (ALGORITHMS, DISTILL_VERSION, INITS, KDE_SAMPLINGS, MAX_ITERATIONS, PRESETS, DistillConfig,
                     check_config, config_for)
from .checkpoint import CHECKPOINT
from .loop import channel_stats, check_inputs, check_ipc, distill
from .methods import METHODS, REGISTRY, Batch, Context, Method, check_methods, get, match_distance
from .sampler import Draw, Sampler, rng
from .sets import SyntheticSet, grid_png, load_synthetic, save_synthetic
from .starts import initial_sets, start
from ..images import to_unit

__all__ = ["ALGORITHMS", "CHECKPOINT", "DISTILL_VERSION", "INITS", "KDE_SAMPLINGS", "MAX_ITERATIONS", "METHODS",
           "PRESETS", "REGISTRY", "Batch", "Context", "DistillConfig", "Draw", "Method", "Sampler", "SyntheticSet",
           "channel_stats", "check_config", "check_inputs", "check_ipc", "check_methods", "config_for",
           "dc_class_loss", "distill", "dm_losses", "get", "grid_png", "init_network", "initial_sets",
           "load_synthetic", "match_distance", "memory_format", "rng", "save_synthetic", "start", "to_unit"]


def dm_losses(real: torch.Tensor, real_labels: torch.Tensor, uniform: torch.Tensor, groups: torch.Tensor,
              syn: dict[str, torch.Tensor], num_classes: int, num_groups: int,
              weights: torch.Tensor | None = None, reduction: str = "mean",
              kde_only: torch.Tensor | None = None, kde_take: torch.Tensor | None = None,
              balanced: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each method's DM loss from real feature rows and its synthetic features (class-major, ipc per
    class): the registry's dm_loss on a Batch made of these rows (tests and benches call it directly)."""
    b = Batch(real, real_labels, groups, uniform,
              kde_only if kde_only is not None else torch.zeros_like(uniform), kde_take, weights, balanced)
    ctx = Context(num_classes, num_groups, reduction)
    d = real.shape[1]
    return {m: get(m).dm_loss(real, b, f.view(num_classes, -1, d).mean(1), ctx) for m, f in syn.items()}


def dc_class_loss(net: torch.nn.Module, xs: torch.Tensor, c: int, x_real: torch.Tensor, method: str,
                  groups: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                  reduction: str = "mean", device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """One method's gradient-matching loss of class c, every x_real row being of class c (kde without
    weights: the rows are its draws, matched plainly)."""
    from .loop import _real_grad, _syn_grad
    n = len(x_real)
    labels = torch.full((n,), c, dtype=torch.long, device=x_real.device)
    rows = torch.ones(n, dtype=torch.bool, device=x_real.device)
    every = torch.arange(n, device=x_real.device)
    take = every if method == "kde" and weights is None else None
    b = Batch(x_real, labels, groups if groups is not None else torch.zeros_like(labels), rows, ~rows, take, weights,
              every)
    grad_of = lambda r, w: _real_grad(net, x_real[r], c, w, device)  # noqa: E731
    return get(method).dc_loss(_syn_grad(net, xs, c, device), grad_of, b, c, Context(c + 1, 1, reduction))
