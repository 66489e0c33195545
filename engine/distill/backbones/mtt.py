"""MTT (Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022): the
student's unrolled steps and the trajectory loss. docs/DISTILL.md "MTT".

Each iteration draws one expert index and one start epoch t < max_start_epoch, shared by every method (a
paired design, as the shared real batch of DM/DC); each method's student starts from *its own* experts'
parameters theta*_t, takes syn_steps SGD steps on its synthetic set with its learnable step size, and its loss
is ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 (M = expert_epochs). The images and the step
size get their gradient through every unrolled step (create_graph), so memory grows with syn_steps. The
experts (engine/distill/experts.py) are trained with each method's objective (its registry hook).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ...augment import DSA, DSAParams
from ...data import BiasedSplit
from ...errors import InvalidArgument
from ...progress import Progress, ShouldStop
from .. import experts as X, streams
from ..checkpoint import State
from ..config import DistillConfig, Option
from ..toolkit import Gens, Run
from .base import Backbone, Step

STUDENT = streams.claim("mtt", __name__)  # each iteration's expert, start epoch, student batches and DSA


@dataclass(frozen=True)
class MTTOptions:
    """MTT's own settings: its experts (trained on real data with SGD lr_teacher, batch batch_train, DSA, parameters
    saved each epoch) and its student (syn_steps SGD steps on batch_syn images, 0 = all, from an expert's epoch below
    max_start_epoch, matched expert_epochs later, with a learnable step size starting at lr_teacher, SGD lr_lr)."""

    num_experts: int = 100
    expert_train_epochs: int = 50  # epochs each expert trains (>= max_start_epoch - 1 + expert_epochs)
    lr_teacher: float = 0.01
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_lr: float = 1e-05
    batch_syn: int = 0


OPTIONS = (
    Option("num_experts", "expert trajectories trained per method objective", "num-experts", 1, 10_000,
           label="Experts per objective"),
    Option("expert_train_epochs", "epochs each expert trains", "expert-train-epochs", 1, 9_999,
           label="Epochs each expert trains"),
    Option("lr_teacher", "the experts' SGD learning rate (and the student's first step size)", kind=float),
    Option("syn_steps", "student steps on the synthetic set per iteration", "syn-steps", 1, 10_000,
           label="Student steps per iteration"),
    Option("expert_epochs", "expert epochs the student must cover (M)", "expert-epochs", 1, 9_999,
           label="Expert epochs to cover (M)"),
    Option("max_start_epoch", "the student starts at an expert epoch below this", "max-start-epoch", 1, 9_999,
           label="Start below expert epoch"),
    Option("lr_lr", "the SGD learning rate of the student's step size", kind=float),
    Option("batch_syn", "synthetic images per student step (0: the whole set)", high=10_000 * 1000),
)


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


def images_per_step(opts: MTTOptions, n_images: int) -> int:
    """Synthetic images in each student step: batch_syn, or the whole set (0, or more than the set holds)."""
    return min(opts.batch_syn or n_images, n_images)


@dataclass(frozen=True)
class StudentPlan:
    """One iteration's draws, shared by every method: the expert, the start epoch, each step's images and DSA."""

    expert: int
    start: int
    batches: list[torch.Tensor]
    augment: list[DSAParams | None]


def plan(opts: MTTOptions, n_images: int, dsa: DSA | None, seed: int, it: int) -> StudentPlan:
    """The iteration's expert, start epoch and student batches (chunks of permutations, as MTT's distill.py)."""
    g = streams.rng(seed, it, STUDENT)
    expert = int(torch.randint(opts.num_experts, (1,), generator=g))
    start = int(torch.randint(opts.max_start_epoch, (1,), generator=g))
    batches: list[torch.Tensor] = []
    while len(batches) < opts.syn_steps:
        batches += list(torch.randperm(n_images, generator=g).split(images_per_step(opts, n_images)))
    batches = batches[:opts.syn_steps]
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


def step(run: Run, state: State, gens: Gens, experts: dict[str, X.ExpertBank]) -> dict[str, torch.Tensor]:
    """One MTT iteration: every method's student unrolled from its own experts and matched, images and step
    size updated (one method at a time, so only one unrolled graph is held)."""
    cfg, opts, net = run.cfg, run.cfg.options, run.net
    net.train()
    net.requires_grad_(False)  # the student's parameters are the flat vector, not the module's
    p = plan(opts, len(run.syn_labels), run.dsa, cfg.seed, gens.it)
    syn_lr, lr_opts = state.learned["syn_lr"], state.learned_opts["syn_lr"]
    losses = {}
    for m in run.methods:
        traj = experts[m].trajectory(p.expert)
        start = traj[p.start].to(run.device)
        target = traj[p.start + opts.expert_epochs].to(run.device)
        end = unroll(net, start, state.syn[m], run.syn_labels, syn_lr[m], p, run.dsa, run.fmt)
        loss = trajectory_loss(end, start, target)
        state.opts[m].zero_grad(set_to_none=True)
        lr_opts[m].zero_grad(set_to_none=True)
        loss.backward()
        state.opts[m].step()
        lr_opts[m].step()
        losses[m] = loss.detach()
        del end, loss
    return losses


def learn_step_size(run: Run, state: State) -> None:
    """Each method's learnable student step size, starting at the experts' lr, SGD momentum 0.5 (MTT's distill.py)."""
    lr = {m: torch.tensor(run.cfg.options.lr_teacher, device=run.device).requires_grad_(True) for m in run.methods}
    state.learned["syn_lr"] = lr
    state.learned_opts["syn_lr"] = {m: torch.optim.SGD([lr[m]], lr=run.cfg.options.lr_lr, momentum=0.5)
                                    for m in run.methods}


def experts_for(run: Run, train: BiasedSplit, weights: torch.Tensor | None, progress: Progress | None = None,
                should_stop: ShouldStop | None = None) -> dict[str, X.ExpertBank]:
    """Each method's experts (its registry objective), from the cache or trained now."""
    setup = X.ExpertSetup(run.images, run.targets, run.mean, run.std, run.net.cfg, run.dsa, run.fmt, run.device)
    return X.ensure_experts(setup, X.objectives(train, run.cfg, run.methods, weights), run.cfg, X.split_digest(train),
                            progress, should_stop)


# its code's defaults (distill.py: 5,000 iterations, syn_steps 20, expert_epochs 3, max_start_epoch 25, lr_img 1000,
# lr_lr 1e-5, lr_teacher 0.01, the whole set per step; buffer.py: 100 experts of 50 epochs, batch 256, SGD without
# momentum). Quick: 2 experts of 6 epochs at batch 64 (a 1,442-image split gets 23 expert steps an epoch), a narrow
# net, 8 unrolled steps of 40 images, 50 iterations at 10x MTT's lr_img (as quick DM takes 10x DM's): from one
# shared random-real start, 60 iterations at lr_img 1,000 moved kde/fairdd to 46.8/45.7% accuracy on colored-digits
# (5%), at 10,000 to 67.0/76.0% (vanilla 27.0/30.7; docs/RESULTS.md).
_PAPER = DistillConfig(algorithm="mtt", iterations=5000, lr_img=1000.0, width=128, checkpoint_every=250,
                       batch_real=256, options=MTTOptions())
_QUICK = replace(_PAPER, iterations=50, lr_img=10000.0, width=32, checkpoint_every=10, batch_train=64, kde_batch=32,
                 batch_real=32, options=MTTOptions(num_experts=2, expert_train_epochs=6, syn_steps=8, expert_epochs=2,
                                                   max_start_epoch=4, batch_syn=40))
_TINY = replace(_QUICK, iterations=4, width=16, checkpoint_every=2, batch_train=256, kde_batch=8, batch_real=8,
                options=replace(_QUICK.options, num_experts=2, expert_train_epochs=2, syn_steps=2, expert_epochs=1,
                                max_start_epoch=1))


class MTT(Backbone):
    name = "mtt"
    label = "MTT"
    summary = "trajectory matching against experts trained with each method's objective (trained once, then cached)"
    options = OPTIONS
    options_type = MTTOptions
    presets = {"tiny": _TINY, "quick": _QUICK, "paper": _PAPER}

    def check(self, cfg: DistillConfig) -> None:
        super().check(cfg)
        o = cfg.options
        if o.max_start_epoch - 1 + o.expert_epochs > o.expert_train_epochs:
            raise InvalidArgument(f"MTT's targets reach epoch max_start_epoch - 1 + expert_epochs = "
                                  f"{o.max_start_epoch - 1 + o.expert_epochs}, but experts train "
                                  f"{o.expert_train_epochs} epochs",
                                  "lower --max-start-epoch or --expert-epochs, or train the experts longer "
                                  "(--expert-train-epochs)")

    def prepare(self, run: Run, state: State, train: BiasedSplit, weights: torch.Tensor | None,
                progress: Progress | None, should_stop: ShouldStop | None) -> Step:
        """Each method's learnable step size and its experts, then the step that matches them."""
        learn_step_size(run, state)
        return partial(step, experts=experts_for(run, train, weights, progress, should_stop))

    def cost_scale(self, cfg: DistillConfig, quick: DistillConfig, classes: int, costs: dict) -> float:
        """The unroll's cost: width, and student steps x images per step against the measured ones (colored-digits'
        10 classes at the costs' IPC)."""
        steps = cfg.options.syn_steps * images_per_step(cfg.options, cfg.ipc * classes)
        measured = quick.options.syn_steps * images_per_step(quick.options, costs["ipc"] * 10)
        return cfg.width / quick.width * steps / measured

    def extra_seconds(self, cfg: DistillConfig, methods: Sequence[str], train: BiasedSplit, pixels: int,
                      costs: dict) -> dict[str, float]:
        """The expert sets not on disk x experts x epochs x images x seconds per image-epoch (a kde objective
        counts as to train: its weights are not known before the run)."""
        quick = self.presets["quick"]
        todo = X.objectives_to_train(train, cfg, methods)
        return {"experts": todo * cfg.options.num_experts * cfg.options.expert_train_epochs * len(train)
                * costs["expert_image_epoch"] * pixels / costs["pixels"] * cfg.width / quick.width}
