"""Trajectories: how each method's synthetic set moves while it is distilled (docs/DISTILL.md).

At every track point (iteration 0, every `every` iterations, and the last) the loop hands each
method's current set to a Tracker, which measures the attribute probe's aligned share and, when
asked (costly), the accuracies of one short evaluation training. The loop adds the matching loss
and keeps a uint8 snapshot of the images, so a set's path can be drawn on the embedding map.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from .attribute_probe import Probe, synthetic_aligned_share
from .data import BiasedSplit
from .distill import SyntheticSet
from .evaluate import EvalPreset, evaluate_synthetic
from .results import ACCURACIES

SHORT_EVAL_FRACTION = 3    # --track-eval trains one net for epochs // 3 of the evaluation preset


def short_eval(cfg: EvalPreset) -> EvalPreset:
    """The short evaluation of --track-eval: one training of a third of the preset's epochs."""
    return replace(cfg, epochs=max(1, cfg.epochs // SHORT_EVAL_FRACTION), seeds=1)


@dataclass
class Tracker:
    """Measures one method's current synthetic set at a track point (no autograd, no shared RNG): the
    distill package's Tracker protocol, with the attribute probe and optionally a short evaluation."""

    every: int
    probe: Probe
    aligned_attribute: Sequence[int]
    real_aligned_share: float
    test: BiasedSplit | None = None   # given: one short evaluation training per point (--track-eval)
    eval_cfg: EvalPreset | None = None
    eval_seed: int = 0
    flip: bool = True
    device: str | None = None

    def key(self) -> dict:
        """What decides the trajectory besides the run itself (checkpoints of other tracking are refused)."""
        key: dict = {"every": self.every, "eval": self.test is not None, "probe": dict(self.probe.meta)}
        key["probe"].pop("seconds", None)
        if self.test is not None and self.eval_cfg is not None:
            key.update(eval_epochs=short_eval(self.eval_cfg).epochs, eval_seed=self.eval_seed)
        return key

    def measure(self, images: torch.Tensor, unit: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                std: torch.Tensor, should_stop=None) -> dict:
        """{aligned_share[, accuracy, aligned_accuracy, conflicting_accuracy, worst_group_accuracy]} of a set:
        `images` in the distillation's standardised space (CPU), `unit` the same in [0, 1] (to_unit)."""
        point = {"aligned_share": synthetic_aligned_share(self.probe, unit, labels.cpu(), self.aligned_attribute)}
        if self.test is not None:
            ev = evaluate_synthetic(images, labels.cpu(), self.test, short_eval(self.eval_cfg), [self.eval_seed],
                                    mean=mean, std=std, device=self.device, flip=self.flip,
                                    should_stop=should_stop, stage="track")
            point.update({k: ev[k] for k in ACCURACIES})
        return point


def amplification(trajectory: Sequence[dict], real_share: float) -> dict:
    """Aligned share at the start, its peak and the end, each minus the real data's share (points)."""
    shares = [p["aligned_share"] for p in trajectory if p.get("aligned_share") is not None]
    if not shares:
        return {"start": None, "peak": None, "end": None}
    return {"start": shares[0] - real_share, "peak": max(shares) - real_share, "end": shares[-1] - real_share}


def map_positions(encoder, z_map, coords, sets: Mapping[str, SyntheticSet], device=None) -> dict[str, dict]:
    """Each set on an embedding map, embedded by the map's SupCon encoder and placed by projection.place:
    {method: {"final": [N, 2], "distance": [N] (to the nearest real image, embedding space), "labels": [N],
    "path": [P, N, 2] or None (the snapshots' positions), "iterations": [P]}}."""
    import numpy as np

    from .embed import embed_images
    from .projection import place
    out = {}
    for m, s in sets.items():
        final, dist = place(z_map, coords, embed_images(encoder, s.unit(), device))
        path = None
        if s.snapshots is not None and len(s.snapshots):
            p, n = s.snapshots.shape[:2]
            z = embed_images(encoder, s.snapshots.reshape(p * n, *s.snapshots.shape[2:]), device)
            path = place(z_map, coords, z)[0].reshape(p, n, 2)
        out[m] = {"final": final, "distance": dist, "labels": np.asarray(s.labels.cpu(), dtype=np.int64),
                  "path": path, "iterations": [pt["iteration"] for pt in s.trajectory]}
    return out
