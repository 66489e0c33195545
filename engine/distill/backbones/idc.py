"""IDC (Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization", ICML 2022):
multi-formation and its matching iteration. docs/DISTILL.md "IDC".

Each stored synthetic image holds factor x factor tiles; decoding upsamples every tile to a full image,
so IPC stored images give IPC x factor^2 training images for the same storage. Matching is DC's, with
each method's registry target, against a network that is trained on *real* data between matching steps
(IDC's choice: the network sees the real distribution, not the set being learned). The decode is
differentiable, so the images' gradient flows through the upsampling into the stored tiles.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ...data import BiasedSplit
from ...errors import InvalidArgument
from .. import streams
from ..checkpoint import State
from ..config import DistillConfig, Option
from ..toolkit import Gens, Run, StoredForm, dc_outer_loop, train_on_real
from .base import Backbone
from .dc import DC

NET_MOMENTUM, NET_WEIGHT_DECAY = 0.9, 5e-4  # IDC's network optimiser (argument.py: --momentum, weight decay)
REAL_NET = streams.claim("real-net", __name__)  # the real images its network trains on between matching steps


def encode(images: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """IDC's "mix" start: class-major images, ipc x factor^2 per class, shrunk (area) into the tiles of ipc
    stored images per class; tile k (row-major) of stored image n is the class's image k * ipc + n."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    classes = n // (ipc * factor ** 2)
    small = F.interpolate(images, size=(h // factor, w // factor), mode="area")
    tiles = small.view(classes, factor, factor, ipc, c, h // factor, w // factor)
    return tiles.permute(0, 3, 4, 1, 5, 2, 6).reshape(classes * ipc, c, h, w)


def decode(stored: torch.Tensor, factor: int) -> torch.Tensor:
    """Every tile of every stored image upsampled (bilinear, as IDC's decode_zoom) to a full image; the
    tiles of stored image n are decoded images n * factor^2 ... (row-major), so classes stay contiguous."""
    if factor == 1:
        return stored
    n, c, h, w = stored.shape
    tiles = stored.view(n, c, factor, h // factor, factor, w // factor).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor ** 2, c, h // factor, w // factor)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """The labels of decode(): each stored image's label, factor^2 times."""
    return labels.repeat_interleave(factor ** 2)


class Tiles(StoredForm):
    """IDC's multi-formation: each stored image holds factor x factor tiles, each decoded to a full image."""

    def __init__(self, factor: int):
        self.factor = factor

    def encode(self, images: torch.Tensor, ipc: int) -> torch.Tensor:
        return encode(images, ipc, self.factor)

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        return decode(stored, self.factor)


@dataclass(frozen=True)
class IDCOptions:
    """IDC's own settings."""

    factor: int = 0               # 0 = by image size as COBRA's scripts (4 for 64 px and up, else 2; 3 for faces at IPC >= 100)
    idc_net_data: int = 500       # real images the network trains on after each matching step (its n_data)


FACTOR = Option("factor", "multi-formation factor, each stored image holds factor x factor images (default by image "
                "size as COBRA's scripts: 2; 4 for 64-pixel faces)", flag="factor", high=8,
                label="Multi-formation factor (0 = by image size)")
NET_DATA = Option("idc_net_data", "real images the network trains on after each matching step (IDC's n_data)",
                  high=100_000)


def factor_for(cfg: DistillConfig, image_size: int) -> int:
    """The multi-formation factor for images of this size: explicit, else by size as COBRA's scripts."""
    if cfg.options.factor:
        return cfg.options.factor
    if image_size >= 64:
        return 3 if cfg.ipc >= 100 else 4
    return 2


def check_tiles(backbone: Backbone, train: BiasedSplit, cfg: DistillConfig) -> None:
    """The factor must divide the image size and IPC x factor^2 real images must start each class."""
    smallest = int(torch.bincount(train.targets, minlength=train.num_classes).min())
    Backbone.check_data(backbone, train, cfg)
    size = train.images.shape[-1]
    factor = factor_for(cfg, size)
    if factor > 1 and size % factor:
        raise InvalidArgument(f"{backbone.label}'s factor {factor} does not divide the {size}-pixel images",
                              "give --factor that divides the image size (2 or 4 for 32 or 64 pixels)")
    if cfg.ipc * factor ** 2 > smallest:
        raise InvalidArgument(f"{backbone.label} starts IPC {cfg.ipc} x factor^2 {factor ** 2} = {cfg.ipc * factor ** 2} "
                              f"images per class from real ones; the smallest class of {train.dataset} has {smallest}",
                              f"use --ipc up to {smallest // factor ** 2} or a smaller --factor")


def _preset(cfg: DistillConfig, net_data: int = 500) -> DistillConfig:
    return replace(cfg, algorithm="idc", options=IDCOptions(idc_net_data=net_data))


class IDC(Backbone):
    name = "idc"
    label = "IDC"
    summary = ("gradient matching of multi-formation sets (each stored image holds factor x factor images), the "
               "network trained on real data")
    options = (FACTOR, NET_DATA)
    options_type = IDCOptions
    # as COBRA's scripts run it (1,000 iterations, lr_img 0.1, batch_real 256, DC's matching steps by IPC), with
    # IDC's network trained on real data between matching steps; quick: DC's quick sizes
    presets = {"tiny": _preset(DC.presets["tiny"], 16), "quick": _preset(DC.presets["quick"], 128),
               "paper": _preset(DC.presets["paper"])}

    def form(self, cfg: DistillConfig, image_size: int) -> StoredForm:
        return Tiles(factor_for(cfg, image_size))

    def check_data(self, train: BiasedSplit, cfg: DistillConfig) -> None:
        check_tiles(self, train, cfg)

    def step(self, run: Run, state: State, gens: Gens) -> dict[str, torch.Tensor]:
        """The shared random network; DC's matching steps (loops()[0]), each followed by a pass over real data;
        every method matches its decoded set with its registry target."""
        net, form = run.net, run.form
        net.requires_grad_(True)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=run.cfg.lr_net, momentum=NET_MOMENTUM,
                              weight_decay=NET_WEIGHT_DECAY)
        g = streams.rng(run.cfg.seed, gens.it, REAL_NET)
        low, high = run.pixel_range()
        with torch.no_grad():  # IDC keeps the stored images in the pixel range
            for m in run.methods:
                state.syn[m].clamp_(low, high)
        return dc_outer_loop(run, state, gens, lambda m: net, lambda m: form.decode(state.syn[m]),
                             lambda: train_on_real(run, net, opt, g, run.cfg.options.idc_net_data),
                             run.cfg.ipc * form.per_stored)
