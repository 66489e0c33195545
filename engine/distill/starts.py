"""Each method's starting synthetic set (class-major, ipc stored images per class), standardised."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..data import BiasedSplit
from ..errors import InvalidArgument
from ..images import to_float
from . import streams
from .config import DistillConfig
from .methods import REGISTRY
from .sampler import draw_probs
from .toolkit import StoredForm

INIT = streams.claim("init", __name__)


def initial_sets(train: BiasedSplit, cfg: DistillConfig, mean: torch.Tensor, std: torch.Tensor,
                 methods: Sequence[str] = ("vanilla",), weights: torch.Tensor | None = None,
                 form: StoredForm | None = None) -> dict[str, torch.Tensor]:
    """Every method's start: init "method" gives each its registry start (vanilla random real, kde drawn
    with probability w_i, fairdd attribute-balanced), otherwise one shared start of kind cfg.init. A stored
    image of a backbone's `form` starts as the training images it decodes to, encoded (IDC: factor^2 images
    shrunk into its tiles, IDC's "mix" start). Backbone.initial_sets passes the backbone's form.

    Why own starts: with 95% aligned images in the start, 300 CPU iterations recolour only part of
    them, so a shared random start holds every method near the biased distribution (docs/DISTILL.md).
    """
    kind = {m: REGISTRY[m].start if cfg.init == "method" else cfg.init for m in methods}
    form = form or StoredForm()
    start_cfg = replace(cfg, ipc=cfg.ipc * form.per_stored)  # IDC: factor^2 start images per stored one
    by_kind: dict[str, torch.Tensor] = {}
    for k in dict.fromkeys(kind.values()):
        if k == "weighted" and weights is None:
            raise InvalidArgument("the kde initialisation needs per-sample KDE weights", "pass weights, or init='real'")
        by_kind[k] = form.encode(start(train, start_cfg, k, mean, std, weights), cfg.ipc)
    return {m: by_kind[kind[m]] for m in methods}


def start(train: BiasedSplit, cfg: DistillConfig, kind: str, mean: torch.Tensor, std: torch.Tensor,
          weights: torch.Tensor | None) -> torch.Tensor:
    """One starting set: noise, random real, real drawn with probability w_i, or attribute-balanced real."""
    gen = streams.rng(cfg.seed, -1, INIT)  # the same stream for every kind: vanilla's start never changes
    c, h, w = train.images.shape[1:]
    if kind == "noise":
        return torch.randn(train.num_classes * cfg.ipc, c, h, w, generator=gen)
    picks = []
    for k in range(train.num_classes):
        pool = torch.nonzero(train.targets == k).flatten()
        if kind == "real":
            picks.append(pool[torch.randperm(len(pool), generator=gen)[:cfg.ipc]])
        elif kind == "weighted":
            picks.append(pool[_weighted_pick(draw_probs(weights[pool]), cfg.ipc, gen)])
        else:
            picks.append(_balanced_pick(pool, train.attributes[pool], cfg.ipc, gen))
    return to_float(train.images[torch.cat(picks)], mean, std)


def _weighted_pick(p: torch.Tensor, ipc: int, gen: torch.Generator) -> torch.Tensor:
    """ipc distinct positions drawn with probability p (dense clusters rarely picked); too few positive: fill."""
    n_pos = int((p > 0).sum())
    take = torch.multinomial(p, min(ipc, n_pos), replacement=False, generator=gen)
    if len(take) < ipc:
        rest = torch.nonzero(p <= 0).flatten()
        take = torch.cat([take, rest[torch.randperm(len(rest), generator=gen)[:ipc - len(take)]]])
    return take


def _balanced_pick(pool: torch.Tensor, attrs: torch.Tensor, ipc: int, gen: torch.Generator) -> torch.Tensor:
    """Round-robin over the class's attribute groups, a random image within each group."""
    groups = [pool[attrs == g] for g in torch.unique(attrs).tolist()]
    groups = [g[torch.randperm(len(g), generator=gen)] for g in groups]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < ipc:
        for g in groups:
            if depth < len(g) and len(chosen) < ipc:
                chosen.append(int(g[depth]))
        depth += 1
    return torch.tensor(chosen)
