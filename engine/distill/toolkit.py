"""What every backbone may use: a run's device data (`Run`), one iteration's random streams (`Gens`), a stored
set's form (`StoredForm`), the one augmented training step, training a network on a set or on real images, and
DC's gradient matching with its outer loop. Backbones (engine/distill/backbones) build on this; the loop
(loop.py) calls them. Nothing here names a backbone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..augment import DSA, DSAParams
from ..device import autocast
from ..images import to_float
from ..nets import ConvNet
from . import streams
from .checkpoint import State
from .config import DistillConfig
from .grads import real_grad, syn_grad
from .methods import REGISTRY, Batch, Context
from .sampler import Sampler

MAIN = streams.claim("main", __name__)          # network init, the shared real batch, DSA parameters
GROUPS = streams.claim("groups", __name__)      # FairDD's top-up rows
KDE = streams.claim("kde", __name__)            # KDE's importance draws
BALANCED = streams.claim("balanced", __name__)  # the group-balanced draws
streams.claim(streams.INNER, __name__)          # each method's own network training (streams.inner)


class StoredForm:
    """How a backbone stores a set: here each stored image is one training image (IDC's tiles override this)."""

    factor = 1                    # training images per stored image and side (factor^2 in all)

    def encode(self, images: torch.Tensor, ipc: int) -> torch.Tensor:
        """Class-major training images (ipc x per_stored per class) as ipc stored images per class."""
        return images

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored images as training images (differentiable)."""
        return stored

    def decode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels of decode()."""
        return labels.repeat_interleave(self.per_stored)

    @property
    def per_stored(self) -> int:
        """Training images each stored image decodes to."""
        return self.factor ** 2

    def meta(self) -> dict:
        """What a set's metadata records of the form (nothing for one image per stored image)."""
        return {"factor": self.factor} if self.factor > 1 else {}


@dataclass
class Gens:
    """One iteration's shared random streams (pure functions of seed and iteration: resume needs no RNG state)."""

    main: torch.Generator
    groups: torch.Generator
    kde: torch.Generator
    balanced: torch.Generator
    it: int
    seed: int = 0

    @classmethod
    def at(cls, seed: int, it: int) -> "Gens":
        return cls(streams.rng(seed, it, MAIN), streams.rng(seed, it, GROUPS), streams.rng(seed, it, KDE),
                   streams.rng(seed, it, BALANCED), it, seed)

    def inner(self, method: str) -> torch.Generator:
        """The iteration's stream of a method's own network training."""
        return streams.rng(self.seed, self.it, streams.inner(method))


@dataclass
class Run:
    """Everything an iteration needs, built once: data on the device, the shared network, the sampler."""

    cfg: DistillConfig
    methods: tuple[str, ...]
    device: torch.device
    ctx: Context
    net: ConvNet
    dsa: DSA | None
    sampler: Sampler
    images: torch.Tensor         # the real uint8 images on the device
    mean: torch.Tensor           # 1 x C x 1 x 1 on the device
    std: torch.Tensor
    attributes: torch.Tensor
    weights: torch.Tensor | None
    importance: bool             # kde's rows drawn with probability w_i
    syn_labels: torch.Tensor     # the stored set's labels (class-major, ipc each)
    fmt: torch.memory_format = field(default=torch.contiguous_format)
    targets: torch.Tensor | None = None  # the real labels on the device
    form: StoredForm = field(default_factory=StoredForm)

    def decoded(self, syn: torch.Tensor) -> torch.Tensor:
        """A method's stored set as training images."""
        return self.form.decode(syn)

    def decoded_labels(self) -> torch.Tensor:
        """The labels of decoded()."""
        return self.form.decode_labels(self.syn_labels)

    def pixel_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel values 0 and 1, standardised (1 x C x 1 x 1)."""
        return -self.mean / self.std, (1 - self.mean) / self.std

    def real_batch(self, gens: Gens, params: DSAParams | None) -> Batch:
        """Draw the shared rows, standardise and augment them (one DSA parameter set per class)."""
        d = self.sampler.draw(gens.main, gens.groups, gens.kde, gens.balanced)
        index, labels = d.index.to(self.device), d.labels.to(self.device)
        x = to_float(self.images[index], self.mean, self.std)
        if params is not None:
            x = self.dsa.apply(x, params.take(labels))
        return Batch(x.contiguous(memory_format=self.fmt), labels, self.attributes[index],
                     d.uniform.to(self.device), d.drawn_only.to(self.device),
                     d.kde_take.to(self.device) if self.importance else None,
                     self.weights[index] if self.weights is not None else None,
                     d.balanced_take.to(self.device) if d.balanced_take is not None else None)

    def class_params(self, gens: Gens) -> DSAParams | None:
        """The iteration's DSA parameters, one set per class (siamese: the same for real and synthetic images)."""
        return self.dsa.sample(self.ctx.num_classes, gens.main) if self.dsa is not None else None

    def forward(self, x: torch.Tensor, net: ConvNet | None = None) -> torch.Tensor:
        """Features of a batch through `net` (default: the shared one; cache-sized row chunks on CPU), float32."""
        with autocast(self.device):
            return (net or self.net).embed_rows(x.contiguous(memory_format=self.fmt)).float()


# --------------------------------------------------------------------------- training a network

def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, g: torch.Generator,
               dsa: DSA | None, fmt: torch.memory_format, device: torch.device,
               loss_of: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """One SGD step on a batch: DSA (own draw from g), forward under autocast, loss_of(logits), backward, step."""
    if dsa is not None:
        x = dsa.apply(x, dsa.sample(len(x), g))
    with autocast(device):
        out = net(x.contiguous(memory_format=fmt)).float()
    loss = loss_of(out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_on_set(run: Run, net: ConvNet, opt: torch.optim.Optimizer, data: torch.Tensor, g: torch.Generator,
                 epochs: int) -> None:
    """Train a network on a method's synthetic set for some epochs (DSA on, as in DC/DSA): DC's inner loop
    and COBRA's warm start."""
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g).to(run.device)
        for s in range(0, len(data), run.cfg.batch_train):
            sel = perm[s:s + run.cfg.batch_train]
            train_step(net, opt, data[sel], g, run.dsa, run.fmt, run.device,
                       lambda out, sel=sel: F.cross_entropy(out, run.syn_labels[sel]))


def train_on_real(run: Run, net: ConvNet, opt: torch.optim.Optimizer, g: torch.Generator, n_images: int) -> None:
    """One pass of the network over n_images real images drawn uniformly (IDC's n_data), with DSA."""
    picks = torch.randint(len(run.images), (n_images,), generator=g).to(run.device)
    for s in range(0, len(picks), run.cfg.batch_train):
        sel = picks[s:s + run.cfg.batch_train]
        train_step(net, opt, to_float(run.images[sel], run.mean, run.std), g, run.dsa, run.fmt, run.device,
                   lambda out, sel=sel: F.cross_entropy(out, run.targets[sel]))


# --------------------------------------------------------------------------- gradient matching (DC)

def dc_match(run: Run, net: ConvNet, method: str, syn: torch.Tensor, b: Batch, params: DSAParams | None,
             per_class: int | None = None) -> torch.Tensor:
    """Sum over classes of one method's gradient-matching loss (its registry dc_loss) against the shared real
    batch (`syn`: class-major training images, `per_class` each, default the IPC)."""
    ipc, loss = per_class or run.cfg.ipc, torch.zeros((), device=run.device)
    for c in range(run.ctx.num_classes):
        xs = syn[c * ipc:(c + 1) * ipc]
        if params is not None:
            xs = run.dsa.apply(xs, params.take(torch.full((ipc,), c, device=run.device)))
        gw_syn = syn_grad(net, xs.contiguous(memory_format=run.fmt), c, run.device)
        grad_of = lambda rows, w, c=c: real_grad(net, b.x[rows], c, w, run.device)  # noqa: E731
        loss = loss + REGISTRY[method].dc_loss(gw_syn, grad_of, b, c, run.ctx)
    return loss


Match = Callable[[Run, ConvNet, str, torch.Tensor, Batch, "DSAParams | None", "int | None"], torch.Tensor]
Batches = Callable[[int, "DSAParams | None"], dict[str, Batch]]   # (matching step, DSA params) -> each method's batch


def dc_outer_loop(run: Run, state: State, gens: Gens, net_of: Callable[[str], ConvNet],
                  images_of: Callable[[str], torch.Tensor], between: Callable[[], None],
                  per_class: int | None = None, batches: Batches | None = None,
                  match: Match = dc_match) -> dict[str, torch.Tensor]:
    """DC's outer loop (loops()[0] matching steps of every method against one shared real batch each, or each
    method's own from `batches` (DREAM's picks); `between` run after every step but the last), each method's mean
    loss over its steps. `match` is the loss of one method's images against a batch (DC's, or CAFE's)."""
    outer, _ = run.cfg.loops()
    totals = {m: torch.zeros((), device=run.device) for m in run.methods}
    for ol in range(outer):
        params = run.class_params(gens)
        own = batches(ol, params) if batches is not None else None
        shared = run.real_batch(gens, params) if own is None else None
        for m in run.methods:
            loss = match(run, net_of(m), m, images_of(m), own[m] if own is not None else shared, params, per_class)
            state.opts[m].zero_grad(set_to_none=True)
            loss.backward()
            state.opts[m].step()
            totals[m] += loss.detach()
        if ol < outer - 1:
            between()
    return {m: totals[m] / outer for m in run.methods}
