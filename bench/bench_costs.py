"""What the dashboard's time estimate reads (engine/costs.json): measured seconds of each unit of work at
the quick preset on this machine, colored-digits (3 x 32 x 32), IPC 10.

- distillation: seconds per iteration of each method alone and of all five side by side, per algorithm;
- MTT's experts: seconds per image-epoch of one expert's training (quick; its cost is experts x epochs x images);
- evaluation: seconds per image-epoch of one quick evaluation training (its cost is epochs x images);
- SupCon surrogate and attribute probe: seconds per training step at the quick preset.

    python -m bench.bench_costs [--write engine/costs.json]     # ~4 minutes on 2 cores; nothing else running
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.bench_distill import time_engine
from engine import attribute_probe, data, distill as D, embed, evaluate
from engine.allocator import tune_cpu_allocator

ITERATIONS = {"dm": 4, "dc": 2, "idc": 2, "mtt": 2}  # timed iterations (the first, a warm-up, is not counted)


def distill_costs(train: data.BiasedSplit, algorithm: str) -> dict:
    """Seconds per iteration: each method alone and all five together."""
    out = {}
    for methods in [(m,) for m in D.METHODS] + [D.METHODS]:
        cfg = D.config_for("quick", algorithm, 10, iterations=ITERATIONS[algorithm] + 1, device="cpu",
                           checkpoint_every=10 ** 6)
        out["+".join(methods) if len(methods) > 1 else methods[0]] = round(time_engine(train, cfg, methods), 4)
        print(f"  {algorithm} {'+'.join(methods):<36} {out[list(out)[-1]]:.3f} s/it", flush=True)
    return out


def eval_cost(train: data.BiasedSplit) -> float:
    """Seconds per image-epoch of one quick evaluation as an audit runs it: train_on 50 real images (5 per
    class) for the preset's epochs, then score the balanced test split."""
    idx = torch.cat([torch.nonzero(train.targets == c).flatten()[:5] for c in range(train.num_classes)])
    images, labels = train.images[idx], train.targets[idx]
    test = data.load_split(train.dataset, train.meta["conflict_ratio"], "test", train.meta["seed"])
    preset = evaluate.get_preset("quick")
    t = time.perf_counter()
    net = evaluate.train_on(images, labels, preset, 0, torch.device("cpu"), num_classes=train.num_classes)
    evaluate.evaluate_net(net, test)
    return (time.perf_counter() - t) / (preset.epochs * len(idx))


def expert_cost(train: data.BiasedSplit) -> float:
    """Seconds per image-epoch of one quick MTT expert epoch, averaged over the five objectives (a scratch folder)."""
    from bench.bench_mtt import expert_epoch_seconds
    cfg = replace(D.config_for("quick", "mtt", 10), device="cpu")
    per = expert_epoch_seconds(train, cfg, torch.device("cpu"))
    return sum(per.values()) / len(per) / len(train)


def step_costs(train: data.BiasedSplit) -> dict:
    """Seconds per step of the SupCon surrogate and of the attribute probe (quick presets, 30 steps each)."""
    p = replace(embed.get_preset("quick"), steps=30)
    t = time.perf_counter()
    embed.train_supcon(train, p, 0, torch.device("cpu"))
    supcon = (time.perf_counter() - t) / p.steps
    q = replace(attribute_probe.get_preset("quick"), steps=30)
    t = time.perf_counter()
    attribute_probe.train_probe(train, q, 0, torch.device("cpu"), use_cache=False)
    probe = (time.perf_counter() - t) / q.steps
    return {"supcon_step": round(supcon, 4), "probe_step": round(probe, 4)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench.bench_costs")
    ap.add_argument("--write", default=None, help="also write the costs here (engine/costs.json)")
    ap.add_argument("--only", choices=("eval", "steps", "mtt"), default=None,
                    help="re-measure only this part and keep the rest of --write's file")
    args = ap.parse_args(argv)
    tune_cpu_allocator()
    train = data.load_split("colored-digits", 0.05, "train", 0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; load average {load:.1f}", flush=True)
    if args.only:
        costs = json.loads(Path(args.write).read_text(encoding="utf-8"))
    else:
        costs = {"measured": time.strftime("%Y-%m-%d"), "command": "python -m bench.bench_costs --write engine/costs.json",
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
                 "dataset": "colored-digits", "pixels": int(train.images[0].numel()), "ipc": 10,
                 "distill": {a: distill_costs(train, a) for a in D.algorithms()}}
    if args.only == "mtt":  # a new backbone: its rows alone, the rest of the file kept
        costs["distill"]["mtt"] = distill_costs(train, "mtt")
    if args.only in (None, "mtt"):
        costs["expert_image_epoch"] = round(expert_cost(train), 7)
    if args.only in (None, "eval"):
        costs["eval_image_epoch"] = round(eval_cost(train), 6)
    if args.only in (None, "steps"):
        costs.update(step_costs(train))
    print(json.dumps(costs, indent=1), flush=True)
    if args.write:
        Path(args.write).write_text(json.dumps(costs, indent=1) + "\n", encoding="utf-8")
    return costs


if __name__ == "__main__":
    main(None)
