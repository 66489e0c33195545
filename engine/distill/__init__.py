"""Dataset distillation with every registered method side by side, under any registered backbone (DM, DC, IDC,
MTT: engine/distill/backbones).

    from engine import distill as D
    cfg = D.config_for("quick", "dm", ipc=10)
    sets = D.distill(train, cfg, D.METHODS, weights=w)      # {method: SyntheticSet}
    D.save_synthetic(sets, out_dir); D.load_synthetic(out_dir / "kde")

Layout, each module depending only on the engine's foundations, data and augment: config (DistillConfig, Option),
streams (the named random streams), methods (the method registry) and objectives (their MTT experts' objectives),
sampler (the shared real batch), toolkit (what backbones share: Run, Gens, training and DC matching), starts
(initial sets), grads (DC's two gradients), experts (MTT's cached expert trajectories), backbones (the backbone
registry: one module each), tracking (track points, the Tracker protocol), checkpoint (State, Checkpoint), loop
(the side-by-side loop), sets (SyntheticSet, files), losses (each method's loss on hand-made inputs). This file
only re-exports.
"""
from __future__ import annotations

from ..images import to_unit
from ..nets import init_network, memory_format
from .backbones import REGISTRY as BACKBONES, Backbone, check_config, config_for, default_config, initial_sets
from .checkpoint import CHECKPOINT
from .config import DISTILL_VERSION, INITS, KDE_SAMPLINGS, MAX_ITERATIONS, DistillConfig, Option
from .loop import channel_stats, check_inputs, check_ipc, distill
from .losses import dc_class_loss, dm_losses
from .methods import METHODS, REGISTRY, Batch, Context, Method, check_methods, get, match_distance
from .sampler import Draw, Sampler
from .sets import SyntheticSet, grid_png, load_synthetic, save_synthetic
from .starts import start
from .streams import rng
from .tracking import Tracker, resolve_every, track_points


def algorithms() -> tuple[str, ...]:
    """The registered backbones' names (a backbone registered later is included)."""
    return tuple(BACKBONES)


__all__ = ["BACKBONES", "CHECKPOINT", "DISTILL_VERSION", "INITS", "KDE_SAMPLINGS", "MAX_ITERATIONS", "METHODS",
           "REGISTRY", "Backbone", "Batch", "Context", "DistillConfig", "Draw", "Method", "Option", "Sampler",
           "SyntheticSet", "Tracker", "algorithms", "channel_stats", "check_config", "check_inputs", "check_ipc",
           "check_methods", "config_for", "dc_class_loss", "default_config", "distill", "dm_losses", "get",
           "grid_png", "init_network", "initial_sets", "load_synthetic", "match_distance", "memory_format",
           "resolve_every", "rng", "save_synthetic", "start", "to_unit", "track_points"]
