"""Gradient matching's two gradients (DC): the real images' loss gradient, a constant target, and the
synthetic images' loss gradient, differentiable in the images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..device import autocast
from ..nets import ConvNet


def real_grad(net: ConvNet, x: torch.Tensor, c: int, w: torch.Tensor | None, device) -> list[torch.Tensor]:
    """Gradient of the (weighted) cross-entropy of real images of class c w.r.t. the weights."""
    with autocast(device):
        logits = net(x).float()
    target = torch.full((len(x),), c, device=x.device, dtype=torch.long)
    if w is None:
        loss = F.cross_entropy(logits, target)
    else:
        loss = (F.cross_entropy(logits, target, reduction="none") * w).sum()
    return [g.detach() for g in torch.autograd.grad(loss, list(net.parameters()))]


def syn_grad(net: ConvNet, xs: torch.Tensor, c: int, device) -> tuple[torch.Tensor, ...]:
    """Gradient of the synthetic images' cross-entropy w.r.t. the weights, differentiable in the images."""
    with autocast(device):
        logits = net(xs).float()
    loss = F.cross_entropy(logits, torch.full((len(xs),), c, device=xs.device, dtype=torch.long))
    return torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
