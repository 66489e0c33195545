"""SupCon surrogate model (Khosla et al. 2020) whose embedding makes bias-aligned samples dense.

A small ConvNet encoder (engine.nets features) + MLP projection head is trained with the
supervised-contrastive loss on two augmented views of the biased training set. Augmentations
are geometric only (translate, flip unless digits): colour jitter or grayscale would erase the
colour bias the KDE must see (docs/KDE.md). Weights and embeddings are cached as safetensors.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import cache
from .data import REGISTRY, BiasedSplit, check_seed
from .device import autocast, pick_device
from .errors import InvalidArgument
from .images import to_float
from .nets import ConvNet, ConvNetConfig, seeded
from .progress import Progress, report

EMBED_VERSION = 1  # bump when training or embedding changes: invalidates cached models/embeddings


@dataclass(frozen=True)
class EmbedPreset:
    """Settings of the SupCon surrogate: encoder size, training budget, loss temperature."""

    width: int = 16            # ConvNet channels (16 keeps a CPU step ~0.1 s; 128 in "paper")
    depth: int = 3             # ConvNet blocks
    norm: str = "instancenorm"
    hidden_dim: int = 256      # projection head hidden layer
    dim: int = 128             # embedding dimension
    steps: int = 150           # optimiser steps
    batch_size: int = 128      # images per step (two views each)
    lr: float = 2e-3           # Adam
    weight_decay: float = 1e-4
    supcon_temperature: float = 0.1  # Khosla et al.'s default
    max_train: int | None = 10000    # training subsample (stratified by nothing: uniform, seeded); None = all
    shift: int = 4             # max translation in pixels (random crop with replicate padding)
    embed_batch: int = 1024


PRESETS: dict[str, EmbedPreset] = {
    # tiny: seconds, for tests and the dashboard's DDAUDIT_TINY mode (plumbing, not results)
    "tiny": EmbedPreset(steps=3, batch_size=32, width=8, hidden_dim=32, dim=16, max_train=400),
    "quick": EmbedPreset(),
    # our choice (the KDE paper publishes no SupCon settings): the standard ConvNet-3 and a longer run
    "paper": EmbedPreset(width=128, steps=3000, batch_size=256, lr=1e-3, max_train=None),
}


def get_preset(preset: str | EmbedPreset) -> EmbedPreset:
    """A preset by name (or pass one through), with the valid names in the error."""
    if isinstance(preset, EmbedPreset):
        return preset
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown embedding preset {preset!r}", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


class SupConNet(nn.Module):
    """ConvNet features -> MLP projection head -> L2-normalised embedding."""

    def __init__(self, channels: int, image_size: int, p: EmbedPreset):
        super().__init__()
        self.encoder = ConvNet(ConvNetConfig(channels=channels, num_classes=1, image_size=image_size,
                                             width=p.width, depth=p.depth, norm=p.norm))
        self.head = nn.Sequential(nn.Linear(self.encoder.feature_dim, p.hidden_dim), nn.ReLU(inplace=True),
                                  nn.Linear(p.hidden_dim, p.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder.embed_rows(x)).float(), dim=1)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out): mean over anchors with >= 1 positive."""
    n = z.shape[0]
    sim = (z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))  # an anchor is never its own contrast
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    keep = n_pos > 0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / n_pos[keep]
    return -mean_log_prob_pos.mean()


