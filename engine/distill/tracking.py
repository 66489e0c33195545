"""Where a run is measured while it is distilled (its track points), and what measures it: any object
with the Tracker protocol (engine.trajectory.Tracker is the one the audit uses). The loop needs only
this, so distillation depends on nothing above it."""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch

from ..errors import InvalidArgument

TRACK_POINTS = 10          # default: about this many intervals per run (11 points with the start)
MAX_TRACK_POINTS = 1000    # a typo such as --track-every 1 on 20,000 iterations must not store 20,000 snapshots


class Tracker(Protocol):
    """Measures a method's current synthetic set at a track point (no autograd, no RNG of the loop's)."""

    every: int
    real_aligned_share: float

    def key(self) -> dict:
        """What decides the trajectory besides the run itself (in the checkpoint's fingerprint)."""

    def measure(self, images: torch.Tensor, unit: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                std: torch.Tensor, should_stop: Callable[[], bool] | None = None) -> dict:
        """A point's measurements of one set: `images` standardised (CPU), `unit` the same in [0, 1]."""


def resolve_every(iterations: int, every: int | None) -> int:
    """The tracking interval: None = about TRACK_POINTS points per run, 0 = no tracking, else `every`."""
    if every is None:
        return max(1, math.ceil(iterations / TRACK_POINTS))
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise InvalidArgument(f"track interval {every!r} is not a whole number >= 0",
                              "give --track-every N (iterations between points), or 0 to turn tracking off")
    if every and math.ceil(iterations / every) + 1 > MAX_TRACK_POINTS:
        raise InvalidArgument(f"--track-every {every} gives {math.ceil(iterations / every) + 1:,} points for "
                              f"{iterations:,} iterations (limit {MAX_TRACK_POINTS:,})",
                              f"use --track-every {math.ceil(iterations / (MAX_TRACK_POINTS - 1))} or more")
    return every


def track_points(iterations: int, every: int) -> list[int]:
    """The iterations at which a run is measured: 0, every, 2 every, ... and always the last."""
    if every <= 0:
        return []
    return sorted(set(range(0, iterations, every)) | {iterations})
