"""IDC (Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization", ICML 2022):
multi-formation and its matching iteration. docs/DISTILL.md "IDC".

Each stored synthetic image holds factor x factor tiles; decoding upsamples every tile to a full image,
so IPC stored images give IPC x factor^2 training images for the same storage. Matching is DC's, with
each method's registry target, against a network that is trained on *real* data between matching steps
(IDC's choice: the network sees the real distribution, not the set being learned). The decode is
differentiable, so the images' gradient flows through the upsampling into the stored tiles.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from ..device import autocast
from ..images import to_float
from .checkpoint import State
from .sampler import STREAM_REAL_NET, rng

if TYPE_CHECKING:
    from .loop import _Gens, _Run

NET_MOMENTUM, NET_WEIGHT_DECAY = 0.9, 5e-4  # IDC's network optimiser (argument.py: --momentum, weight decay)


def encode(images: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """IDC's "mix" start: class-major images, ipc x factor^2 per class, shrunk (area) into the tiles of ipc
    stored images per class; tile k (row-major) of stored image n is the class's image k * ipc + n."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    classes = n // (ipc * factor ** 2)
    small = F.interpolate(images, size=(h // factor, w // factor), mode="area")
    tiles = small.view(classes, factor, factor, ipc, c, h // factor, w // factor)
    return tiles.permute(0, 3, 4, 1, 5, 2, 6).reshape(classes * ipc, c, h, w)


def decode(stored: torch.Tensor, factor: int) -> torch.Tensor:
    """Every tile of every stored image upsampled (bilinear, as IDC's decode_zoom) to a full image; the
    tiles of stored image n are decoded images n * factor^2 ... (row-major), so classes stay contiguous."""
    if factor == 1:
        return stored
    n, c, h, w = stored.shape
    tiles = stored.view(n, c, factor, h // factor, factor, w // factor).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor ** 2, c, h // factor, w // factor)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """The labels of decode(): each stored image's label, factor^2 times."""
    return labels.repeat_interleave(factor ** 2)


def train_on_real(run: "_Run", net: torch.nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> None:
    """One pass of the network over idc_net_data real images drawn uniformly (IDC's n_data), with DSA."""
    cfg = run.cfg
    picks = torch.randint(len(run.images), (cfg.idc_net_data,), generator=g).to(run.device)
    for s in range(0, len(picks), cfg.batch_train):
        sel = picks[s:s + cfg.batch_train]
        x = to_float(run.images[sel], run.mean, run.std)
        if run.dsa is not None:
            x = run.dsa.apply(x, run.dsa.sample(len(sel), g))
        with autocast(run.device):
            out = net(x.contiguous(memory_format=run.fmt)).float()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(out, run.targets[sel]).backward()
        opt.step()


Match = Callable[..., torch.Tensor]  # loop._dc_match: (run, net, method, images, batch, params, per_class)


def step(run: "_Run", state: State, gens: "_Gens", match: Match) -> dict[str, torch.Tensor]:
    """One IDC iteration: the shared random network; DC's matching steps (loops()[0]), each followed by a
    pass over real data; every method matches its decoded set with its registry target."""
    outer, _ = run.cfg.loops()
    f, net = run.factor, run.net
    net.requires_grad_(True)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=run.cfg.lr_net, momentum=NET_MOMENTUM, weight_decay=NET_WEIGHT_DECAY)
    g = rng(run.cfg.seed, gens.it, STREAM_REAL_NET)
    low, high = run.pixel_range()
    with torch.no_grad():  # IDC keeps the stored images in the pixel range
        for m in run.methods:
            state.syn[m].clamp_(low, high)
    totals = {m: torch.zeros((), device=run.device) for m in run.methods}
    for ol in range(outer):
        params = run.dsa.sample(run.ctx.num_classes, gens.main) if run.dsa is not None else None
        b = run.real_batch(gens, params)
        for m in run.methods:
            loss = match(run, net, m, decode(state.syn[m], f), b, params, run.cfg.ipc * f * f)
            state.opts[m].zero_grad(set_to_none=True)
            loss.backward()
            state.opts[m].step()
            totals[m] += loss.detach()
        if ol < outer - 1:
            train_on_real(run, net, opt, g)
    return {m: totals[m] / outer for m in run.methods}
