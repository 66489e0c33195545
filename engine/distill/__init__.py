"""Dataset distillation (DM, DC, IDC, MTT) with every registered method side by side.

    from engine import distill as D
    cfg = D.config_for("quick", "dm", ipc=10)
    sets = D.distill(train, cfg, D.METHODS, weights=w)      # {method: SyntheticSet}
    D.save_synthetic(sets, out_dir); D.load_synthetic(out_dir / "kde")

Layout, each module depending only on the engine's foundations, data and augment: config (DistillConfig,
presets), methods (the registry: one entry per method), sampler (the shared real batch, RNG streams),
starts (initial sets), grads (DC's two gradients), idc and mtt (their iterations), experts (MTT's cached
expert trajectories), tracking (track points, the Tracker protocol),
checkpoint (State, Checkpoint), loop (the side-by-side loop), sets (SyntheticSet, files), losses (each
method's loss on hand-made inputs). This file only re-exports.
"""
from __future__ import annotations

from ..images import to_unit
from ..nets import init_network, memory_format
from .checkpoint import CHECKPOINT
from .config import (ALGORITHMS, DISTILL_VERSION, INITS, KDE_SAMPLINGS, MAX_ITERATIONS, PRESETS, DistillConfig,
                     check_config, config_for)
from .loop import channel_stats, check_inputs, check_ipc, distill
from .losses import dc_class_loss, dm_losses
from .methods import METHODS, REGISTRY, Batch, Context, Method, check_methods, get, match_distance
from .sampler import Draw, Sampler, rng
from .sets import SyntheticSet, grid_png, load_synthetic, save_synthetic
from .starts import initial_sets, start
from .tracking import Tracker, resolve_every, track_points

__all__ = ["ALGORITHMS", "CHECKPOINT", "DISTILL_VERSION", "INITS", "KDE_SAMPLINGS", "MAX_ITERATIONS", "METHODS",
           "PRESETS", "REGISTRY", "Batch", "Context", "DistillConfig", "Draw", "Method", "Sampler", "SyntheticSet",
           "Tracker", "channel_stats", "check_config", "check_inputs", "check_ipc", "check_methods", "config_for",
           "dc_class_loss", "distill", "dm_losses", "get", "grid_png", "init_network", "initial_sets",
           "load_synthetic", "match_distance", "memory_format", "resolve_every", "rng", "save_synthetic", "start",
           "to_unit", "track_points"]
