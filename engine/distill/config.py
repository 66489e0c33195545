"""The distillation config, its presets (tiny, quick, paper) and the checks that need no data."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..augment import DSA
from ..errors import InvalidArgument
from ..nets import ConvNetConfig

DISTILL_VERSION = 3  # bump when a change alters the synthetic sets a config produces
ALGORITHMS = ("dm", "dc", "idc", "mtt")
INITS = ("method", "real", "balanced", "noise")
KDE_SAMPLINGS = ("importance", "weighted")
MAX_ITERATIONS = 1_000_000   # bounds every count (docs/DISTILL.md): a typo must not run forever
MAX_IPC = 10_000


@dataclass(frozen=True)
class DistillConfig:
    """Everything that determines a distillation run (device aside)."""

    algorithm: str = "dm"
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
    batch_train: int = 256        # DC: batch when training the network on the synthetic set
    # KDE: "importance" draws kde_batch real images per class with probability w_i and matches their
    # plain mean; "weighted" weights the uniform batch. Both estimate sum_i w_i phi(x_i), but with
    # most weight on a few % of samples a weighted uniform batch has an effective size of ~1
    # (measured: ESS 2,139 of 60,000 on bg-fmnist at 5%), so its target jumps between samples.
    kde_sampling: str = "importance"
    kde_batch: int = 64
    # COBRA (DM): epochs its own copy of the iteration's random net is trained on its current set before
    # matching; -1 = by IPC as in COBRA's code (50 at IPC 50, 100 at IPC 100, else 10), 0 = no warm start
    cobra_warmup: int = -1
    # IDC (Kim et al. 2022): each stored image holds factor x factor tiles, each upsampled to a training
    # image; 0 = by image size as COBRA's scripts (4 for 64 px and up, else 2; 3 for faces at IPC >= 100).
    factor: int = 0
    idc_net_data: int = 500       # IDC: real images the network trains on after each matching step (its n_data)
    # MTT (Cazenavette et al. 2022; docs/DISTILL.md "MTT"): experts trained on real data (SGD lr_teacher, batch
    # batch_train, DSA), their parameters saved each epoch; a student starts at an expert's epoch below
    # max_start_epoch, takes syn_steps SGD steps on the set (batch_syn images each, 0 = all) with a learnable
    # step size (initial lr_teacher, its own SGD lr_lr), and is matched to the expert expert_epochs later.
    num_experts: int = 100
    expert_train_epochs: int = 50  # epochs each expert trains (>= max_start_epoch - 1 + expert_epochs)
    lr_teacher: float = 0.01
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_lr: float = 1e-05
    batch_syn: int = 0

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

    def formation(self, image_size: int) -> int:
        """IDC's multi-formation factor for images of this size (1 for DM and DC: a stored image is one image)."""
        if self.algorithm != "idc":
            return 1
        if self.factor:
            return self.factor
        if image_size >= 64:
            return 3 if self.ipc >= 100 else 4
        return 2

    def key(self) -> dict:
        """The fields that determine the result (not the device or the checkpoint cadence); IDC's own
        fields only under IDC, so DM and DC keys (and run ids) are the ones from before IDC existed."""
        d = asdict(self)
        d.pop("device")
        d.pop("checkpoint_every")
        if self.algorithm != "idc":
            for name in _IDC_ONLY:
                d.pop(name)
        if self.algorithm != "mtt":
            for name in MTT_ONLY:
                d.pop(name)
        return d

    def net_config(self, channels: int, num_classes: int, image_size: int) -> ConvNetConfig:
        """The ConvNet a run distills with (and MTT's experts train)."""
        return ConvNetConfig(channels=channels, num_classes=num_classes, image_size=image_size, width=self.width,
                             depth=self.depth, norm=self.norm)

    def expert_key(self) -> dict:
        """The fields that determine MTT's experts (not the matching loop's, nor the seed: like MTT's buffer,
        experts are trained once and serve every distillation seed)."""
        return {k: getattr(self, k) for k in ("width", "depth", "norm", "dsa", "batch_train", "lr_teacher",
                                              "num_experts", "expert_train_epochs")}


