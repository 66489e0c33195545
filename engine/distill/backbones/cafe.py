"""CAFE (Wang et al., CVPR 2022, "Aligning Features Matters"): layer-wise alignment of class-mean features, plus a
discrimination term, in DC's bi-level loop. docs/DISTILL.md "CAFE".

Each iteration draws a fresh network; the outer loop matches every method's synthetic set against the shared real
batch at every layer (each method's registry cafe_loss: methods.py), and between matching steps each method's own
copy of the network trains on its own set (as DC). CAFE stops its loops when the real accuracy settles; COBRA's
copy resets that watcher every step so it never fires, and the loop lengths are DC's by IPC: so do we (fixed
counts are reproducible and make a paired run's methods do the same work). Layer weights: CAFE's (0.1 for the
shallow blocks, 1 for the last block and the embedding), for every method, COBRA's included (its train_cafe.py
weights the layers 1/1/1/0.1/0.1 over five layers of its own network: one scheme keeps the methods comparable).
The synthetic images' step size halves at 60, 80 and 90% of the iterations (CAFE: 1200/1600/1800 of 2000).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ...device import autocast
from ...errors import InvalidArgument
from ..checkpoint import State
from ..config import DistillConfig
from ..methods import REGISTRY, Batch, class_mean
from ..toolkit import Gens, Run
from .base import Backbone
from .dc import DC, own_nets_loop

SHALLOW, DEEP = 0.1, 1.0         # CAFE's layer weights (distill.py L81-84)
LR_STEPS = (0.6, 0.8, 0.9)       # fractions of the iterations where the image step size halves


def layers(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The features CAFE aligns, flattened per row: each block's activation (before its pooling), then the
    embedding the classifier reads (the last block pooled)."""
    out, h = [], x
    for module in net.features:
        h = module(h)
        if isinstance(module, nn.ReLU):
            out.append(h.flatten(1))
    return out + [h.flatten(1)]


def layer_weights(depth: int) -> list[float]:
    """0.1 for the blocks before the last, 1 for the last block and the embedding (depth 3: 0.1, 0.1, 1, 1)."""
    return [SHALLOW] * (depth - 1) + [DEEP, DEEP]


def step_size(cfg: DistillConfig, iteration: int) -> float:
    """The images' SGD step size at an iteration (halved at each of LR_STEPS)."""
    return cfg.lr_img * 0.5 ** sum(iteration >= round(f * cfg.iterations) for f in LR_STEPS)


def cafe_match(run: Run, net: nn.Module, method: str, syn: torch.Tensor, b: Batch, params, per_class=None
               ) -> torch.Tensor:
    """One method's CAFE loss: its real target's layer features (no gradient) against its synthetic class means
    (the set augmented with the iteration's per-class DSA parameters, as the real batch)."""
    labels = run.syn_labels
    xs = run.dsa.apply(syn, params.take(labels)) if params is not None else syn
    with autocast(run.device):
        with torch.no_grad():
            real = [r.float() for r in layers(net, b.x)]
        fake = [f.float() for f in layers(net, xs.contiguous(memory_format=run.fmt))]
    means = [class_mean(f, labels, run.ctx.num_classes) for f in fake]
    if REGISTRY[method].cafe_loss is None:
        raise InvalidArgument(f"method {method!r} defines no CAFE target", "give its Method entry a cafe_loss")
    return REGISTRY[method].cafe_loss(real, b, means, layer_weights(run.cfg.depth), run.ctx)


_QUICK = replace(DC.presets["quick"], algorithm="cafe", lr_img=1.0)
_PAPER = replace(DC.presets["paper"], algorithm="cafe", iterations=2000, lr_img=0.1)
_TINY = replace(DC.presets["tiny"], algorithm="cafe", lr_img=1.0)


class CAFE(Backbone):
    name = "cafe"
    label = "CAFE"
    summary = ("layer-wise class-mean feature alignment with a discrimination term, the network trained on each "
               "method's own set between matching steps")
    # paper: CAFE's 2,000 iterations, lr_img 0.1 (halved at 60/80/90%), DC's batch and loops; quick: DC's quick sizes
    # with lr_img 1.0 (a 10-iteration run at 0.1 barely moves the images)
    presets = {"tiny": _TINY, "quick": _QUICK, "paper": _PAPER}

    def step(self, run: Run, state: State, gens: Gens) -> dict[str, torch.Tensor]:
        """DC's outer loop with CAFE's matching (per-method copies of the shared random network, each trained on
        its own set between matching steps), every method's images at the iteration's step size."""
        for m in run.methods:
            for group in state.opts[m].param_groups:
                group["lr"] = step_size(run.cfg, gens.it)
        return own_nets_loop(run, state, gens, cafe_match)
