"""End-to-end audit: data -> attribute probe -> KDE weights (when asked) -> distillation -> evaluation.

`run_audit(plan, folder)` takes a validated `pipeline.Plan` and writes FOLDER/<method>/synthetic.safetensors +
grid.png, FOLDER/checkpoints (a re-run resumes) and FOLDER/results.json (the schema: engine/results.py).
Stored runs go through `stored.audit_stored`, which gives it the run's folder.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch

from . import attribute_probe, cache, data, evaluate
from .images import to_float
from .distill import save_synthetic
from .pipeline import Plan, SetPlan
from .progress import Event, Progress, ShouldStop
from .results import METRICS, SHARE, method_entry, ordered
from .stages import distill_sets, load_test, load_train, make_tracker, plan_weights, weight_summary
from .store.records import RESULTS_FILE

log = logging.getLogger("ddaudit")


class Stages:
    """Progress events at stage boundaries and each stage's wall time."""

    def __init__(self, progress: Progress | None):
        self.say = progress or (lambda ev: None)
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> Callable[[], None]:
        start = time.time()
        self.say(Event(name, 0, 1))
        return lambda: self.timings.__setitem__(name, round(time.time() - start, 2))


def run_audit(p: Plan, out: str | Path, progress: Progress | None = None, should_stop: ShouldStop | None = None,
              train: data.BiasedSplit | None = None) -> dict:
    """Run the whole audit into folder `out` and return (and write to OUT/results.json) its results;
    `train`: the training split when the caller has already loaded it (stages.load_train)."""
    t0, c, out = time.time(), p.request, Path(out)
    stage = Stages(progress)
    done = stage("data")
    train = train if train is not None else load_train(p)
    test = load_test(p)
    done()
    out.mkdir(parents=True, exist_ok=True)
    done = stage("probe")  # before distilling: the trajectory's aligned share needs it
    probe = attribute_probe.train_probe(train, p.probe_cfg, seed=c.seed, device=p.device, progress=progress,
                                        should_stop=should_stop)
    probe_acc = attribute_probe.probe_accuracy(probe, test)
    done()
    tracker = make_tracker(p, train, probe, test)
    wr = None
    if p.uses_weights:
        done = stage("weights")
        wr = plan_weights(p, train, progress)
        done()
    done = stage("distill")
    sets = distill_sets(p, train, wr, out, progress, should_stop, tracker)
    done()
    any_set = next(iter(sets.values()))
    results = _evaluate_all(p, train, test, sets, probe, stage, progress, should_stop)
    result = {
        "dataset": c.dataset, "conflict_ratio": c.conflict_ratio, "ipc": c.ipc, "preset": c.preset,
        "embed_preset": c.embed_preset if p.uses_weights else None,
        "algorithm": c.algorithm, "seed": c.seed, "eval_seeds": p.seeds,
        "real_aligned_share": attribute_probe.real_aligned_share(train), "probe_accuracy": probe_acc,
        "methods": results, "weights": weight_summary(wr), "distill_seconds": any_set.seconds,
        "timings": stage.timings, "seconds": round(time.time() - t0, 2),
    }
    records = {m: s.meta["records"] for m, s in sets.items() if s.meta.get("records")}
    if records:  # what the backbone recorded per method (DREAM: its picked batches' aligned share)
        result["records"] = records
    if tracker is not None:
        result["track"] = {"every": tracker.every, "eval": tracker.test is not None}
        result["trajectory"] = {m: s.trajectory for m, s in sets.items()}
    cache.atomic_write_json(out / RESULTS_FILE, result)
    stage.say(Event("done", 1, 1))
    return result


def evaluate_sets(sets: dict, train: data.BiasedSplit, test: data.BiasedSplit, probe: attribute_probe.Probe,
                  eval_cfg: evaluate.EvalPreset, seeds: list[int], device, baseline_ipc: int | None, seed: int,
                  stage: Stages, progress: Progress | None = None, should_stop: ShouldStop | None = None) -> dict:
    """Each SyntheticSet (and, with baseline_ipc, `random`: that many random real images per class) trained
    on and tested in the sets' standardisation, with the probe's aligned share: results.json's methods."""
    any_set = next(iter(sets.values()))
    mean, std = any_set.mean, any_set.std
    flip = not data.get_spec(train.dataset).digits
    candidates: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {
        m: (s.images, s.labels, s.unit()) for m, s in sets.items()}
    if baseline_ipc:
        rx, ry = evaluate.random_subset(train, baseline_ipc, seed, mean, std)
        candidates["random"] = (rx, ry, evaluate.random_subset(train, baseline_ipc, seed)[0])
    done = stage("evaluate")
    # every set's trainings at once (all sets x seeds: the batched mode trains those of one shape together)
    evals = evaluate.evaluate_many({m: (x, y) for m, (x, y, _) in candidates.items()}, test, eval_cfg, seeds,
                                   mean=mean, std=std, device=device, flip=flip, progress=progress,
                                   should_stop=should_stop)
    done()
    results: dict[str, dict] = {}
    for name, (x, y, x_unit) in candidates.items():
        stage.timings[f"evaluate {name}"] = round(evals[name]["seconds"], 2)  # its share of the trainings' time
        share = attribute_probe.synthetic_aligned_share(probe, x_unit, y, train.aligned_attribute)
        loss = sets[name].final_loss if name in sets else None  # none for baselines and imported sets
        results[name] = method_entry(evals[name], share, loss if loss is not None and math.isfinite(loss) else None)
    return results


