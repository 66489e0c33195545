"""The distillation config every backbone shares, a backbone's own settings (`Option`, `cfg.options`) and the
checks that need no data. Each backbone's presets and own options live in its module (engine/distill/backbones).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..augment import DSA
from ..errors import InvalidArgument
from ..nets import ConvNetConfig

DISTILL_VERSION = 3  # bump when a change alters the synthetic sets a config produces
INITS = ("method", "real", "balanced", "noise")
KDE_SAMPLINGS = ("importance", "weighted")
MAX_ITERATIONS = 1_000_000   # bounds every count (docs/DISTILL.md): a typo must not run forever
MAX_IPC = 10_000


@dataclass(frozen=True)
class Option:
    """One of a backbone's own settings: a field of its options dataclass, with its range, help and CLI flag.
    Under that backbone it enters the run key (by its field name); under any other it is refused."""

    name: str                     # the field, and the key in the run's config
    help: str                     # one line, for the CLI, the form and the docs
    flag: str | None = None       # the CLI flag without dashes; None: set by overrides only
    low: float = 0                # smallest allowed value
    high: float = MAX_ITERATIONS  # largest allowed value
    kind: type = int              # int or float
    label: str = ""               # the Distill form's label; "" keeps it off the form

    def check(self, value: Any) -> None:
        """InvalidArgument naming the setting and its range unless `value` is allowed."""
        shown = self.name.replace("_", "-")
        if self.kind is float:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or not value > self.low or value > self.high:
                raise InvalidArgument(f"{self.name} must be a positive number, got {value!r}",
                                      f"give {self.name} > {self.low:g}")
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < self.low:
            kind = "a positive" if self.low else "a non-negative"
            raise InvalidArgument(f"{shown} must be {kind} integer, got {value!r}", f"give {self.name} >= {self.low}")
        if value > self.high:
            raise InvalidArgument(f"{shown} {value} is above the limit of {self.high:,}",
                                  f"give {self.name} between {self.low} and {self.high:,}")


@dataclass(frozen=True)
class DistillConfig:
    """Everything that determines a distillation run (device aside): the shared settings, and in `options`
    the backbone's own (None when it has none)."""

    algorithm: str = "dm"         # the backbone (engine/distill/backbones)
    ipc: int = 10
    iterations: int = 200
    batch_real: int = 64          # real images per class per iteration
    lr_img: float = 1.0
    momentum: float = 0.5         # SGD momentum on the synthetic images
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"
    dsa: str = "color_crop_cutout_flip_scale_rotate"  # "none" disables; flip dropped for digits
    # method: each method starts from the real images its target favours (methods.py: Method.start);
    # real | balanced | noise: one shared start for every method
    init: str = "method"
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    group_min: int = 2            # FairDD: top each present group up to this many real images
    fairdd_reduction: str = "mean"  # mean over groups (our choice) | sum (FairDD's code)
    lr_net: float = 0.01          # DC: network SGD between matching steps
    outer_loop: int = 0           # DC: 0 = by IPC (docs/REFERENCES.md table)
    inner_loop: int = 0
    batch_train: int = 256        # training a network on a set (DC's inner loop, COBRA's warm start, experts)
    # KDE: "importance" draws kde_batch real images per class with probability w_i and matches their
    # plain mean; "weighted" weights the uniform batch. Both estimate sum_i w_i phi(x_i), but with
    # most weight on a few % of samples a weighted uniform batch has an effective size of ~1
    # (measured: ESS 2,139 of 60,000 on bg-fmnist at 5%), so its target jumps between samples.
    kde_sampling: str = "importance"
    kde_batch: int = 64
    # COBRA (DM): epochs its own copy of the iteration's random net is trained on its current set before
    # matching; -1 = by IPC as in COBRA's code (50 at IPC 50, 100 at IPC 100, else 10), 0 = no warm start
    cobra_warmup: int = -1
    options: Any = None           # the backbone's own settings (a frozen dataclass of its Options)

    def replace(self, **changes: Any) -> "DistillConfig":
        """A copy with shared fields and the backbone's own options changed by name (unknown: InvalidArgument)."""
        shared = {f.name for f in fields(self)} - {"options"}
        own = {f.name for f in fields(self.options)} if self.options is not None else set()
        unknown = set(changes) - shared - own
        if unknown:
            raise InvalidArgument(f"unknown distillation setting(s) {sorted(unknown)} for {self.algorithm}",
                                  f"use fields of DistillConfig ({', '.join(sorted(shared))})"
                                  + (f" or {self.algorithm}'s own ({', '.join(sorted(own))})" if own else ""))
        out = replace(self, **{k: v for k, v in changes.items() if k in shared})
        mine = {k: v for k, v in changes.items() if k in own}
        return replace(out, options=replace(out.options, **mine)) if mine else out

    def names(self) -> set[str]:
        """Every setting a config of this backbone takes by name (the shared fields and its own options)."""
        own = {f.name for f in fields(self.options)} if self.options is not None else set()
        return ({f.name for f in fields(self)} - {"options"}) | own

    def key(self) -> dict:
        """The fields that determine the result (not the device or the checkpoint cadence), the backbone's own
        options flat beside the shared ones: a backbone's key is the one from before options had their class."""
        d = asdict(self)
        for name in ("device", "checkpoint_every", "options"):
            d.pop(name)
        if self.options is not None:
            d.update(asdict(self.options))
        return d

    def loops(self) -> tuple[int, int]:
        """DC (outer, inner) loops: explicit, else DC's table by IPC."""
        if self.outer_loop and self.inner_loop:
            return self.outer_loop, self.inner_loop
        table = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15))
        for ipc_max, outer, inner in table:
            if self.ipc <= ipc_max:
                return self.outer_loop or outer, self.inner_loop or inner
        return self.outer_loop or 50, self.inner_loop or 10

    def warmup_epochs(self) -> int:
        """COBRA's warm-start epochs, resolved."""
        if self.cobra_warmup >= 0:
            return self.cobra_warmup
        return {50: 50, 100: 100}.get(self.ipc, 10)

    def net_config(self, channels: int, num_classes: int, image_size: int) -> ConvNetConfig:
        """The ConvNet a run distills with (and MTT's experts train)."""
        return ConvNetConfig(channels=channels, num_classes=num_classes, image_size=image_size, width=self.width,
                             depth=self.depth, norm=self.norm)


