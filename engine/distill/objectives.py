"""What each method's MTT experts minimise: the objectives the methods' `mtt_objective` hooks return, and the
balance weights they are made of (engine/distill/experts.py trains the experts; docs/DISTILL.md "MTT")."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidArgument


@dataclass(frozen=True)
class ExpertData:
    """What an expert objective may read about the real training split."""

    targets: torch.Tensor            # class of each training image
    groups: torch.Tensor             # its bias attribute
    weights: torch.Tensor | None     # its KDE weight (None without weights)
    num_classes: int
    num_groups: int
    kde_sampling: str = "importance"
    group_min: int = 2               # FairDD's top-up: each group of a class at least this many rows a batch


@dataclass(frozen=True)
class ExpertObjective:
    """An expert's objective, E over epochs of the batch losses sum_i v_i CE_i / sum_i v_i: each epoch is a
    permutation of the split (draws None) or N draws with replacement with probabilities `draws`. With
    batch_groups, each batch is first topped up (every group of each class in it to group_min images, as
    FairDD's and COBRA's batches) and v is computed in it: balance() of its classes and these groups."""

    loss_weights: torch.Tensor       # v_i, float32, one per training image
    draws: torch.Tensor | None = None  # float64 probabilities summing to 1, or None
    batch_groups: torch.Tensor | None = None  # each image's group: v from the batch's own group counts
    num_groups: int = 1
    group_min: int = 0


def balance(targets: torch.Tensor, groups: torch.Tensor, num_classes: int, num_groups: int) -> torch.Tensor:
    """n_c / (G_c n_{c,g}) per row: every attribute group present in a class weighs the same, the class keeps
    its share of the rows (G_c: the groups the class has among them)."""
    key = targets * num_groups + groups
    n_cg = torch.bincount(key, minlength=num_classes * num_groups).double()
    n_c = torch.bincount(targets, minlength=num_classes).double()
    g_c = (n_cg.view(num_classes, num_groups) > 0).sum(1).double()
    return n_c[targets] / (g_c[targets] * n_cg[key])


def group_balance(d: ExpertData) -> torch.Tensor:
    """balance() over the whole split: each group of a class weighs the same, the class its share."""
    return balance(d.targets, d.groups, d.num_classes, d.num_groups)


def kde_shares(d: ExpertData) -> torch.Tensor:
    """n_c w_i / sum_{j in c} w_j per image: DM's within-class KDE weights, the class keeping its share."""
    if d.weights is None:
        raise InvalidArgument("the kde method needs per-sample weights", "pass weights (density.training_weights)")
    w = d.weights.double().clamp_min(0)
    tot = torch.zeros(d.num_classes, dtype=torch.float64).index_add_(0, d.targets, w)
    n_c = torch.bincount(d.targets, minlength=d.num_classes).double()
    return n_c[d.targets] * w / tot[d.targets].clamp_min(1e-300)


def _probs(v: torch.Tensor) -> torch.Tensor:
    return v.double() / v.double().sum()


def vanilla_mtt(d: ExpertData) -> ExpertObjective:
    """Plain cross-entropy over the split as it is (MTT's buffer.py)."""
    return ExpertObjective(torch.ones(len(d.targets)))


def kde_mtt(d: ExpertData) -> ExpertObjective:
    """The KDE-reweighted objective sum_i v_i CE_i, v = kde_shares: drawn with probability v_i (importance,
    the default, as DM's kde draws) or v_i weighting the loss of a permuted split (kde_sampling "weighted")."""
    v = kde_shares(d)
    if d.kde_sampling == "importance":
        return ExpertObjective(torch.ones(len(d.targets)), _probs(v))
    return ExpertObjective(v.float())


def fairdd_mtt(d: ExpertData) -> ExpertObjective:
    """Every attribute group of a class weighted equally in the loss (reweighting; a permuted split)."""
    return ExpertObjective(group_balance(d).float())


def cobra_mtt(d: ExpertData) -> ExpertObjective:
    """COBRA's DC target taken into the expert's own steps: each step follows the uniform barycenter, over the
    attribute groups of each class, of the per-group mean gradients of its batch (a permuted split, every group
    topped up to group_min rows as COBRA's batches are; the weights come from the batch's own counts). Our
    derivation: COBRA's paper gives no MTT definition we could find (docs/DISTILL.md "MTT")."""
    return ExpertObjective(torch.ones(len(d.targets)), None, d.groups, d.num_groups, d.group_min)


def balanced_mtt(d: ExpertData) -> ExpertObjective:
    """Plain cross-entropy over group-balanced draws (resampling): probability proportional to n_c / (G_c n_{c,g})."""
    return ExpertObjective(torch.ones(len(d.targets)), _probs(group_balance(d)))