def run_set_audit(p: SetPlan, imported: list, train: data.BiasedSplit, test: data.BiasedSplit, out: str | Path,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None) -> dict:
    """The audit of sets made elsewhere (set_files.ImportedSet): the native audit's probe, evaluation and
    random baseline (as many images per class as the largest class of the sets), written like an audit."""
    t0, c, out = time.time(), p.request, Path(out)
    stage = Stages(progress)
    out.mkdir(parents=True, exist_ok=True)
    done = stage("probe")
    probe = attribute_probe.train_probe(train, p.probe_cfg, seed=c.seed, device=p.device, progress=progress,
                                        should_stop=should_stop)
    probe_acc = attribute_probe.probe_accuracy(probe, test)
    done()
    sets = {i.name: i.set for i in imported}
    save_synthetic(sets, out)
    ipc = max(int(torch.bincount(s.labels).max()) for s in sets.values())
    results = evaluate_sets(sets, train, test, probe, p.eval_cfg, p.seeds, p.device, ipc if c.baseline else None,
                            c.seed, stage, progress, should_stop)
    result = {
        "dataset": c.dataset, "conflict_ratio": c.conflict_ratio, "ipc": ipc, "preset": c.preset,
        "algorithm": "imported", "seed": c.seed, "eval_seeds": p.seeds,
        "real_aligned_share": attribute_probe.real_aligned_share(train), "probe_accuracy": probe_acc,
        "methods": results, "weights": None, "imported": {i.name: i.source for i in imported},
        "warnings": [w for i in imported for w in i.warnings],
        "evaluation": {"epochs": p.eval_cfg.epochs, "dsa": p.eval_cfg.dsa, "depth": p.eval_cfg.depth,
                       "width": p.eval_cfg.width, "norm": p.eval_cfg.norm, "trainings": len(p.seeds)},
        "timings": stage.timings, "seconds": round(time.time() - t0, 2),
    }
    cache.atomic_write_json(out / RESULTS_FILE, result)
    stage.say(Event("done", 1, 1))
    return result


def _evaluate_all(p: Plan, train, test, sets: dict, probe, stage: Stages, progress, should_stop) -> dict:
    """Every set (and the baselines) trained on and tested in the distillation's standardisation."""
    c = p.request
    results = evaluate_sets(sets, train, test, probe, p.eval_cfg, p.seeds, p.device, c.ipc if c.baseline else None,
                            c.seed, stage, progress, should_stop)
    any_set = next(iter(sets.values()))
    mean, std = any_set.mean, any_set.std
    flip = not data.get_spec(c.dataset).digits
    if p.eval_cfg.full_set_epochs > 0:  # paper: the whole biased training set, same evaluation
        done = stage("evaluate full")
        ev = evaluate.evaluate_synthetic(to_float(train.images, mean, std), train.targets, test, p.eval_cfg, p.seeds,
                                         mean=mean, std=std, device=p.device, flip=flip,
                                         epochs=p.eval_cfg.full_set_epochs, progress=progress,
                                         should_stop=should_stop, stage="evaluate full")
        results["full"] = method_entry(ev, attribute_probe.synthetic_aligned_share(
            probe, train.images, train.targets, train.aligned_attribute))
        done()
    return results


def table(result: dict) -> str:
    """A plain-text table of the methods (the CLI's non-JSON output)."""
    cols = METRICS + (SHARE,)
    heads = ("acc", "aligned", "conflict", "worst", "DEO_M", "DEO_A", "aligned share")  # short: a terminal's width
    order = ordered(result["methods"])

    def fmt(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    lines = [f"{result['dataset']}  conflict ratio {result['conflict_ratio']}  IPC {result['ipc']}  "
             f"preset {result['preset']}  ({result['seconds']:.0f} s)",
             f"{'method':<9}" + "".join(f"{h:>14}" for h in heads)]
    for m in order:
        r = result["methods"][m]
        acc = f"{fmt(r['accuracy'])}+-{fmt(r['accuracy_std'])}"
        lines.append(f"{m:<9}{acc:>14}" + "".join(f"{fmt(r[k]):>14}" for k in cols[1:]))
    lines.append(f"real aligned share {result['real_aligned_share']:.1f}%   probe accuracy {result['probe_accuracy']:.1f}%")
    return "\n".join(lines)


def markdown_table(result: dict, published: dict[str, str] | None = None) -> str:
    """The methods as a Markdown table (docs/RESULTS.md), with an optional published column."""
    order = ordered(result["methods"])

    def fmt(v, std=None) -> str:
        if v is None:
            return "-"
        return f"{v:.1f} ± {std:.1f}" if std is not None else f"{v:.1f}"

    head = "| method | accuracy | aligned | conflicting | worst group | DEO_M | DEO_A | synthetic aligned share |"
    if published is not None:
        head += " published (Acc / DEO_M / DEO_A) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in order:
        r = result["methods"][m]
        row = (f"| {m} | {fmt(r['accuracy'], r['accuracy_std'])} | {fmt(r['aligned_accuracy'])} | "
               f"{fmt(r['conflicting_accuracy'], r.get('conflicting_accuracy_std'))} | "
               f"{fmt(r['worst_group_accuracy'])} | {fmt(r['deo_m'])} | {fmt(r['deo_a'])} | "
               f"{fmt(r['synthetic_aligned_share'])} |")
        if published is not None:
            row += f" {published.get(m, '-')} |"
        lines.append(row)
    return "\n".join(lines)
