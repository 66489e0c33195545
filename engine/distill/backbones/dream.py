"""DREAM (Liu et al., ICCV 2023, "Efficient Dataset Distillation by Representative Matching"): IDC's matching and
network schedule, each class's real batch picked by k-means on the current condensation network's embedding of
the class's images (k = the real batch, the nearest image to each centroid), re-clustered every `interval`
matching steps, and the synthetic set started from the same k-means on the untrained network.
docs/DISTILL.md "DREAM".

Each remedy picks its own batch (what DREAM feeds the matcher decides what a remedy can correct):
- plain (vanilla): DREAM's pick;
- weighted (kde): the KDE weights as k-means sample weights, so centroids move toward the rare, heavy images;
  the target is the plain mean over the picked images, as IDC's kde matches the plain mean of images drawn with
  probability w_i: both are samples of the reweighted distribution (weighting them again would count w twice);
- groups (fairdd, cobra): k-means inside each attribute group of the class, k shared equally between the groups
  the class has (kmeans.shares: a group smaller than its share gives all its images, the rest goes to the others;
  every group with images gets at least one), then the method's per-group target as under IDC;
- balanced: k split equally whatever the groups' sizes, a small group's picks repeated (kmeans.equal_shares).
No method silently falls back to vanilla's batch: a group the class has is always in its batch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from ...data import BiasedSplit
from ...images import to_float
from ...nets import ConvNet, init_network
from ...progress import Progress, ShouldStop
from .. import kmeans, streams
from ..checkpoint import State
from ..config import DistillConfig, Option
from ..methods import REGISTRY, Batch
from ..toolkit import Gens, Run, StoredForm, dc_outer_loop, train_on_real
from ..starts import initial_sets as shared_starts
from .base import Backbone, Step
from .idc import FACTOR, NET_DATA, NET_MOMENTUM, NET_WEIGHT_DECAY, REAL_NET, Tiles, check_tiles, factor_for
from .idc import IDC

PICKS = streams.claim("dream-picks", __name__)     # the candidate pools and k-means seeds of each iteration
START = streams.claim("dream-start", __name__)     # the untrained network and k-means of the start
RULES = ("plain", "weighted", "groups", "balanced")
RECORD = "batch_aligned_share"                     # per method: the aligned share (%) of its picked batches


@dataclass(frozen=True)
class DREAMOptions:
    """DREAM's own settings (IDC's two, and its clustering)."""

    factor: int = 0
    idc_net_data: int = 500
    interval: int = 10            # re-cluster every this many matching steps (DREAM's --interval)
    pool: int = 0                 # images per class embedded for each clustering (0: all, as DREAM)


INTERVAL = Option("interval", "re-cluster the real batch every this many matching steps (DREAM's --interval)",
                  flag="interval", low=1, high=100_000, label="Re-cluster every (matching steps)")
POOL = Option("pool", "images per class embedded for each clustering, a uniform random subset (the group-aware "
              "methods add each group's images up to the real batch) (0 = all the class's images, as DREAM)", flag="pool", high=1_000_000,
              label="Clustering pool per class (0 = all)")


def rule(method: str) -> str:
    """Which pick a method's batch comes from (its registry flags say what its target needs)."""
    m = REGISTRY[method]
    if m.balanced_draws:
        return "balanced"
    if m.group_topup:
        return "groups"
    return "weighted" if m.weighted_draws else "plain"


