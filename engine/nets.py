"""ConvNet-D (the dataset-distillation standard): D blocks of conv3x3 -> norm -> ReLU -> avgpool."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class ConvNetConfig:
    channels: int = 3
    num_classes: int = 10
    image_size: int = 32
    width: int = 128
    depth: int = 3              # blocks for a 32x32 image; see blocks()
    norm: str = "instancenorm"  # instancenorm | batchnorm | none

    def blocks(self) -> int:
        """`depth` at 32x32 plus one block per doubling of the side (ConvNetD4 at 64x64, as DM and FairDD
        use for 64x64 images), so the last feature map has the same size at every resolution."""
        extra = max(0, round(math.log2(self.image_size / 32))) if self.image_size > 32 else 0
        return self.depth + extra


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instancenorm":  # GroupNorm with one group per channel == affine instance norm
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class _Pool2x2(torch.autograd.Function):
    """2x2 average pooling as four strided adds: the same sums in the same order as ATen's CPU
    kernel (bit-identical values), but vectorised; ATen's NCHW loop took ~4x as long."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x[..., 0::2, 0::2] + x[..., 0::2, 1::2]
        out += x[..., 1::2, 0::2]
        out += x[..., 1::2, 1::2]
        return out.div_(4)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Unpool2x2.apply(grad)


class _Unpool2x2(torch.autograd.Function):
    """The pooling's gradient (each input gets a quarter of its window's), itself differentiable
    for DC's second-order step: its gradient is the pooling again, as ATen's avg_pool2d_backward."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = grad.shape  # widen the rows, then the columns: two cheap copies, not one 6-d one
        wide = (grad / 4).unsqueeze(-1).expand(n, c, h, w, 2).reshape(n, c, h, 2 * w)
        return wide.unsqueeze(-2).expand(n, c, h, 2, 2 * w).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Pool2x2.apply(grad)


class AvgPool2x2(nn.AvgPool2d):
    """nn.AvgPool2d(2) with a fast CPU path for contiguous NCHW maps of even size (no parameters:
    state dicts are unchanged); CUDA, odd sizes and other layouts use ATen's kernel."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.ndim == 4 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
                and x.is_contiguous() and x.is_floating_point()):
            return _Pool2x2.apply(x)
        return super().forward(x)


class ConvNet(nn.Module):
    """Feature extractor `embed` plus a linear classifier; `forward` returns logits."""

    def __init__(self, cfg: ConvNetConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        in_ch, size = cfg.channels, cfg.image_size
        for _ in range(cfg.blocks()):
            layers += [nn.Conv2d(in_ch, cfg.width, 3, padding=1), _norm(cfg.norm, cfg.width),
                       nn.ReLU(inplace=True), AvgPool2x2()]
            in_ch, size = cfg.width, size // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = cfg.width * size * size
        self.classifier = nn.Linear(self.feature_dim, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features: the phi of distribution matching."""
        return self.features(x).flatten(1)

    def embed_rows(self, x: torch.Tensor) -> torch.Tensor:
        """`embed(x)`, on CPU in equal row chunks sized to the cache (same values: the norm is per sample)."""
        rows = cpu_chunk_rows(self.cfg) if x.device.type == "cpu" else 0
        if rows <= 0 or len(x) <= rows:
            return self.embed(x)
        parts = math.ceil(len(x) / rows)
        return torch.cat([self.embed(part) for part in x.split(math.ceil(len(x) / parts))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed_rows(x))


# On CPU a conv stack is bound by memory traffic: with a batch whose first-layer activations
# (width x H x W floats per image) far exceed the cache, every layer streams them from RAM.
# Chunks of ~12 MB of activations (32 images at width 128, 128 at width 32, 28x28) ran the
# real-batch forward 1.5-2.4x faster than one batch of 640-2,560 images on 2 EPYC cores.
CPU_CHUNK_BYTES = 12 * 2**20


def cpu_chunk_rows(cfg: ConvNetConfig) -> int:
    """Rows per CPU chunk for a per-sample-norm ConvNet; 0 = do not chunk (batch norm mixes rows)."""
    if cfg.norm == "batchnorm":
        return 0
    return max(8, CPU_CHUNK_BYTES // (cfg.width * cfg.image_size * cfg.image_size * 4))


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor cores); contiguous on CPU, where channels_last ran this ConvNet's
    forward and backward 1.1-2x slower (bench/bench_layout.py, docs/DISTILL.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def init_network(net: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default initialisation, drawn from `gen` (not the global RNG): distillation's
    per-iteration random network, re-drawn in place from its (seed, iteration) stream."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = torch.empty(m.weight.shape)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    bound = 1 / math.sqrt(w[0].numel())
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=gen))
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                m.weight.fill_(1)
                m.bias.fill_(0)
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()


def seeded(build: Callable[[], T], seed: int) -> T:
    """build() under torch.manual_seed(seed) without touching the caller's global RNG stream:
    a new module initialised reproducibly (evaluation nets, the probe, the SupCon encoder)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
