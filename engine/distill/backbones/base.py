"""What a backbone is: its name, presets and own options, its stored form, its start, its matching step over all
methods, and its part of the time estimate and of the report's command. The loop, the CLI, the Distill form,
sweeps, the estimate and the report read only this (docs/DESIGN.md "How to add a backbone")."""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, ClassVar, Sequence

import torch

from ...data import BiasedSplit
from ...errors import InvalidArgument
from ...progress import Progress, ShouldStop
from ..checkpoint import State
from ..config import DistillConfig, Option
from ..starts import initial_sets
from ..toolkit import Gens, Run, StoredForm

Step = Callable[[Run, State, Gens], dict]   # one iteration of every method: {method: loss}


class Backbone:
    """One distillation backbone. A subclass sets the class attributes below and step() (and overrides the
    hooks it needs); registering an instance (backbones.register) makes it a choice everywhere."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""                    # short, for menus and tables: "DM"
    summary: ClassVar[str] = ""                  # one line: what it matches (CLI help, the Distill form)
    options: ClassVar[tuple[Option, ...]] = ()   # its own settings: the fields of options_type
    options_type: ClassVar[type | None] = None   # a frozen dataclass; each instance rides in cfg.options
    presets: dict[str, DistillConfig] = {}       # tiny, quick, paper (a subclass gives its own dict)
    cost_key: ClassVar[str | None] = None        # its row of engine/costs.json's distill table (None: name)

    # ------------------------------------------------------------------ settings

    def config(self, preset: str, ipc: int) -> DistillConfig:
        """The preset's config at this IPC (before the request's overrides)."""
        return replace(self.presets[preset], ipc=ipc)

    def check(self, cfg: DistillConfig) -> None:
        """Its own options' ranges (InvalidArgument); a subclass adds rules between them."""
        if self.options_type is not None and not isinstance(cfg.options, self.options_type):
            raise InvalidArgument(f"{self.name}'s config carries {type(cfg.options).__name__} options",
                                  f"build it with config_for(preset, {self.name!r}, ipc)")
        for option in self.options:
            option.check(getattr(cfg.options, option.name))

    def defaults(self, preset: str) -> dict:
        """Its own options' values in a preset, by name."""
        opts = self.presets[preset].options
        return {f.name: getattr(opts, f.name) for f in fields(opts)} if opts is not None else {}

    # ------------------------------------------------------------------ the set

    def form(self, cfg: DistillConfig, image_size: int) -> StoredForm:
        """How a set is stored (default: each stored image is one training image)."""
        return StoredForm()

    def check_data(self, train: BiasedSplit, cfg: DistillConfig) -> None:
        """Refuse an IPC the split cannot start (InvalidArgument with the range)."""
        smallest = int(torch.bincount(train.targets, minlength=train.num_classes).min())
        if cfg.ipc > smallest:
            raise InvalidArgument(f"IPC {cfg.ipc} exceeds the smallest class of {train.dataset} ({smallest} images)",
                                  f"use --ipc between 1 and {smallest}")

    def initial_sets(self, train: BiasedSplit, cfg: DistillConfig, mean: torch.Tensor, std: torch.Tensor,
                     methods: Sequence[str], weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every method's starting stored set (standardised)."""
        return initial_sets(train, cfg, mean, std, methods, weights, self.form(cfg, train.images.shape[-1]))

    # ------------------------------------------------------------------ distilling

    def prepare(self, run: Run, state: State, train: BiasedSplit, weights: torch.Tensor | None,
                progress: Progress | None, should_stop: ShouldStop | None) -> Step:
        """Work a run needs before its first iteration (state's learned values, experts...), then its step."""
        return self.step

    def step(self, run: Run, state: State, gens: Gens) -> dict[str, torch.Tensor]:
        """One iteration of every method (the shared network already re-drawn from gens.main): their losses."""
        raise NotImplementedError(f"backbone {self.name!r} has no step")

    # ------------------------------------------------------------------ estimate and report

    def cost_scale(self, cfg: DistillConfig, quick: DistillConfig, classes: int, costs: dict) -> float:
        """Its seconds per iteration relative to its quick preset's measured ones (width and real batch)."""
        return (cfg.width / quick.width) * (cfg.batch_real / quick.batch_real)

    def extra_seconds(self, cfg: DistillConfig, methods: Sequence[str], train: BiasedSplit, pixels: int,
                      costs: dict) -> dict[str, float]:
        """Estimated seconds of work besides the iterations, by part (e.g. MTT's experts)."""
        return {}

    def reproduce_flags(self, key: dict, preset: str) -> list[str]:
        """Its own CLI flags that reproduce a run's key (the options that differ from the preset's)."""
        default = self.defaults(preset)
        return [f"--{o.flag} {key[o.name]}" for o in self.options
                if o.flag and o.name in key and key[o.name] != default.get(o.name)]
