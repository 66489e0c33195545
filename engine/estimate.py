"""How long a request will take, said before Start: unit costs measured on 2 CPU cores (engine/costs.json,
written by `python -m bench.bench_costs`) times the work the plan asks for, less what is cached or stored.

Distillation: the measured seconds per iteration of each method alone, combined with the overlap the
five-method run showed (a paired run shares its real batch); evaluation: epochs x images x the measured
seconds per image-epoch of the training mode the CPU will use (eval_train.choose_mode), per set and training,
plus the compile when that mode compiles; SupCon and the probe: steps x seconds per step. Costs scale
with the pixels per image against colored-digits'; the paper preset's wider nets and larger batches are
extrapolated from quick (each backbone's cost_scale: width and batch ratios; MTT's unroll), not measured. A
backbone adds its own parts (extra_seconds: MTT's experts, the sets not on disk x experts x epochs x images x
the measured seconds per expert image-epoch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import attribute_probe, cache, distill, embed, eval_train
from .data import BiasedSplit
from .errors import InvalidArgument
from .pipeline import Plan, run_key

COSTS_FILE = eval_train.COSTS_FILE
OVERHEAD_S = 3.0  # loading the split, the workers' start, writing the run


def load_costs() -> dict:
    """The measured unit costs (engine/costs.json; read once, by eval_train, whose mode choice reads them too)."""
    return eval_train.load_costs()


@dataclass(frozen=True)
class Estimate:
    """Seconds a request should take here, by stage; stored: an identical finished run is shown at once."""

    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    stored: bool = False
    extrapolated: bool = False

    def text(self) -> str:
        """In words, e.g. 'about 1 min 10 s (distill 25 s, evaluate 28 s, ...)'."""
        if self.stored:
            return "already stored: shown at once"
        shown = ", ".join(f"{k} {duration(v)}" for k, v in self.parts.items() if v >= 0.5)
        return (f"about {duration(self.seconds)} on 2 CPU cores" + (f" ({shown})" if shown else "")
                + ("; the paper preset is extrapolated from quick's costs" if self.extrapolated else ""))


def duration(seconds: float) -> str:
    """12 s, 1 min 05 s, 2 h 03 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def distill_seconds(plan: Plan, pixels: int, costs: dict | None = None, classes: int = 10) -> float:
    """Iterations x seconds per iteration of the methods side by side (the backbone's measured row, scaled by
    its cost_scale from its quick preset to this config)."""
    c = costs or load_costs()
    cfg = plan.distill_cfg
    backbone = distill.BACKBONES[cfg.algorithm]
    key = backbone.cost_key or backbone.name
    if key not in c["distill"]:  # a backbone registered without a measured row: say so, never guess
        raise InvalidArgument(f"no measured cost for {backbone.label} in engine/costs.json",
                              f"measure it: python -m bench.bench_costs --only {key} --write engine/costs.json")
    table = c["distill"][key]
    alone = [table[m] for m in plan.methods]
    every = [table[m] for m in distill.METHODS]
    together = table["+".join(distill.METHODS)]
    overlap = (together - max(every)) / max(sum(every) - max(every), 1e-9)  # the share of the rest a paired run pays
    per_it = max(alone) + overlap * (sum(alone) - max(alone))
    scale = backbone.cost_scale(cfg, distill.default_config("quick", cfg.algorithm, cfg.ipc), classes, c)
    return cfg.iterations * per_it * pixels / c["pixels"] * scale


def training_cost(c: dict, e, images: int, trainings: int, epochs: int) -> tuple[float, float]:
    """Seconds per image-epoch of the mode `trainings` trainings of `images` images will run in on the CPU
    (eval_train.choose_mode), and the compile that mode pays (cold while no kernel is on disk, else warm)."""
    mode = eval_train.choose_mode(torch.device("cpu"), images, trainings, epochs * math.ceil(images / e.batch_size),
                                  e.norm, costs=c)
    per = c["eval_image_epoch"]
    per = per.get(mode.split("-")[0], per["eager"]) if isinstance(per, dict) else per
    if mode == "eager":
        return per, 0.0
    warm = any(cache.cache_dir("kernels").iterdir())
    return per, c.get("eval_compile_warm" if warm else "eval_compile_cold", 0.0)


def evaluate_seconds(plan: Plan, train: BiasedSplit, baseline: bool, costs: dict | None = None) -> float:
    """Every evaluation training: sets x trainings x epochs x images x seconds per image-epoch of the mode the
    evaluation will run in, plus its compile (training_cost)."""
    c = costs or load_costs()
    e = plan.eval_cfg
    pixels = int(train.images[0].numel())
    form = distill.BACKBONES[plan.distill_cfg.algorithm].form(plan.distill_cfg, int(train.images.shape[-1]))
    images = plan.request.ipc * train.num_classes * form.per_stored
    trainings = (len(plan.methods) + bool(baseline)) * len(plan.seeds)
    per, compile_s = training_cost(c, e, images, trainings, e.epochs)
    return trainings * e.epochs * images * per * pixels / c["pixels"] * (e.width / 32) ** 2 + compile_s


def full_set_seconds(plan: Plan, train: BiasedSplit, costs: dict | None = None) -> float:
    """The whole-training-set baseline: trainings x its epochs x every training image x seconds per image-epoch
    (of its mode; a compile of its own: another shape)."""
    c = costs or load_costs()
    e = plan.eval_cfg
    pixels = int(train.images[0].numel())
    per, compile_s = training_cost(c, e, len(train), len(plan.seeds), e.full_set_epochs)
    return len(plan.seeds) * e.full_set_epochs * len(train) * per * pixels / c["pixels"] * (e.width / 32) ** 2 + \
        compile_s


def estimate(plan: Plan, train: BiasedSplit, kind: str, baseline: bool) -> Estimate:
    """The estimate of a planned distill or audit request on this split."""
    from .store import RunStore, run_id_for
    c = load_costs()
    row = RunStore().index.get_row(run_id_for(kind, run_key(plan, kind)))
    if row is not None and row["status"] == "finished":
        return Estimate(0.0, {}, stored=True)
    pixels = int(train.images[0].numel())
    parts = {"distill": distill_seconds(plan, pixels, c, train.num_classes)}
    parts.update(distill.BACKBONES[plan.distill_cfg.algorithm].extra_seconds(plan.distill_cfg, plan.methods, train,
                                                                             pixels, c))
    if plan.uses_weights and not embed._paths(train, plan.embed, plan.request.seed)[1].exists():
        parts["SupCon"] = plan.embed.steps * c["supcon_step"] * pixels / c["pixels"]
    if kind == "audit":
        if not attribute_probe._probe_path(train, plan.probe_cfg, plan.request.seed).exists():
            parts["probe"] = plan.probe_cfg.steps * c["probe_step"] * pixels / c["pixels"]
        parts["evaluate"] = evaluate_seconds(plan, train, baseline, c)
        if plan.eval_cfg.full_set_epochs:  # the paper preset's whole-training-set baseline ("full")
            parts["evaluate full"] = full_set_seconds(plan, train, c)
    total = OVERHEAD_S + sum(parts.values())
    return Estimate(total, {k: round(v, 1) for k, v in parts.items()},
                    extrapolated=plan.request.preset == "paper")
