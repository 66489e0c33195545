"""One image path for the whole project: uint8 -> model space -> display, and one tiler."""
from __future__ import annotations

import io
import math

import numpy as np
import torch


def to_float(images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 N,C,H,W -> float in [0,1], optionally standardised per channel (float input kept as it is)."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if mean is not None and std is not None:
        x = (x - mean.view(1, -1, 1, 1).to(x)) / std.view(1, -1, 1, 1).to(x)
    return x


def to_unit(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Standardised images back to [0, 1] (clipped): what a synthetic set looks like."""
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0, 1)


def to_uint8(unit: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 (rounded)."""
    return (unit * 255).round().to(torch.uint8)


def tile(images: np.ndarray | torch.Tensor, ncols: int = 10, pad: int = 2, scale: int = 1) -> np.ndarray:
    """uint8 N x C x H x W -> one H' x W' x 3 mosaic, row-major, white padding; empty input -> 1x1 white."""
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        return np.full((1, 1, 3), 255, np.uint8)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    n, _, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """An H x W x 3 uint8 array as PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()
