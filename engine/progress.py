"""The one progress contract: long engine functions report typed Events and poll a ShouldStop.

    def long_work(..., progress: Progress | None = None, should_stop: ShouldStop | None = None):
        report(progress, "distill", step, total, losses={...}, eta=12.0)

The CLI draws them as tqdm bars (commands.common.progress_printer), the dashboard as progress bars
and live curves (ui.jobs), sweeps as cells done; each reads the same fields.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping


@dataclass(frozen=True)
class Event:
    """One progress report: `step` of `total` in `stage`, and what the stage has to say besides."""

    stage: str
    step: int = 0
    total: int = 1
    loss: float | None = None                        # a training stage's current loss
    losses: Mapping[str, float | None] | None = None  # distill: each method's latest logged loss
    eta: float | None = None                          # seconds left in the stage
    elapsed: float | None = None                      # seconds spent in the stage (resumed runs included)
    track: Mapping[str, dict] | None = None           # distill: each method's new trajectory point
    real_aligned_share: float | None = None           # distill with tracking: the real data's aligned share
    cached: bool = False                              # the stage's result was read back from a cache
    reused: int | None = None                         # sweep: cells reused from the store
    time: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float | None:
        """step / total in [0, 1]; None when the stage has no known length."""
        return min(1.0, max(0.0, self.step / self.total)) if self.total and self.total > 0 else None

    def within(self, stage: str, offset: int, total: int) -> "Event":
        """The same event renamed and shifted into a longer bar (e.g. one training among several seeds)."""
        return replace(self, stage=stage, step=offset + self.step, total=total)


Progress = Callable[[Event], None]
ShouldStop = Callable[[], bool]


def report(progress: Progress | None, stage: str, step: int = 0, total: int = 1, **extra) -> None:
    """Send an Event to `progress` (if any)."""
    if progress is not None:
        progress(Event(stage, step, total, **extra))