_POSITIVE = ("ipc", "iterations", "batch_real", "width", "depth", "checkpoint_every", "batch_train", "kde_batch")
_NON_NEGATIVE = ("outer_loop", "inner_loop", "group_min")
_UPPER = {"ipc": MAX_IPC, "iterations": MAX_ITERATIONS, "batch_real": 100_000, "width": 4096,
          "checkpoint_every": MAX_ITERATIONS, "batch_train": 100_000, "kde_batch": 100_000,
          "outer_loop": 10_000, "inner_loop": 10_000, "group_min": 10_000}


def check_shared(cfg: DistillConfig) -> None:
    """Range checks of the shared settings (a backbone checks its own options: backbones.check_config)."""
    def bad(what: str, fix: str) -> None:
        raise InvalidArgument(what, fix)

    for names, low in ((_POSITIVE, 1), (_NON_NEGATIVE, 0)):
        for name in names:
            Option(name, "", low=low, high=_UPPER.get(name, MAX_ITERATIONS)).check(getattr(cfg, name))
    if not isinstance(cfg.cobra_warmup, int) or isinstance(cfg.cobra_warmup, bool) or not -1 <= cfg.cobra_warmup <= 10_000:
        bad(f"cobra_warmup must be an integer from -1 to 10,000, got {cfg.cobra_warmup!r}",
            "give -1 (by IPC, as COBRA's code), 0 (no warm start) or a number of epochs")
    for name in ("lr_img", "lr_net"):
        Option(name, "", kind=float).check(getattr(cfg, name))
    if not isinstance(cfg.momentum, (int, float)) or not 0 <= cfg.momentum < 1:
        bad(f"momentum must be in [0, 1), got {cfg.momentum!r}", "use e.g. 0.5")
    if cfg.init not in INITS:
        bad(f"unknown init {cfg.init!r}", f"use one of: {', '.join(INITS)}")
    if cfg.norm not in ("instancenorm", "batchnorm", "none"):
        bad(f"unknown norm {cfg.norm!r}", "use instancenorm, batchnorm or none")
    if cfg.kde_sampling not in KDE_SAMPLINGS:
        bad(f"unknown kde_sampling {cfg.kde_sampling!r}", f"use one of: {', '.join(KDE_SAMPLINGS)}")
    if cfg.fairdd_reduction not in ("mean", "sum"):
        bad(f"unknown fairdd_reduction {cfg.fairdd_reduction!r}", "use mean or sum")
    if cfg.depth > 6:
        bad(f"depth {cfg.depth} is too deep for 32x32 images", "use depth 1..5 (3 is the standard)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2 ** 63:
        bad(f"seed {cfg.seed!r} is not a non-negative integer", "give a whole number such as 0")
    if cfg.dsa != "none":
        DSA(cfg.dsa)  # raises InvalidArgument for unknown families
