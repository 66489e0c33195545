"""MTT (Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022): the
student's unrolled steps and the trajectory loss. docs/DISTILL.md "MTT".

Each iteration draws one expert index and one start epoch t < max_start_epoch, shared by every method (a
paired design, as the shared real batch of DM/DC); each method's student starts from *its own* experts'
parameters theta*_t, takes syn_steps SGD steps on its synthetic set with its learnable step size, and its loss
is ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 (M = expert_epochs). The images and the step
size get their gradient through every unrolled step (create_graph), so memory grows with syn_steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..augment import DSA, DSAParams
from .checkpoint import State
from .sampler import STREAM_MTT, rng

if TYPE_CHECKING:
    from .loop import _Gens, _Run


def trajectory_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MTT's normalised distance: how far the student ends from the expert's later parameters, relative to how
    far the expert itself moved (0: the student reached the target; 1: it did not move at all)."""
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum().clamp_min(1e-30)


def unflatten(net: torch.nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """A flat parameter vector (experts.flat_params' order) as the network's named parameters (views)."""
    out, i = {}, 0
    for name, p in net.named_parameters():
        out[name] = flat[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def images_per_step(cfg, n_images: int) -> int:
    """Synthetic images in each student step: batch_syn, or the whole set (0, or more than the set holds)."""
    return min(cfg.batch_syn or n_images, n_images)


@dataclass(frozen=True)
class StudentPlan:
    """One iteration's draws, shared by every method: the expert, the start epoch, each step's images and DSA."""

    expert: int
    start: int
    batches: list[torch.Tensor]
    augment: list[DSAParams | None]


def plan(cfg, n_images: int, dsa: DSA | None, seed: int, it: int) -> StudentPlan:
    """The iteration's expert, start epoch and student batches (chunks of permutations, as MTT's distill.py)."""
    g = rng(seed, it, STREAM_MTT)
    expert = int(torch.randint(cfg.num_experts, (1,), generator=g))
    start = int(torch.randint(cfg.max_start_epoch, (1,), generator=g))
    batches: list[torch.Tensor] = []
    while len(batches) < cfg.syn_steps:
        batches += list(torch.randperm(n_images, generator=g).split(images_per_step(cfg, n_images)))
    batches = batches[:cfg.syn_steps]
    augment = [dsa.sample(len(b), g) if dsa is not None else None for b in batches]
    return StudentPlan(expert, start, batches, augment)


def unroll(net: torch.nn.Module, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
           syn_lr: torch.Tensor, p: StudentPlan, dsa: DSA | None, fmt: torch.memory_format) -> torch.Tensor:
    """The student's parameters after its steps: theta <- theta - syn_lr * grad CE(theta; batch), differentiable
    in the images and syn_lr. Float32 throughout (second-order terms under autocast lose too much)."""
    theta = theta.detach().clone().requires_grad_(True)
    for idx, aug in zip(p.batches, p.augment):
        idx = idx.to(images.device)
        x = images[idx] if dsa is None else dsa.apply(images[idx], aug)
        out = functional_call(net, unflatten(net, theta), (x.contiguous(memory_format=fmt),))
        grad = torch.autograd.grad(F.cross_entropy(out, labels[idx]), theta, create_graph=True)[0]
        theta = theta - syn_lr * grad
    return theta


def step(run: "_Run", state: State, gens: "_Gens") -> dict[str, torch.Tensor]:
    """One MTT iteration: every method's student unrolled from its own experts and matched, images and step
    size updated (one method at a time, so only one unrolled graph is held)."""
    cfg, net = run.cfg, run.net
    net.train()
    net.requires_grad_(False)  # the student's parameters are the flat vector, not the module's
    p = plan(cfg, len(run.syn_labels), run.dsa, cfg.seed, gens.it)
    losses = {}
    for m in run.methods:
        traj = run.experts[m].trajectory(p.expert)
        start = traj[p.start].to(run.device)
        target = traj[p.start + cfg.expert_epochs].to(run.device)
        end = unroll(net, start, state.syn[m], run.syn_labels, state.syn_lr[m], p, run.dsa, run.fmt)
        loss = trajectory_loss(end, start, target)
        state.opts[m].zero_grad(set_to_none=True)
        state.lr_opts[m].zero_grad(set_to_none=True)
        loss.backward()
        state.opts[m].step()
        state.lr_opts[m].step()
        losses[m] = loss.detach()
        del end, loss
    return losses
