"""Ten class-correlated corruptions for Corrupted CIFAR-10, written in torch (no extra dependencies).

Choice (docs/REFERENCES.md leaves the type open): five from LfF's Type 0 list and five from Type 1,
picked so that each is visibly distinct at 32x32 and cheap to compute for 60,000 images:
a mix of noise, blur, resampling, compression and photometric changes. Snow, Frost, Spatter,
Elastic, Glass and Zoom blur were left out: they need texture assets or scikit-image and at
32x32 several collapse into "generic noise" or "generic blur".
"""
from __future__ import annotations

import io

import torch
import torch.nn.functional as F

CORRUPTIONS = (
    "gaussian_noise", "impulse_noise", "gaussian_blur", "motion_blur", "pixelate",
    "jpeg", "brightness", "contrast", "saturate", "fog",
)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = kernel.to(x).expand(c, 1, *kernel.shape[-2:])
    pad = (kernel.shape[-1] // 2, kernel.shape[-1] // 2, kernel.shape[-2] // 2, kernel.shape[-2] // 2)
    return F.conv2d(F.pad(x, pad, mode="reflect"), k, groups=c)


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def _jpeg(x: torch.Tensor, quality: int = 8) -> torch.Tensor:
    from PIL import Image
    import numpy as np
    out = []
    for img in (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def corrupt(images: torch.Tensor, kind: int, generator: torch.Generator) -> torch.Tensor:
    """Apply corruption `kind` (index into CORRUPTIONS) to uint8 N,3,H,W images; returns uint8."""
    if images.numel() == 0:
        return images.clone()
    x = images.float() / 255.0
    name = CORRUPTIONS[kind]
    if name == "gaussian_noise":
        x = x + 0.12 * torch.randn(x.shape, generator=generator)
    elif name == "impulse_noise":  # salt and pepper on 12% of pixels
        u = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator).expand_as(x)
        x = torch.where(u < 0.06, torch.zeros_like(x), torch.where(u > 0.94, torch.ones_like(x), x))
    elif name == "gaussian_blur":
        x = _blur(x, _gaussian_kernel(1.5, 3))
    elif name == "motion_blur":  # horizontal streak
        x = _blur(x, torch.full((1, 1, 1, 9), 1 / 9))
    elif name == "pixelate":
        h, w = x.shape[-2:]
        x = F.interpolate(F.interpolate(x, size=(h // 4, w // 4), mode="area"), size=(h, w), mode="nearest")
    elif name == "jpeg":
        x = _jpeg(x)
    elif name == "brightness":
        x = 1 - (1 - x) * 0.45
    elif name == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * 0.3 + mean
    elif name == "saturate":  # push colours away from gray
        g = _gray(x)
        x = g + (x - g) * 3.0
    elif name == "fog":  # smooth low-frequency haze
        n, _, h, w = x.shape
        haze = torch.rand(n, 1, 4, 4, generator=generator)
        haze = F.interpolate(haze, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        x = x * 0.5 + 0.5 * (0.55 + 0.45 * haze)
    else:  # pragma: no cover - guarded by CORRUPTIONS
        raise ValueError(name)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
