"""The distillation methods: one registry entry each, read by the loop, sampler, starts, audit, CLI and UI.

A method is its matching target. Every method sees the same shared real batch (`Batch`) and the same
random network; what differs is which real rows it uses and how it turns their features (DM) or
gradients (DC, IDC) or its experts' objective (MTT: objectives.py) into a target for its synthetic set. Adding a method is one `Method(...)` entry
below plus its tests (docs/DESIGN.md); the registry's order is the order of tables and plots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidArgument
from .objectives import ExpertData, ExpertObjective, balanced_mtt, cobra_mtt, fairdd_mtt, kde_mtt, vanilla_mtt

Grads = Sequence[torch.Tensor]
GradOf = Callable[[torch.Tensor, "torch.Tensor | None"], list[torch.Tensor]]  # (rows, weights) -> real grads


@dataclass(frozen=True)
class Batch:
    """One iteration's shared real batch, on the device.

    Rows are the per-class uniform draws (vanilla's batch), then FairDD's group top-up rows, then the
    images only the drawn targets added (KDE's importance draws, the group-balanced draws). `take` and
    `balanced` list those draws as row positions, repeats kept: a draw of an image already in the batch
    reuses its row.
    """

    x: torch.Tensor                 # augmented, standardised real images
    labels: torch.Tensor
    groups: torch.Tensor            # bias attribute of each row
    uniform: torch.Tensor           # bool: the uniform per-class rows
    drawn_only: torch.Tensor        # bool: rows only the drawn targets (kde, balanced) use
    take: torch.Tensor | None       # KDE's draws (probability w_i) as row positions; None: not sampled
    weights: torch.Tensor | None    # each row's KDE weight (None without weights)
    balanced: torch.Tensor | None = None  # group-balanced draws as row positions; None: not sampled

    def group_rows(self) -> torch.Tensor:
        """The uniform rows and FairDD's top-up: what group-aware targets use."""
        return ~self.drawn_only


@dataclass(frozen=True)
class Context:
    """Sizes and options every loss needs."""

    num_classes: int
    num_groups: int
    reduction: str = "mean"   # over groups: mean (our choice) | sum (FairDD's code)


def match_distance(gw_syn: Grads, gw_real: Grads) -> torch.Tensor:
    """DC distance: sum over weight tensors and output rows of 1 - cosine; 1-D params (biases, norms) ignored."""
    total = gw_syn[0].new_zeros(())
    for gs, gr in zip(gw_syn, gw_real):
        if gs.dim() == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def class_mean(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of rows (classes without rows: 0)."""
    sums = torch.zeros(num_classes, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, labels, x)
    return sums / torch.bincount(labels, minlength=num_classes).clamp_min(1).to(x.dtype)[:, None]


def within_class(w: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Renormalise weights to sum 1 within each class of the batch (uniform if a class sums to 0)."""
    w = w.to(torch.float32)
    tot = torch.zeros(num_classes, device=w.device).index_add_(0, labels, w)
    cnt = torch.bincount(labels, minlength=num_classes).to(w.dtype)
    zero = tot[labels] <= 0
    return torch.where(zero, 1.0 / cnt[labels].clamp_min(1), w / tot[labels].clamp_min(1e-30))


def group_means(real: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, ctx: Context
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu[c, g, :], present[c, g]) from rows: per class x group feature means and which groups have rows."""
    d = real.shape[1]
    key = labels * ctx.num_groups + groups
    count = torch.bincount(key, minlength=ctx.num_classes * ctx.num_groups).to(real.dtype)
    sums = torch.zeros(ctx.num_classes * ctx.num_groups, d, device=real.device, dtype=real.dtype)
    sums.index_add_(0, key, real)
    mu = (sums / count.clamp_min(1)[:, None]).view(ctx.num_classes, ctx.num_groups, d)
    return mu, (count > 0).view(ctx.num_classes, ctx.num_groups).to(real.dtype)


# --------------------------------------------------------------------------- vanilla

def vanilla_dm(real: torch.Tensor, b: Batch, mu_syn: torch.Tensor, ctx: Context) -> torch.Tensor:
    """sum_c ||mean phi(real_c) - mean phi(S_c)||^2 over the uniform rows."""
    return ((class_mean(real[b.uniform], b.labels[b.uniform], ctx.num_classes) - mu_syn) ** 2).sum()


def vanilla_dc(gw_syn: Grads, grad_of: GradOf, b: Batch, c: int, ctx: Context) -> torch.Tensor:
    """D(g_syn, g_real) with the class's uniform rows."""
    return match_distance(gw_syn, grad_of(_rows(b.labels == c, b.uniform), None))


# --------------------------------------------------------------------------- kde

def kde_dm(real: torch.Tensor, b: Batch, mu_syn: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The real mean replaced by sum_i w_i phi(x_i): the plain mean of KDE's draws (probability w_i),
    else the uniform rows weighted by w renormalised within the class batch."""
    if b.take is not None:
        return ((class_mean(real[b.take], b.labels[b.take], ctx.num_classes) - mu_syn) ** 2).sum()
    if b.weights is None:
        raise InvalidArgument("the kde method needs per-sample weights", "pass weights (density.training_weights)")
    labels = b.labels[b.uniform]
    w = within_class(b.weights[b.uniform], labels, ctx.num_classes)
    target = torch.zeros(ctx.num_classes, real.shape[1], device=real.device, dtype=real.dtype)
    target.index_add_(0, labels, real[b.uniform] * w[:, None])
    return ((target - mu_syn) ** 2).sum()


def kde_dc(gw_syn: Grads, grad_of: GradOf, b: Batch, c: int, ctx: Context) -> torch.Tensor:
    """D(g_syn, g_real): KDE's draws of class c (repeats included), else the weighted CE of the uniform rows."""
    if b.take is not None:
        return match_distance(gw_syn, grad_of(b.take[b.labels[b.take] == c], None))
    rows = _rows(b.labels == c, b.uniform)
    w = b.weights[rows].float()
    w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(w))
    return match_distance(gw_syn, grad_of(rows, w))


# --------------------------------------------------------------------------- fairdd

def fairdd_dm(real: torch.Tensor, b: Batch, mu_syn: torch.Tensor, ctx: Context) -> torch.Tensor:
    """sum_c red_g ||mean phi(real_{c,g}) - mean phi(S_c)||^2 over the groups present (uniform + top-up rows)."""
    rows = b.group_rows()
    mu_g, present = group_means(real[rows], b.labels[rows], b.groups[rows], ctx)
    per = ((mu_g - mu_syn[:, None, :]) ** 2).sum(-1) * present   # absent groups contribute 0
    if ctx.reduction == "mean":
        per = per / present.sum(1, keepdim=True).clamp_min(1)
    return per.sum()


def fairdd_dc(gw_syn: Grads, grad_of: GradOf, b: Batch, c: int, ctx: Context) -> torch.Tensor:
    """red_g D(g_syn, g_real_g) over the attribute groups present in the class's rows."""
    rows = _rows(b.labels == c, b.group_rows())
    groups = b.groups[rows]
    dists = [match_distance(gw_syn, grad_of(rows[groups == g], None)) for g in torch.unique(groups).tolist()]
    total = torch.stack(dists).sum()
    return total / len(dists) if ctx.reduction == "mean" else total


# --------------------------------------------------------------------------- cobra

def barycenters(real: torch.Tensor, b: Batch, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """(b[c, :], has[c]): the uniform barycenter of each class's attribute-group feature means over the
    groups present in its rows (uniform + top-up), however many images each group has."""
    rows = b.group_rows()
    mu_g, present = group_means(real[rows], b.labels[rows], b.groups[rows], ctx)
    n = present.sum(1, keepdim=True)
    return (mu_g * present[:, :, None]).sum(1) / n.clamp_min(1), n.flatten() > 0


def cobra_dm(real: torch.Tensor, b: Batch, mu_syn: torch.Tensor, ctx: Context) -> torch.Tensor:
    """sum_c ||b_c - mean phi(S_c)||_1, b_c the uniform barycenter of the group means (COBRA's L1 form);
    classes without rows contribute 0."""
    center, has = barycenters(real, b, ctx)
    return ((center - mu_syn).abs().sum(1) * has.to(real.dtype)).sum()


def cobra_dc(gw_syn: Grads, grad_of: GradOf, b: Batch, c: int, ctx: Context) -> torch.Tensor:
    """D(g_syn, mean_g g_real_g): the synthetic gradient against the uniform mean of the per-group gradients."""
    rows = _rows(b.labels == c, b.group_rows())
    groups = b.groups[rows]
    per_group = [grad_of(rows[groups == g], None) for g in torch.unique(groups).tolist()]
    mean = [torch.stack(parts).mean(0) for parts in zip(*per_group)]
    return match_distance(gw_syn, mean)


# --------------------------------------------------------------------------- balanced

def balanced_dm(real: torch.Tensor, b: Batch, mu_syn: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Vanilla's loss against the group-balanced draws: sum_c ||mean phi(B_c) - mean phi(S_c)||^2."""
    return ((class_mean(real[b.balanced], b.labels[b.balanced], ctx.num_classes) - mu_syn) ** 2).sum()


def balanced_dc(gw_syn: Grads, grad_of: GradOf, b: Batch, c: int, ctx: Context) -> torch.Tensor:
    """D(g_syn, g_real) with the class's group-balanced draws (repeats included)."""
    return match_distance(gw_syn, grad_of(b.balanced[b.labels[b.balanced] == c], None))


# --------------------------------------------------------------------------- CAFE: layer-wise class means

CAFE_CE = 0.01   # CAFE's weight on the discrimination cross-entropy (distill.py L289)
Layers = Sequence[torch.Tensor]   # one N x D_l feature matrix per matched layer, shallow to deep


def _masked_mse(target: torch.Tensor, syn: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """sum over classes with rows of the mean squared difference of their feature means."""
    return (((target - syn) ** 2).mean(1) * has.to(syn.dtype)).sum()


def _weighted_means(x: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, num_classes: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-class weighted means, which classes have rows)."""
    tot = torch.zeros(num_classes, device=x.device, dtype=x.dtype).index_add_(0, labels, w.to(x.dtype))
    sums = torch.zeros(num_classes, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, labels, x * w[:, None])
    return sums / tot.clamp_min(1e-12)[:, None], tot > 0


def cafe_target(real: Layers, rows: torch.Tensor, w: torch.Tensor, b: Batch, syn: Layers, layer_w: Sequence[float],
                ctx: Context, discriminate: bool = True) -> torch.Tensor:
    """CAFE's loss against the weighted class means of `rows` (w: row weights): sum_l layer_w[l] MSE(real mean,
    synthetic mean) over every layer, plus, with `discriminate`, CAFE's discrimination term: the last layer's
    mean MSE and CAFE_CE x the cross-entropy of logits real . (synthetic class means)^T (weighted by w)."""
    labels = b.labels[rows]
    loss = real[0].new_zeros(())
    for lw, r, s in zip(layer_w, real, syn):
        mean, has = _weighted_means(r[rows], labels, w, ctx.num_classes)
        loss = loss + lw * _masked_mse(mean, s, has)
    if discriminate:
        mean, has = _weighted_means(real[-1][rows], labels, w, ctx.num_classes)
        ce = F.cross_entropy(real[-1][rows] @ syn[-1].T, labels, reduction="none")
        per_class = torch.zeros(ctx.num_classes, device=ce.device).index_add_(0, labels, w * ce)
        loss = loss + _masked_mse(mean, syn[-1], has) + CAFE_CE * per_class.sum() / has.sum().clamp_min(1)
    return loss


def _even(rows: torch.Tensor, b: Batch, ctx: Context) -> torch.Tensor:
    """Row weights summing to 1 in each class (repeats counted)."""
    return within_class(torch.ones(len(rows), device=rows.device), b.labels[rows], ctx.num_classes)


def _group_even(rows: torch.Tensor, b: Batch, ctx: Context) -> torch.Tensor:
    """Row weights making each attribute group present in a class weigh the same (summing to 1 per class): the
    weighted mean is the uniform barycenter of the group means."""
    key = b.labels[rows] * ctx.num_groups + b.groups[rows]
    n = torch.bincount(key, minlength=ctx.num_classes * ctx.num_groups)
    groups = (n.view(ctx.num_classes, ctx.num_groups) > 0).sum(1)
    return 1.0 / (n[key] * groups[b.labels[rows]]).float()


def vanilla_cafe(real: Layers, b: Batch, syn: Layers, layer_w: Sequence[float], ctx: Context) -> torch.Tensor:
    """CAFE: layer-wise class means of the uniform rows, with the discrimination term."""
    rows = _rows(b.uniform)
    return cafe_target(real, rows, _even(rows, b, ctx), b, syn, layer_w, ctx)


def kde_cafe(real: Layers, b: Batch, syn: Layers, layer_w: Sequence[float], ctx: Context) -> torch.Tensor:
    """CAFE against the weighted layer means: the plain means of KDE's draws, else the uniform rows weighted by w."""
    if b.take is not None:
        return cafe_target(real, b.take, _even(b.take, b, ctx), b, syn, layer_w, ctx)
    rows = _rows(b.uniform)
    return cafe_target(real, rows, within_class(b.weights[rows], b.labels[rows], ctx.num_classes), b, syn, layer_w, ctx)


def fairdd_cafe(real: Layers, b: Batch, syn: Layers, layer_w: Sequence[float], ctx: Context) -> torch.Tensor:
    """FairDD under CAFE: every layer's MSE to each present group's mean, reduced over groups (mean | sum); the
    discrimination term with every group weighing the same."""
    rows = b.group_rows()
    loss = real[0].new_zeros(())
    for lw, r, s in zip(layer_w, real, syn):
        mu, present = group_means(r[rows], b.labels[rows], b.groups[rows], ctx)
        per = ((mu - s[:, None, :]) ** 2).mean(-1) * present
        if ctx.reduction == "mean":
            per = per / present.sum(1, keepdim=True).clamp_min(1)
        loss = loss + lw * per.sum()
    rows = _rows(rows)
    return loss + cafe_target(real, rows, _group_even(rows, b, ctx), b, syn, [], ctx)


def cobra_cafe(real: Layers, b: Batch, syn: Layers, layer_w: Sequence[float], ctx: Context) -> torch.Tensor:
    """COBRA's CAFE (train_cafe.py): MSE to the uniform barycenter of the group means at every layer, no
    discrimination term."""
    rows = _rows(b.group_rows())
    return cafe_target(real, rows, _group_even(rows, b, ctx), b, syn, layer_w, ctx, discriminate=False)


def balanced_cafe(real: Layers, b: Batch, syn: Layers, layer_w: Sequence[float], ctx: Context) -> torch.Tensor:
    """Vanilla's CAFE loss against the group-balanced draws."""
    return cafe_target(real, b.balanced, _even(b.balanced, b, ctx), b, syn, layer_w, ctx)


def _rows(*masks: torch.Tensor) -> torch.Tensor:
    """Row positions where every mask holds."""
    m = masks[0]
    for other in masks[1:]:
        m = m & other
    return torch.nonzero(m).flatten()


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True, kw_only=True)
class Method:
    """One distillation method: what it needs, where it starts, its target under each kind of matching."""

    name: str
    label: str                       # one line for menus and tables
    colour: str                      # plot colour (Okabe-Ito, colour-blind safe)
    dm_loss: Callable[[torch.Tensor, Batch, torch.Tensor, Context], torch.Tensor]
    # every gradient-matching backbone's target (DC; IDC on its decoded set, as COBRA's IDC code uses DC's
    # distance and per-group targets)
    dc_loss: Callable[[Grads, GradOf, Batch, int, Context], torch.Tensor]
    # MTT matches the student to the method's own experts: the hook says what those experts minimise
    mtt_objective: Callable[[ExpertData], ExpertObjective]
    # CAFE's layer-wise class-mean target (real layers, batch, synthetic class means per layer, layer weights)
    cafe_loss: Callable[[Layers, Batch, Layers, Sequence[float], Context], torch.Tensor] | None = None
    start: str = "real"              # its own start for init="method": real | weighted | balanced
    needs_weights: bool = False      # KDE weights (no bias labels)
    needs_groups: bool = False       # bias labels
    group_topup: bool = False        # the sampler tops rare groups up (FairDD's rows)
    weighted_draws: bool = False     # the sampler draws rows with probability w_i (importance sampling)
    balanced_draws: bool = False     # the sampler draws a group-balanced batch per class
    warm_start: bool = False         # DM: its own copy of the random net, trained on its set first


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method(name="vanilla", label="vanilla: plain matching", colour="#999999",
           dm_loss=vanilla_dm, dc_loss=vanilla_dc, mtt_objective=vanilla_mtt, cafe_loss=vanilla_cafe),
    Method(name="kde", label="kde: KDE-reweighted target (no bias labels)", colour="#0072B2",
           dm_loss=kde_dm, dc_loss=kde_dc, mtt_objective=kde_mtt, cafe_loss=kde_cafe, start="weighted", needs_weights=True, weighted_draws=True),
    Method(name="fairdd", label="fairdd: every attribute group weighted equally (bias labels)", colour="#E69F00",
           dm_loss=fairdd_dm, dc_loss=fairdd_dc, mtt_objective=fairdd_mtt, cafe_loss=fairdd_cafe, start="balanced", needs_groups=True, group_topup=True),
    Method(name="cobra", label="cobra: L1 to the uniform barycenter of the group means, warm-started net "
           "(bias labels)", colour="#D55E00", dm_loss=cobra_dm, dc_loss=cobra_dc, mtt_objective=cobra_mtt, cafe_loss=cobra_cafe, start="balanced",
           needs_groups=True, group_topup=True, warm_start=True),
    Method(name="balanced", label="balanced: plain matching on a group-balanced real batch (bias labels)",
           colour="#56B4E9", dm_loss=balanced_dm, dc_loss=balanced_dc, mtt_objective=balanced_mtt, cafe_loss=balanced_cafe, start="balanced", needs_groups=True,
           group_topup=True, balanced_draws=True),
)}
METHODS: tuple[str, ...] = tuple(REGISTRY)  # registry order: the canonical order of tables and plots


def get(name: str) -> Method:
    """A method by name, with the valid names in the error."""
    if name not in REGISTRY:
        raise InvalidArgument(f"unknown method {name!r}", f"use one of: {', '.join(METHODS)}")
    return REGISTRY[name]


def check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Parse 'a,b' or a sequence; refuse unknown or repeated methods."""
    items = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    items = [m for m in items if m]
    unknown = [m for m in items if m not in REGISTRY]
    if unknown or not items:
        raise InvalidArgument(f"unknown method(s) {unknown or 'none given'}",
                              f"use a comma-separated list of: {', '.join(METHODS)}")
    if len(set(items)) != len(items):
        raise InvalidArgument(f"method listed twice in {items}", "list each method once")
    return tuple(items)