def augment(x: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random translation (replicate padding keeps a coloured background) and optional h-flip."""
    n, c, h, w = x.shape
    if shift > 0:
        xp = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # n, h
        cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])  # n, w
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def _prep(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 -> float in [-1, 1] on the device (channels_last on CUDA)."""
    x = to_float(images.to(device, non_blocking=True)).mul_(2.0).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _key(train: BiasedSplit, p: EmbedPreset, seed: int) -> str:
    return cache.cache_key(dataset=train.dataset, ratio=train.meta.get("conflict_ratio"),
                           data_seed=train.meta.get("seed"), n=len(train), content=cache.tensor_digest(train.images, train.targets)[:16],
                           seed=seed, preset=asdict(p), version=EMBED_VERSION)


def _paths(train: BiasedSplit, p: EmbedPreset, seed: int):
    key = _key(train, p, seed)
    folder = cache.cache_dir("embeddings")
    name = cache.safe_name(train.dataset)
    return folder / f"supcon-{name}-{key}.safetensors", folder / f"emb-{name}-{key}.safetensors"


def train_supcon(train: BiasedSplit, p: EmbedPreset, seed: int, device: torch.device,
                 progress: Progress | None = None) -> SupConNet:
    """Train the SupCon surrogate on (a seeded subsample of) the biased training split."""
    gen = torch.Generator().manual_seed(seed)
    flip = not REGISTRY[train.dataset].digits if train.dataset in REGISTRY else True  # no flip for digits
    n = len(train)
    pool = torch.randperm(n, generator=gen)[:p.max_train] if p.max_train and p.max_train < n else torch.arange(n)
    model = seeded(lambda: SupConNet(train.images.shape[1], train.images.shape[2], p), seed).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / p.steps)))
    bs = min(p.batch_size, len(pool))
    model.train()
    for step in range(p.steps):
        idx = pool[torch.randint(0, len(pool), (bs,), generator=gen)]
        x = _prep(train.images[idx], device)
        views = torch.cat([augment(x, p.shift, flip, gen), augment(x, p.shift, flip, gen)])
        y = train.targets[idx].to(device).repeat(2)
        with autocast(device):
            z = model(views)
        loss = supcon_loss(z.float(), y, p.supcon_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        report(progress, "supcon", step + 1, p.steps, loss=float(loss.detach()))
    model.eval()
    return model


@torch.no_grad()
def embed_images(model: SupConNet, images: torch.Tensor, device=None, batch_size: int = 1024,
                 progress: Progress | None = None) -> torch.Tensor:
    """L2-normalised float32 embeddings [N, D] on CPU of uint8 images (or floats in [0, 1], e.g. synthetic)."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = model.to(dev).eval()
    out = []
    total = math.ceil(len(images) / batch_size)
    for i, start in enumerate(range(0, len(images), batch_size)):
        x = _prep(images[start:start + batch_size], dev)
        with autocast(dev):
            out.append(model(x).float().cpu())
        report(progress, "embed", i + 1, total)
    return F.normalize(torch.cat(out), dim=1) if out else torch.empty(0, model.head[-1].out_features)


def get_encoder(train: BiasedSplit, preset: str | EmbedPreset = "quick", seed: int = 0, device=None,
                progress: Progress | None = None) -> SupConNet:
    """The trained SupCon model for this split (loaded from the safetensors cache or trained and saved)."""
    p, seed = get_preset(preset), check_seed(seed)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model_path, _ = _paths(train, p, seed)
    hit = cache.load_or_none(model_path)
    model = SupConNet(train.images.shape[1], train.images.shape[2], p)
    if hit is not None:
        try:
            model.load_state_dict(hit[0])
            return model.to(dev).eval()
        except RuntimeError:  # shape mismatch: treat as a stale artifact
            model_path.unlink(missing_ok=True)
    model = train_supcon(train, p, seed, dev, progress)
    cache.save_tensors(model_path, model.state_dict(), {"preset": asdict(p), "seed": seed,
                                                        "dataset": train.dataset, "version": EMBED_VERSION})
    return model


def get_embeddings(train: BiasedSplit, preset: str = "quick", seed: int = 0, device=None,
                   progress: Progress | None = None) -> torch.Tensor:
    """float32 [N, D] L2-normalised SupCon embeddings of `train` in its order, cached on disk."""
    p, seed = get_preset(preset), check_seed(seed)
    _, emb_path = _paths(train, p, seed)
    hit = cache.load_or_none(emb_path)
    if hit is not None and hit[0]["z"].shape[0] == len(train):
        return hit[0]["z"]
    model = get_encoder(train, p, seed, device, progress)
    z = embed_images(model, train.images, device, p.embed_batch, progress)
    cache.save_tensors(emb_path, {"z": z}, {"preset": asdict(p), "seed": seed, "dataset": train.dataset,
                                             "version": EMBED_VERSION})
    return z


def knn_probe(z: torch.Tensor, attributes: torch.Tensor, query: torch.Tensor | None = None, k: int = 10,
              chunk: int = 2048) -> float:
    """Leave-one-out k-NN (cosine) accuracy predicting `attributes` for the `query` rows (default all)."""
    z = F.normalize(torch.as_tensor(z).float(), dim=1)
    attributes = torch.as_tensor(attributes).long()
    if query is None:
        q = torch.arange(len(z))
    else:
        query = torch.as_tensor(query)
        q = query.nonzero().flatten() if query.dtype == torch.bool else query.long()
    if len(q) == 0 or len(z) <= k:
        raise InvalidArgument(f"k-NN probe needs more than k={k} samples and at least one query",
                              "use a larger split or a smaller k")
    num = int(attributes.max()) + 1
    correct = 0
    for start in range(0, len(q), chunk):
        rows = q[start:start + chunk]
        sim = z[rows] @ z.T
        sim[torch.arange(len(rows)), rows] = -float("inf")  # leave the query itself out
        nn_idx = sim.topk(k, dim=1).indices
        votes = F.one_hot(attributes[nn_idx], num).sum(1)
        correct += int((votes.argmax(1) == attributes[rows]).sum())
    return correct / len(q)


def with_overrides(preset: str | EmbedPreset, **changes) -> EmbedPreset:
    """A preset with some fields changed (tests and experiments)."""
    return replace(get_preset(preset), **changes)
