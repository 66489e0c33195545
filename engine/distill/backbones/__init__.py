"""The backbone registry: one `Backbone` per distillation algorithm (DM, DC, IDC, MTT, DREAM, CAFE), one module each. The
loop, the CLI's flags and refusals, the Distill form, sweeps, the estimate and the report read it; adding a
backbone is one module and one register() (docs/DESIGN.md "How to add a backbone").
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...data import BiasedSplit
from ...errors import InvalidArgument
from ..config import DistillConfig, Option, check_shared
from . import cafe, dc, dm, dream, idc, mtt
from .base import Backbone, Step

REGISTRY: dict[str, Backbone] = {}
PRESET_NAMES = ("tiny", "quick", "paper")


def register(backbone: Backbone) -> Backbone:
    """Make a backbone a choice everywhere (its name unique, its presets complete, its options' names free)."""
    if not backbone.name or backbone.name in REGISTRY:
        raise ValueError(f"backbone name {backbone.name!r} is empty or taken")
    missing = [p for p in PRESET_NAMES if p not in backbone.presets]
    if missing:
        raise ValueError(f"backbone {backbone.name!r} has no preset {missing}")
    shared = set(DistillConfig.__dataclass_fields__) - {"options"}
    clash = [o.name for o in backbone.options if o.name in shared]
    if clash:
        raise ValueError(f"backbone {backbone.name!r}: options {clash} would shadow shared settings")
    for o in backbone.options:  # one flag means one setting, whichever backbones take it
        for other, opt in flag_options().items():
            if o.flag and o.flag == other and opt.name != o.name:
                raise ValueError(f"--{o.flag} already sets {opt.name}")
    REGISTRY[backbone.name] = backbone
    return backbone


def unregister(name: str) -> None:
    """Remove a backbone (tests that register a toy one)."""
    REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered backbones, in registration order."""
    return tuple(REGISTRY)


def get(name: str) -> Backbone:
    """A backbone by name, with the valid names in the error."""
    if name not in REGISTRY:
        raise InvalidArgument(f"unknown algorithm {name!r}", f"use one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def flag_options() -> dict[str, Option]:
    """Every backbone's own CLI flag (without dashes) and the option it sets."""
    return {o.flag: o for b in REGISTRY.values() for o in b.options if o.flag}


def flag_owners(flag: str) -> list[Backbone]:
    """The backbones that take a CLI flag of their own."""
    return [b for b in REGISTRY.values() if any(o.flag == flag for o in b.options)]


def default_config(preset: str, algorithm: str, ipc: int = 10) -> DistillConfig:
    """A preset's config for a backbone (no overrides, not checked)."""
    if preset not in PRESET_NAMES:
        raise InvalidArgument(f"unknown preset {preset!r}", f"use one of: {', '.join(PRESET_NAMES)}")
    return get(algorithm).config(preset, ipc)


def config_for(preset: str, algorithm: str, ipc: int, **overrides) -> DistillConfig:
    """A preset's config for a backbone and IPC, with explicit overrides by name (None = keep), checked."""
    cfg = default_config(preset, algorithm, ipc)
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    check_config(cfg)
    return cfg


def check_config(cfg: DistillConfig) -> None:
    """Range checks that need no data: the shared settings and the backbone's own."""
    backbone = get(cfg.algorithm)
    check_shared(cfg)
    backbone.check(cfg)


def initial_sets(train: BiasedSplit, cfg: DistillConfig, mean: torch.Tensor, std: torch.Tensor,
                 methods: Sequence[str] = ("vanilla",), weights: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """Every method's starting stored set under cfg's backbone (engine/distill/starts.py)."""
    return get(cfg.algorithm).initial_sets(train, cfg, mean, std, methods, weights)


for _backbone in (dm.DM(), dc.DC(), idc.IDC(), mtt.MTT(), dream.DREAM(), cafe.CAFE()):
    register(_backbone)

__all__ = ["REGISTRY", "Backbone", "Step", "check_config", "config_for", "default_config", "flag_options",
           "flag_owners", "get", "initial_sets", "names", "register", "unregister"]
