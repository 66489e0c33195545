"""ConvNet-D (the dataset-distillation standard): D blocks of conv3x3 -> norm -> ReLU -> avgpool."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConvNetConfig:
    channels: int = 3
    num_classes: int = 10
    image_size: int = 32
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"  # instancenorm | batchnorm | none


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instancenorm":  # GroupNorm with one group per channel == affine instance norm
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ConvNet(nn.Module):
    """Feature extractor `embed` plus a linear classifier; `forward` returns logits."""

    def __init__(self, cfg: ConvNetConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        in_ch, size = cfg.channels, cfg.image_size
        for _ in range(cfg.depth):
            layers += [nn.Conv2d(in_ch, cfg.width, 3, padding=1), _norm(cfg.norm, cfg.width),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            in_ch, size = cfg.width, size // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = cfg.width * size * size
        self.classifier = nn.Linear(self.feature_dim, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features: the phi of distribution matching."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def to_float(images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 N,C,H,W -> float in [0,1], optionally standardised per channel."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if mean is not None and std is not None:
        x = (x - mean.view(1, -1, 1, 1).to(x)) / std.view(1, -1, 1, 1).to(x)
    return x