class Picker:
    """One run's view of the split for picking: each class's images by attribute group, weights, aligned mask."""

    def __init__(self, train: BiasedSplit, weights: torch.Tensor | None, pool: int):
        self.num_classes = train.num_classes
        self.groups = [[torch.nonzero((train.targets == c) & (train.attributes == g)).flatten()
                        for g in range(max(train.num_attributes, 1))] for c in range(train.num_classes)]
        self.attributes, self.aligned, self.weights, self.pool = train.attributes, train.aligned, weights, pool

    def candidates(self, c: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The class's images to embed: (a uniform random pool of `pool` images, or all; the extra images the group
        rules add so every attribute group has min(k, its size)); the pool holds at least k. The label-free rules (vanilla, KDE) see the uniform
        pool only: a pool stratified by group would use the bias labels they must not."""
        every = torch.cat(self.groups[c])
        size = max(self.pool, k)   # never fewer than the k images a pick needs (the start's k is IPC x factor^2)
        if not self.pool or len(every) <= size:
            return every, every[:0]
        pool = every[torch.randperm(len(every), generator=gen)[:size]]
        extra = [every[:0]]
        for p in self.groups[c]:
            rest = p[~torch.isin(p, pool)]
            need = min(k, len(p)) - (len(p) - len(rest))
            if need > 0:
                extra.append(rest[torch.randperm(len(rest), generator=gen)[:need]])
        return pool, torch.cat(extra)

    def pick(self, c: int, kind: str, feats: torch.Tensor, cand: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        """k images of class c (split indices) by one rule, from the candidates' features."""
        if kind in ("plain", "weighted"):
            w = self.weights[cand] if kind == "weighted" and self.weights is not None else None
            return cand[kmeans.representatives(feats, k, seed, w)]
        group = self.attributes[cand]
        ids = sorted(torch.unique(group).tolist())
        sizes = [int((group == g).sum()) for g in ids]
        share = kmeans.equal_shares(sizes, k) if kind == "balanced" else kmeans.shares(sizes, k)
        out = []
        for g, n in zip(ids, share):
            rows = torch.nonzero(group == g).flatten()
            chosen = rows[kmeans.representatives(feats[rows.to(feats.device)], min(n, len(rows)), seed + g)]
            out.append(cand[kmeans.cycle(chosen, n)])
        return torch.cat(out)

    def select(self, run: Run, net: ConvNet, kinds: Sequence[str], k: int, gen: torch.Generator
               ) -> dict[str, torch.Tensor]:
        """Every rule's batch (class-major split indices): the candidates embedded once by `net`, each rule's pick."""
        picks: dict[str, list[torch.Tensor]] = {kind: [] for kind in kinds}
        net.eval()
        for c in range(self.num_classes):
            pool, extra = self.candidates(c, k, gen)
            cand = torch.cat([pool, extra])
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=gen))
            with torch.no_grad():
                x = to_float(run.images[cand.to(run.device)], run.mean, run.std)
                feats = run.forward(x, net)   # stays on the device: the GPU k-means runs there
            for kind in kinds:
                n = len(pool) if kind in ("plain", "weighted") else len(cand)   # label-free: the uniform pool
                picks[kind].append(self.pick(c, kind, feats[:n], cand[:n], k, seed))
        net.train()
        return {kind: torch.cat(v) for kind, v in picks.items()}


def rows_batch(run: Run, index: torch.Tensor, method: str, params) -> Batch:
    """A method's own batch from picked split indices (every row is its target's: uniform, group rows, its
    draws), standardised and augmented with the iteration's per-class DSA parameters."""
    idx = index.to(run.device)
    labels = run.targets[idx]
    x = to_float(run.images[idx], run.mean, run.std)
    if params is not None:
        x = run.dsa.apply(x, params.take(labels))
    every = torch.arange(len(idx), device=run.device)
    m = REGISTRY[method]
    return Batch(x.contiguous(memory_format=run.fmt), labels, run.attributes[idx],
                 torch.ones(len(idx), dtype=torch.bool, device=run.device),
                 torch.zeros(len(idx), dtype=torch.bool, device=run.device),
                 every if m.weighted_draws else None,
                 run.weights[idx] if run.weights is not None else None,
                 every if m.balanced_draws else None)


def _preset(cfg: DistillConfig, net_data: int, pool: int) -> DistillConfig:
    return replace(cfg, algorithm="dream", options=DREAMOptions(idc_net_data=net_data, pool=pool))