_IDC_ONLY = ("factor", "idc_net_data")
MTT_ONLY = ("num_experts", "expert_train_epochs", "lr_teacher", "syn_steps", "expert_epochs", "max_start_epoch",
            "lr_lr", "batch_syn")


# quick: narrow net, small real batch, 10x image lr, 100 iterations. With each method starting from its
# own target (init="method") 100 iterations get within 1.5-3.5 points of 300 on both audited datasets
# (docs/RESULTS.md); from a shared random start 300 were needed and still fell short.
_QUICK_DM = DistillConfig(algorithm="dm", iterations=100, batch_real=32, lr_img=10.0, width=32,
                          checkpoint_every=25, kde_batch=32)
_QUICK_DC = DistillConfig(algorithm="dc", iterations=10, batch_real=32, lr_img=0.1, width=32,
                          outer_loop=5, inner_loop=5, checkpoint_every=2, kde_batch=32)
_PAPER_DM = DistillConfig(algorithm="dm", iterations=20000, batch_real=256, lr_img=1.0, width=128,
                          checkpoint_every=500)
_PAPER_DC = DistillConfig(algorithm="dc", iterations=1000, batch_real=256, lr_img=0.1, width=128,
                          checkpoint_every=50)
# IDC as COBRA's scripts run it (1,000 iterations, lr_img 0.1, batch_real 256, DC's matching steps by IPC),
# with IDC's network trained on real data between matching steps; quick: DC's quick sizes.
_QUICK_IDC = replace(_QUICK_DC, algorithm="idc", idc_net_data=128)
_PAPER_IDC = replace(_PAPER_DC, algorithm="idc")
# MTT: its code's defaults (distill.py: 5,000 iterations, syn_steps 20, expert_epochs 3, max_start_epoch 25,
# lr_img 1000, lr_lr 1e-5, lr_teacher 0.01, the whole set per step; buffer.py: 100 experts of 50 epochs, batch 256,
# SGD without momentum). Quick: 2 experts of 6 epochs at batch 64 (a 1,442-image split gets 23 expert steps an
# epoch), a narrow net, 8 unrolled steps of 40 images, 50 iterations at 10x MTT's lr_img (as quick DM takes 10x
# DM's): from one shared random-real start, 60 iterations at lr_img 1,000 moved kde/fairdd to 46.8/45.7%
# accuracy on colored-digits (5%), at 10,000 to 67.0/76.0% (vanilla 27.0/30.7; docs/RESULTS.md).
_PAPER_MTT = DistillConfig(algorithm="mtt", iterations=5000, lr_img=1000.0, width=128, checkpoint_every=250,
                           batch_real=256)
_QUICK_MTT = replace(_PAPER_MTT, iterations=50, lr_img=10000.0, width=32, checkpoint_every=10, batch_train=64,
                     num_experts=2, expert_train_epochs=6, syn_steps=8, expert_epochs=2, max_start_epoch=4,
                     batch_syn=40, kde_batch=32, batch_real=32)
# tiny: seconds, for tests and the dashboard's DDAUDIT_TINY mode (shapes and plumbing, not results)
_TINY_DM = replace(_QUICK_DM, iterations=4, batch_real=8, width=16, checkpoint_every=2, kde_batch=8)
_TINY_DC = replace(_QUICK_DC, iterations=4, batch_real=8, width=16, checkpoint_every=2, outer_loop=1,
                   inner_loop=1, kde_batch=8)
_TINY_IDC = replace(_TINY_DC, algorithm="idc", idc_net_data=16)
_TINY_MTT = replace(_QUICK_MTT, iterations=4, width=16, checkpoint_every=2, num_experts=2, expert_train_epochs=2,
                    syn_steps=2, expert_epochs=1, max_start_epoch=1, batch_train=256, kde_batch=8, batch_real=8)
PRESETS: dict[str, dict[str, DistillConfig]] = {
    "tiny": {"dm": _TINY_DM, "dc": _TINY_DC, "idc": _TINY_IDC, "mtt": _TINY_MTT},
    "quick": {"dm": _QUICK_DM, "dc": _QUICK_DC, "idc": _QUICK_IDC, "mtt": _QUICK_MTT},
    "paper": {"dm": _PAPER_DM, "dc": _PAPER_DC, "idc": _PAPER_IDC, "mtt": _PAPER_MTT},
}


