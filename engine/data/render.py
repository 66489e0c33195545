"""Renderers: raw images + bias attributes -> the biased benchmark's uint8 images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..corruptions import CORRUPTIONS, corrupt

# FairDD's colour map (docs/REFERENCES.md), attribute i -> RGB.
PALETTE = (
    (255, 0, 0), (255, 128, 0), (255, 255, 0), (255, 255, 128), (0, 255, 0),
    (0, 255, 255), (0, 0, 255), (128, 0, 255), (255, 0, 255), (255, 255, 255),
)


def _pad32(gray: torch.Tensor) -> torch.Tensor:
    h, w = gray.shape[-2:]
    if (h, w) == (32, 32):
        return gray
    ph, pw = 32 - h, 32 - w
    return F.pad(gray, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _palette(attrs: torch.Tensor) -> torch.Tensor:
    return torch.tensor(PALETTE, dtype=torch.float32)[attrs][:, :, None, None]  # N,3,1,1


def render_fg_threshold(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CMNIST (FairDD): pixels >= 128 take the attribute colour, the rest black."""
    g = _pad32(gray)[:, None]
    return torch.where(g >= 128, _palette(attrs), torch.zeros(())).to(torch.uint8)


def render_fg_blend(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """FG-FMNIST: the object blended from black to the attribute colour by its intensity."""
    alpha = _pad32(gray)[:, None].float() / 255.0
    return (alpha * _palette(attrs)).round().to(torch.uint8)


def render_bg(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator, object_white: bool) -> torch.Tensor:
    """Coloured background; the object black (CMNIST-BG) or in its own gray tones (BG-FMNIST)."""
    g = _pad32(gray)[:, None].float()
    alpha = g / 255.0
    obj = g.expand(-1, 3, -1, -1) if object_white else torch.zeros_like(g).expand(-1, 3, -1, -1)
    return (alpha * obj + (1 - alpha) * _palette(attrs)).round().to(torch.uint8)


def render_grayscale(rgb: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CIFAR10-S: attribute 0 = grayscale (luminance in all 3 channels), 1 = original colour."""
    x = rgb.float()
    lum = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand(-1, 3, -1, -1)
    gray = attrs == 0
    return torch.where(gray[:, None, None, None], lum, x).round().to(torch.uint8)


def render_corrupted(rgb: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Corrupted CIFAR-10: image with attribute k gets corruption k."""
    out = torch.empty_like(rgb)
    for k in range(len(CORRUPTIONS)):
        sel = (attrs == k).nonzero().flatten()
        if len(sel):
            for start in range(0, len(sel), 4096):
                part = sel[start:start + 4096]
                out[part] = corrupt(rgb[part], k, gen)
    return out


def render_identity(images: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return images.clone()


def bg(object_white: bool):
    """render_bg with the object white (BG-FMNIST) or black (CMNIST-BG) fixed."""
    return lambda g, a, gen: render_bg(g, a, gen, object_white)