class DREAM(Backbone):
    name = "dream"
    label = "DREAM"
    summary = ("IDC's matching with each class's real batch picked by k-means on the network's features (the image "
               "nearest each centroid), re-clustered every few steps")
    options = (FACTOR, NET_DATA, INTERVAL, POOL)
    options_type = DREAMOptions
    # IDC's presets, so a DREAM run pairs with an IDC run of the same settings; quick clusters a 512-image pool per
    # class (all of a class's images at the paper preset, as DREAM); DREAM's own paper batch is 128 (IDC: 64 there,
    # 256 in COBRA's scripts, which the paper preset follows for both)
    presets = {"tiny": _preset(IDC.presets["tiny"], 16, 64), "quick": _preset(IDC.presets["quick"], 128, 512),
               "paper": _preset(IDC.presets["paper"], 500, 0)}

    def form(self, cfg: DistillConfig, image_size: int) -> StoredForm:
        return Tiles(factor_for(cfg, image_size))

    def check_data(self, train: BiasedSplit, cfg: DistillConfig) -> None:
        check_tiles(self, train, cfg)

    def initial_sets(self, train: BiasedSplit, cfg: DistillConfig, mean: torch.Tensor, std: torch.Tensor,
                     methods: Sequence[str], weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """init "method": DREAM's k-means start (k = ipc x factor^2 per class on the untrained network), each
        method by its rule; any other init: the shared starts of every backbone."""
        form = self.form(cfg, train.images.shape[-1])
        if cfg.init != "method":
            return shared_starts(train, cfg, mean, std, methods, weights, form)
        net = ConvNet(cfg.net_config(train.images.shape[1], train.num_classes, train.images.shape[-1]))
        gen = streams.rng(cfg.seed, -1, START)
        init_network(net, gen)
        run = _StartView(train, mean, std, net)
        picker = Picker(train, weights, cfg.options.pool)
        kinds = list(dict.fromkeys(rule(m) for m in methods))
        picks = picker.select(run, net, kinds, cfg.ipc * form.per_stored, gen)
        encoded = {kind: form.encode(to_float(train.images[idx], mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)), cfg.ipc)
                   for kind, idx in picks.items()}
        return {m: encoded[rule(m)] for m in methods}

    def prepare(self, run: Run, state: State, train: BiasedSplit, weights: torch.Tensor | None,
                progress: Progress | None, should_stop: ShouldStop | None) -> Step:
        """The run's picker; the step clusters with the current network every `interval` matching steps."""
        picker = Picker(train, weights, run.cfg.options.pool)
        state.records.setdefault(RECORD, {m: [] for m in run.methods})
        return lambda r, s, gens: self._step(r, s, gens, picker)

    def _step(self, run: Run, state: State, gens: Gens, picker: Picker) -> dict[str, torch.Tensor]:
        """IDC's iteration (the shared random network, DC's matching steps, each followed by a pass over real
        data), each method matching its decoded set against its own picked batch."""
        net, form, opts = run.net, run.form, run.cfg.options
        net.requires_grad_(True)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=run.cfg.lr_net, momentum=NET_MOMENTUM,
                              weight_decay=NET_WEIGHT_DECAY)
        g = streams.rng(run.cfg.seed, gens.it, REAL_NET)
        pick_gen = streams.rng(run.cfg.seed, gens.it, PICKS)
        low, high = run.pixel_range()
        with torch.no_grad():
            for m in run.methods:
                state.syn[m].clamp_(low, high)
        kinds = list(dict.fromkeys(rule(m) for m in run.methods))
        picks: dict[str, torch.Tensor] = {}
        shares: dict[str, list[float]] = {m: [] for m in run.methods}

        def batches(step: int, params) -> dict[str, Batch]:
            if step % opts.interval == 0:  # DREAM: the batch is fixed between clusterings, re-augmented each step
                picks.update(picker.select(run, net, kinds, run.cfg.batch_real, pick_gen))
                for m in run.methods:
                    shares[m].append(100 * float(picker.aligned[picks[rule(m)]].float().mean()))
            return {m: rows_batch(run, picks[rule(m)], m, params) for m in run.methods}

        losses = dc_outer_loop(run, state, gens, lambda m: net, lambda m: form.decode(state.syn[m]),
                               lambda: train_on_real(run, net, opt, g, opts.idc_net_data),
                               run.cfg.ipc * form.per_stored, batches=batches)
        for m in run.methods:
            state.records[RECORD][m].append((gens.it + 1, sum(shares[m]) / len(shares[m])))
        return losses


class _StartView:
    """What Picker.select reads of a run, for the start (before the run exists): the CPU split and its net."""

    def __init__(self, train: BiasedSplit, mean: torch.Tensor, std: torch.Tensor, net: ConvNet):
        self.images, self.device = train.images, torch.device("cpu")
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.net = net

    def forward(self, x: torch.Tensor, net: ConvNet) -> torch.Tensor:
        return net.embed_rows(x).float()
