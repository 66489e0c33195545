"""The shared real batch: the sampler every method draws from (its random streams: engine/distill/streams.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import BiasedSplit


def draw_probs(weights: torch.Tensor) -> torch.Tensor:
    """Sampling probabilities proportional to a class's KDE weights (negatives as 0; all zero: uniform)."""
    p = weights.double().clamp_min(0)
    return p if float(p.sum()) > 0 else torch.ones_like(p)


class GroupPools:
    """The split's image indices of each (class, attribute group): FairDD's top-up draws from them."""

    def __init__(self, targets: torch.Tensor, groups: torch.Tensor, num_classes: int, num_groups: int):
        self.num_rows, self.num_groups = len(targets), num_groups
        self.pools = [[torch.nonzero((targets == c) & (groups == g)).flatten() for g in range(num_groups)]
                      for c in range(num_classes)]
        self.sizes = torch.tensor([[len(pool) for pool in row] for row in self.pools], dtype=torch.long)

    def top_up(self, batch: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, group_min: int,
               gen: torch.Generator) -> torch.Tensor:
        """The extra images that bring every group of each class in the batch to min(group_min, its size)
        rows, drawn without replacement from the group's images not in the batch; class-major, group-minor."""
        have = torch.bincount(targets[batch] * self.num_groups + groups[batch],
                              minlength=self.sizes.numel()).view_as(self.sizes)
        need = self.sizes.clamp(max=group_min) - have
        need[have.sum(1) == 0] = 0  # only the classes the batch holds
        in_batch = torch.zeros(self.num_rows, dtype=torch.bool)
        in_batch[batch] = True
        extra = [batch[:0]]
        for c, g in torch.nonzero(need > 0).tolist():
            pool = self.pools[c][g]
            rest = pool[~in_batch[pool]]
            extra.append(rest[torch.randperm(len(rest), generator=gen)[:int(need[c, g])]])
        return torch.cat(extra)


@dataclass
class Draw:
    """One iteration's real rows: training-split indices, labels, the uniform part, the rows only the
    drawn targets use, and kde's and the balanced target's draws as row positions with multiplicity."""

    index: torch.Tensor
    labels: torch.Tensor
    uniform: torch.Tensor
    drawn_only: torch.Tensor
    kde_take: torch.Tensor | None
    balanced_take: torch.Tensor | None = None


class Sampler:
    """Per-class (and per class x attribute) index lists; draws the shared real batch."""

    def __init__(self, train: BiasedSplit, batch_real: int, group_min: int, group_topup: bool,
                 kde_weights: torch.Tensor | None = None, kde_batch: int = 0, balanced: bool = False):
        self.num_classes, self.num_groups = train.num_classes, max(train.num_attributes, 1)
        self.by_class = [torch.nonzero(train.targets == c).flatten() for c in range(self.num_classes)]
        self.groups = GroupPools(train.targets, train.attributes, self.num_classes, self.num_groups)
        self.by_group = self.groups.pools
        self.batch_real, self.group_min, self.group_topup = batch_real, group_min, group_topup
        self.attributes, self.targets = train.attributes, train.targets
        # importance sampling for kde: per-class probabilities, computed once (None = no kde rows)
        self.kde_probs = None if kde_weights is None else [draw_probs(kde_weights[p]) for p in self.by_class]
        self.kde_batch = kde_batch
        self.balanced = balanced

    def draw(self, gen: torch.Generator, gen_groups: torch.Generator, gen_kde: torch.Generator | None = None,
             gen_balanced: torch.Generator | None = None) -> Draw:
        """A uniform batch per class, FairDD's group top-up rows, then the kde draws (probability
        proportional to the weights). Own RNG streams: vanilla's batch is the same whichever methods
        run beside it."""
        idx, labels = [], []
        for c, pool in enumerate(self.by_class):
            take = pool[torch.randperm(len(pool), generator=gen)[:self.batch_real]]
            idx.append(take)
            labels.append(torch.full((len(take),), c, dtype=torch.long))
        n_uniform = sum(len(t) for t in idx)
        if self.group_topup and self.group_min > 0:
            self._top_up(idx, labels, gen_groups)
        n_before_kde = sum(len(t) for t in idx)
        kde_take = None
        if self.kde_probs is not None and gen_kde is not None:
            draws = torch.cat([pool[torch.multinomial(p, self.kde_batch, replacement=True, generator=gen_kde)]
                               for pool, p in zip(self.by_class, self.kde_probs)])
            kde_take = self._rows_of(idx, labels, draws)
        balanced_take = None
        if self.balanced and gen_balanced is not None:
            balanced_take = self._rows_of(idx, labels, self._balanced_images(idx, n_before_kde, gen_balanced))
        index, lab = torch.cat(idx), torch.cat(labels)
        rows = torch.arange(len(index))
        return Draw(index, lab, rows < n_uniform, rows >= n_before_kde, kde_take, balanced_take)

    def _top_up(self, idx: list, labels: list, gen_groups: torch.Generator) -> None:
        """Rare groups topped up to group_min from their own pool (own RNG stream: vanilla's batch is unchanged)."""
        extra = self.groups.top_up(torch.cat(idx), self.targets, self.attributes, self.group_min, gen_groups)
        idx.append(extra)
        labels.append(self.targets[extra])

    def _rows_of(self, idx: list, labels: list, drawn: torch.Tensor) -> torch.Tensor:
        """Drawn images as row positions. A draw of an image already in the batch reuses its row (DSA
        parameters are per class, so its embedding is the same) and repeated draws share one row:
        only images new to the batch are appended (and add real forwards)."""
        have = torch.cat(idx)
        row_of = torch.full((len(self.targets),), -1, dtype=torch.long)
        row_of[have] = torch.arange(len(have))
        new = torch.unique(drawn)
        new = new[row_of[new] < 0]                 # images not yet in the batch, once each
        row_of[new] = torch.arange(len(have), len(have) + len(new))
        idx.append(new)
        labels.append(self.targets[new])
        return row_of[drawn]

    def _balanced_images(self, idx: list, n_shared: int, gen: torch.Generator) -> torch.Tensor:
        """batch_real images per class, split equally over the attribute groups the class has (the
        remainder to groups in a random order). Each group's share starts from its images already in
        the shared rows (uniform + top-up), then new images of the group; a group with fewer images
        than its share cycles through them, so every present group weighs the same."""
        shared = torch.cat(idx)[:n_shared] if n_shared else torch.zeros(0, dtype=torch.long)
        out = []
        for c in range(self.num_classes):
            groups = [g for g in range(self.num_groups) if len(self.by_group[c][g])]
            share = torch.full((len(groups),), self.batch_real // len(groups), dtype=torch.long)
            share[torch.randperm(len(groups), generator=gen)[:self.batch_real % len(groups)]] += 1
            for g, n in zip(groups, share.tolist()):
                pool = self.by_group[c][g]
                inside = shared[torch.isin(shared, pool)]
                rest = pool[~torch.isin(pool, inside)]
                order = torch.cat([inside, rest[torch.randperm(len(rest), generator=gen)]])
                out.append(order.repeat((n + len(order) - 1) // len(order))[:n])
        return torch.cat(out)
