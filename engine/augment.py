"""DSA: differentiable siamese augmentation (Zhao & Bilen 2021), one family per call.

`DSA.sample(n, generator)` draws ONE family from the strategy (colour = brightness +
saturation + contrast, crop, cutout, flip, scale, rotate) and n rows of random parameters.
`DSA.apply(x, params)` is differentiable w.r.t. x and applies row i of the parameters to
image i; a parameter set with one row is broadcast to the whole batch (the original code's
Siamese/batch mode). Siamese use: apply the SAME params to the real and the synthetic batch.
When the two batches differ in size, either sample one row (shared by everything) or sample
one row per class and expand it to each batch with `params.take(labels)` — that is what
engine.distill does, so real and synthetic images of a class always get identical parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")

# docs/REFERENCES.md parameter ranges (the DSA defaults).
RATIO_SCALE = 1.2       # scale factor per axis in U[1/1.2, 1.2]
RATIO_ROTATE = 15.0     # degrees, U[-15, 15]
PROB_FLIP = 0.5
RATIO_CROP = 0.125      # translate by up to 12.5% of the size, zero border
RATIO_CUTOUT = 0.5      # square of half the size
BRIGHTNESS = 1.0        # x + (U - 0.5) * 1.0
SATURATION = 2.0        # (x - gray) * 2U + gray
CONTRAST = 0.5          # (x - mean) * (U + 0.5) + mean


@dataclass
class DSAParams:
    """One family and its per-row parameters (every tensor has n rows)."""

    family: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return next(iter(self.values.values())).shape[0] if self.values else 0

    def take(self, index: torch.Tensor) -> "DSAParams":
        """Rows `index` (e.g. the class label of each image): expands per-class params to a batch."""
        return DSAParams(self.family, {k: v[index.to(v.device)] for k, v in self.values.items()})

    def to(self, device: torch.device | str) -> "DSAParams":
        return DSAParams(self.family, {k: v.to(device) for k, v in self.values.items()})


class DSA:
    """Siamese augmentation: sample parameters once, apply them to several batches."""

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", flip: bool = True):
        names = [s for s in strategy.split("_") if s]
        unknown = [s for s in names if s not in FAMILIES]
        if unknown or not names:
            from .errors import InvalidArgument
            raise InvalidArgument(f"unknown DSA augmentation(s) {unknown or strategy!r}",
                                  f"use families joined by '_' from: {', '.join(FAMILIES)}")
        if not flip:  # digits: a mirrored 2 or 5 is not a digit
            names = [s for s in names if s != "flip"]
        self.strategy = strategy
        self.families: tuple[str, ...] = tuple(names)

    def __repr__(self) -> str:
        return f"DSA({'_'.join(self.families) or 'none'})"

    def sample(self, n: int, generator: torch.Generator) -> DSAParams:
        """Pick one family and n rows of its parameters (positions as fractions: any image size)."""
        if not self.families:
            return DSAParams("none", {"dummy": torch.zeros(n)})
        k = int(torch.randint(len(self.families), (1,), generator=generator))
        family = self.families[k]

        def u() -> torch.Tensor:
            return torch.rand(n, generator=generator)

        if family == "color":
            v = {"brightness": (u() - 0.5) * BRIGHTNESS, "saturation": u() * SATURATION,
                 "contrast": u() + CONTRAST}
        elif family in ("crop", "cutout"):
            # U[0,1) positions, turned into whole pixels by apply() once the image size is known
            v = {"u": u(), "v": u()}
        elif family == "flip":
            v = {"flip": u() < PROB_FLIP}
        elif family == "scale":
            lo = 1.0 / RATIO_SCALE
            v = {"sx": u() * (RATIO_SCALE - lo) + lo, "sy": u() * (RATIO_SCALE - lo) + lo}
        else:  # rotate
            v = {"theta": (u() - 0.5) * 2 * RATIO_ROTATE / 180 * math.pi}
        return DSAParams(family, v)

    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Augment x (N,C,H,W) with params of N rows, or of 1 row broadcast to all N."""
        if params.family == "none":
            return x
        n = x.shape[0]
        if params.n not in (1, n):
            raise ValueError(f"DSA params have {params.n} rows for a batch of {n}: use 1 row or take()")
        v = {k: t.to(x.device) for k, t in params.values.items()}
        if params.n == 1 and n != 1:
            v = {k: t.expand(n) for k, t in v.items()}
        f = params.family
        if f == "color":
            return _color(x, v)
        if f == "crop":  # whole-pixel shift uniform in [-s, s], s = 12.5% of the side
            sy, sx = (int(d * RATIO_CROP + 0.5) for d in x.shape[-2:])
            dx = (v["u"] * (2 * sx + 1)).floor().long() - sx
            dy = (v["v"] * (2 * sy + 1)).floor().long() - sy
            return _translate(x, dx, dy, max(sx, sy))
        if f == "cutout":  # centre anywhere (DSA's range), square clipped at the border
            h, w = x.shape[-2:]
            side = int(w * RATIO_CUTOUT + 0.5)
            cx = (v["u"] * (w + 1 - side % 2)).floor().long()
            cy = (v["v"] * (h + 1 - side % 2)).floor().long()
            return _cutout(x, cx, cy, side)
        if f == "flip":
            return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        if f == "scale":
            zero = torch.zeros_like(v["sx"])
            theta = torch.stack([torch.stack([v["sx"], zero, zero], 1), torch.stack([zero, v["sy"], zero], 1)], 1)
            return _affine(x, theta)
        if f == "rotate":
            c, s, zero = torch.cos(v["theta"]), torch.sin(v["theta"]), torch.zeros_like(v["theta"])
            theta = torch.stack([torch.stack([c, s, zero], 1), torch.stack([-s, c, zero], 1)], 1)
            return _affine(x, theta)
        raise ValueError(f"unknown DSA family {f!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fresh per-image parameters (training-time augmentation, no siamese partner)."""
        return self.apply(x, self.sample(x.shape[0], generator))


def _color(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    x = x + v["brightness"].to(x.dtype).view(-1, 1, 1, 1)
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * v["saturation"].to(x.dtype).view(-1, 1, 1, 1) + gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * v["contrast"].to(x.dtype).view(-1, 1, 1, 1) + mean


def _translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, s: int) -> torch.Tensor:
    """Shift each image by whole pixels (dx right, dy down; |shift| <= s), zeros shifted in; differentiable."""
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s))
    rows = torch.arange(h, device=x.device).view(1, h) + s - dy.view(n, 1)      # n,h
    cols = torch.arange(w, device=x.device).view(1, w) + s - dx.view(n, 1)      # n,w
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[b, rows.view(n, h, 1), cols.view(n, 1, w)]  # n,h,w,c
    return out.permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, side: int) -> torch.Tensor:
    """Zero a side x side square centred at (cx, cy), clipped at the border."""
    n, _, h, w = x.shape
    half = side // 2
    ys = torch.arange(h, device=x.device).view(1, h)
    xs = torch.arange(w, device=x.device).view(1, w)
    in_y = (ys >= cy.view(n, 1) - half) & (ys < cy.view(n, 1) - half + side)
    in_x = (xs >= cx.view(n, 1) - half) & (xs < cx.view(n, 1) - half + side)
    keep = ~(in_y.view(n, 1, h, 1) & in_x.view(n, 1, 1, w))
    return x * keep.to(x.dtype)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)