def config_for(preset: str, algorithm: str, ipc: int, **overrides) -> DistillConfig:
    """A preset's config for an algorithm and IPC, with explicit overrides (None = keep)."""
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown preset {preset!r}", f"use one of: {', '.join(PRESETS)}")
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unknown algorithm {algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
    cfg = replace(PRESETS[preset][algorithm], ipc=ipc)
    if preset == "paper" and algorithm == "dm" and isinstance(ipc, int) and ipc >= 100:
        cfg = replace(cfg, lr_img=10.0)  # DM paper: lr_img 10 for IPC >= 100
    unknown = set(overrides) - set(asdict(cfg))
    if unknown:
        raise InvalidArgument(f"unknown distillation setting(s) {sorted(unknown)}",
                              f"use fields of DistillConfig: {', '.join(asdict(cfg))}")
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    check_config(cfg)
    return cfg


_POSITIVE = ("ipc", "iterations", "batch_real", "width", "depth", "checkpoint_every", "batch_train", "kde_batch")
_NON_NEGATIVE = ("outer_loop", "inner_loop", "group_min", "factor", "idc_net_data", "batch_syn")
_MTT_COUNTS = ("num_experts", "expert_train_epochs", "syn_steps", "expert_epochs", "max_start_epoch")
_UPPER = {"num_experts": 10_000, "expert_train_epochs": 9_999, "syn_steps": 10_000, "expert_epochs": 9_999,
          "max_start_epoch": 9_999, "batch_syn": MAX_IPC * 1000,
          "ipc": MAX_IPC, "iterations": MAX_ITERATIONS, "batch_real": 100_000, "width": 4096,
          "checkpoint_every": MAX_ITERATIONS, "batch_train": 100_000, "kde_batch": 100_000,
          "outer_loop": 10_000, "inner_loop": 10_000, "group_min": 10_000, "factor": 8,
          "idc_net_data": 100_000}


def _check_count(cfg: DistillConfig, name: str, low: int) -> None:
    v = getattr(cfg, name)
    flag = name.replace("_", "-")
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        kind = "a positive" if low else "a non-negative"
        raise InvalidArgument(f"{flag} must be {kind} integer, got {v!r}", f"give {name} >= {low}")
    if name in _UPPER and v > _UPPER[name]:
        raise InvalidArgument(f"{flag} {v} is above the limit of {_UPPER[name]:,}",
                              f"give {name} between {low} and {_UPPER[name]:,}")


def check_config(cfg: DistillConfig) -> None:
    """Range checks that need no data."""
    def bad(what: str, fix: str) -> None:
        raise InvalidArgument(what, fix)

    if cfg.algorithm not in ALGORITHMS:
        bad(f"unknown algorithm {cfg.algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
    for name in _POSITIVE:
        _check_count(cfg, name, 1)
    for name in _NON_NEGATIVE:
        _check_count(cfg, name, 0)
    for name in _MTT_COUNTS:
        _check_count(cfg, name, 1)
    if cfg.max_start_epoch - 1 + cfg.expert_epochs > cfg.expert_train_epochs:
        bad(f"MTT's targets reach epoch max_start_epoch - 1 + expert_epochs = "
            f"{cfg.max_start_epoch - 1 + cfg.expert_epochs}, but experts train {cfg.expert_train_epochs} epochs",
            "lower --max-start-epoch or --expert-epochs, or train the experts longer (--expert-train-epochs)")
    if not isinstance(cfg.cobra_warmup, int) or isinstance(cfg.cobra_warmup, bool) or not -1 <= cfg.cobra_warmup <= 10_000:
        bad(f"cobra_warmup must be an integer from -1 to 10,000, got {cfg.cobra_warmup!r}",
            "give -1 (by IPC, as COBRA's code), 0 (no warm start) or a number of epochs")
    for name in ("lr_img", "lr_net", "lr_teacher", "lr_lr"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad(f"{name} must be a positive number, got {v!r}", f"give {name} > 0")
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
