"""Each method's loss on hand-made inputs, outside the loop: the registry's DM and DC (= IDC) losses called on a
Batch built from given rows (tests and benches check the losses against hand-computed values)."""
from __future__ import annotations

import torch

from .grads import real_grad, syn_grad
from .methods import Batch, Context, get


def dm_losses(real: torch.Tensor, real_labels: torch.Tensor, uniform: torch.Tensor, groups: torch.Tensor,
              syn: dict[str, torch.Tensor], num_classes: int, num_groups: int,
              weights: torch.Tensor | None = None, reduction: str = "mean",
              kde_only: torch.Tensor | None = None, kde_take: torch.Tensor | None = None,
              balanced: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each method's DM loss from real feature rows and its synthetic features (class-major, ipc per
    class): the registry's dm_loss on a Batch made of these rows."""
    b = Batch(real, real_labels, groups, uniform,
              kde_only if kde_only is not None else torch.zeros_like(uniform), kde_take, weights, balanced)
    ctx = Context(num_classes, num_groups, reduction)
    d = real.shape[1]
    return {m: get(m).dm_loss(real, b, f.view(num_classes, -1, d).mean(1), ctx) for m, f in syn.items()}


def dc_class_loss(net: torch.nn.Module, xs: torch.Tensor, c: int, x_real: torch.Tensor, method: str,
                  groups: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                  reduction: str = "mean", device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """One method's gradient-matching loss (its dc_loss: DC's and IDC's target) of class c, every x_real row being
    of class c (kde without weights: the rows are its draws, matched plainly)."""
    n = len(x_real)
    labels = torch.full((n,), c, dtype=torch.long, device=x_real.device)
    rows = torch.ones(n, dtype=torch.bool, device=x_real.device)
    every = torch.arange(n, device=x_real.device)
    take = every if method == "kde" and weights is None else None
    b = Batch(x_real, labels, groups if groups is not None else torch.zeros_like(labels), rows, ~rows, take, weights,
              every)
    grad_of = lambda r, w: real_grad(net, x_real[r], c, w, device)  # noqa: E731
    return get(method).dc_loss(syn_grad(net, xs, c, device), grad_of, b, c, Context(c + 1, 1, reduction))
