"""DC / DSA (Zhao, Mopuri & Bilen, ICLR 2021; Zhao & Bilen, ICML 2021): gradient matching, the network trained
on each method's own synthetic set between matching steps. docs/DISTILL.md "DC".
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from ..checkpoint import State
from ..config import DistillConfig
from ..toolkit import Gens, Match, Run, dc_match, dc_outer_loop, train_on_set
from .base import Backbone

_QUICK = DistillConfig(algorithm="dc", iterations=10, batch_real=32, lr_img=0.1, width=32, outer_loop=5, inner_loop=5,
                       checkpoint_every=2, kde_batch=32)
_PAPER = DistillConfig(algorithm="dc", iterations=1000, batch_real=256, lr_img=0.1, width=128, checkpoint_every=50)
_TINY = replace(_QUICK, iterations=4, batch_real=8, width=16, checkpoint_every=2, outer_loop=1, inner_loop=1,
                kde_batch=8)


class DC(Backbone):
    name = "dc"
    label = "DC"
    summary = "gradient matching, the network trained on each method's own set between matching steps"
    presets = {"tiny": _TINY, "quick": _QUICK, "paper": _PAPER}

    def step(self, run: Run, state: State, gens: Gens) -> dict[str, torch.Tensor]:
        """One outer iteration: per-method copies of the shared random network, matched and trained in turn."""
        return own_nets_loop(run, state, gens, dc_match)


def own_nets_loop(run: Run, state: State, gens: Gens, match: Match) -> dict[str, torch.Tensor]:
    """DC's outer loop with per-method copies of the shared random network, each trained on its method's own
    synthetic set between matching steps (DC, CAFE).

    The copies diverge after the first step, so their real gradients or features cannot be shared; the random
    init, the real batches and the DSA parameters are shared."""
    run.net.requires_grad_(True)
    run.net.train()
    nets = {m: copy.deepcopy(run.net) for m in run.methods}
    net_opts = {m: torch.optim.SGD(nets[m].parameters(), lr=run.cfg.lr_net) for m in run.methods}
    inner_gens = {m: gens.inner(m) for m in run.methods}

    def between() -> None:
        for m in run.methods:
            train_on_set(run, nets[m], net_opts[m], state.syn[m].detach(), inner_gens[m], run.cfg.loops()[1])

    return dc_outer_loop(run, state, gens, nets.__getitem__, state.syn.__getitem__, between, match=match)
