"""Synthetic sets: the result type, and saving / loading them (safetensors + a grid PNG)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import cache
from ..errors import CorruptArtifact, InvalidArgument
from ..images import png_bytes, tile, to_uint8, to_unit

SET_FILE = "synthetic.safetensors"
GRID_FILE = "grid.png"
TRAJECTORY_FILE = "trajectory.safetensors"  # the snapshots; the points are in SET_FILE's metadata
FORMATION_FILE = "formation.safetensors"    # IDC: the stored images whose tiles SET_FILE's images decode


@dataclass
class SyntheticSet:
    """One method's distilled images (normalised space) and how they were made."""

    method: str
    images: torch.Tensor        # float32 N x C x H x W, standardised with mean/std
    labels: torch.Tensor        # int64 N
    mean: torch.Tensor          # per-channel mean of the real training images in [0, 1]
    std: torch.Tensor
    final_loss: float
    seconds: float              # wall time of the whole side-by-side run (shared by its methods)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    trajectory: list[dict] = field(default_factory=list)  # engine.trajectory points, oldest first
    snapshots: torch.Tensor | None = None                  # uint8 P x N x C x H x W: the set at each point
    formation: torch.Tensor | None = None                  # IDC: the stored images (meta["factor"]^2 tiles each)

    def unit(self) -> torch.Tensor:
        """Images in [0, 1] for display (un-standardised, clipped)."""
        return to_unit(self.images, self.mean, self.std)

    def to_uint8(self) -> torch.Tensor:
        return to_uint8(self.unit())


def save_synthetic(sets: dict[str, SyntheticSet], out_dir: str | Path) -> dict[str, Path]:
    """Write out_dir/<method>/synthetic.safetensors and grid.png; returns the tensor paths."""
    out = {}
    for name, s in sets.items():
        folder = Path(out_dir) / cache.safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"method": s.method, "final_loss": s.final_loss, "seconds": s.seconds,
                "loss_history": s.loss_history, **s.meta, "trajectory": s.trajectory}
        cache.save_tensors(folder / SET_FILE,
                           {"images": s.images, "labels": s.labels, "mean": s.mean, "std": s.std}, meta)
        if s.snapshots is not None:
            cache.save_tensors(folder / TRAJECTORY_FILE, {"snapshots": s.snapshots.contiguous()},
                               {"iterations": [p["iteration"] for p in s.trajectory]})
        if s.formation is not None:
            cache.save_tensors(folder / FORMATION_FILE, {"images": s.formation.contiguous()},
                               {"factor": s.meta.get("factor")})
        cache.atomic_write_bytes(folder / GRID_FILE, grid_png(s))
        out[name] = folder / SET_FILE
    return out


def load_synthetic(path: str | Path) -> SyntheticSet:
    """Read a set written by save_synthetic (the file, or its method folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / SET_FILE
    if not path.is_file():
        raise InvalidArgument(f"no synthetic set at {path}", "pass a folder written by `distill --out`")
    tensors, meta = cache.load_tensors(path)
    missing = {"images", "labels", "mean", "std"} - set(tensors)
    if missing:
        raise CorruptArtifact(f"{path} lacks {sorted(missing)}", "distill again")
    rest = {k: v for k, v in meta.items() if k not in ("method", "final_loss", "seconds", "loss_history", "trajectory")}
    snap = path.parent / TRAJECTORY_FILE
    snapshots = cache.load_tensors(snap)[0]["snapshots"] if snap.is_file() else None
    form = path.parent / FORMATION_FILE
    formation = cache.load_tensors(form)[0]["images"].float() if form.is_file() else None
    return SyntheticSet(meta.get("method", path.parent.name), tensors["images"].float(), tensors["labels"].long(),
                        tensors["mean"].float(), tensors["std"].float(), float(meta.get("final_loss", "nan")),
                        float(meta.get("seconds", 0.0)), [tuple(x) for x in meta.get("loss_history", [])], rest,
                        list(meta.get("trajectory") or []), snapshots, formation)


def class_rows(s: SyntheticSet) -> torch.Tensor:
    """The set's uint8 images ordered class by class (stable), for a one-row-per-class grid."""
    return s.to_uint8()[torch.argsort(s.labels, stable=True)]


def grid_png(s: SyntheticSet, scale: int = 2, pad: int = 2) -> bytes:
    """A PNG with one row per class and one column per synthetic image."""
    per = int(torch.bincount(s.labels).max()) if len(s.labels) else 1
    return png_bytes(tile(class_rows(s), ncols=per, pad=pad, scale=scale))
