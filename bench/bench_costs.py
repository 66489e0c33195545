"""What the dashboard's time estimate reads (engine/costs.json): measured seconds of each unit of work at
the quick preset on this machine, colored-digits (3 x 32 x 32), IPC 10.

- distillation: seconds per iteration of each method alone and of all five side by side, per algorithm;
- MTT's experts: seconds per image-epoch of one expert's training (quick; its cost is experts x epochs x images);
- evaluation: seconds per image-epoch of one quick evaluation training in each mode (eager, fused, batched;
  its cost is epochs x images) and the fused compile's seconds in a cold and a warm process;
- SupCon surrogate and attribute probe: seconds per training step at the quick preset.

    python -m bench.bench_costs [--write engine/costs.json]     # ~4 minutes on 2 cores; nothing else running
    python -m bench.bench_costs --only eval --write engine/costs.json [--eval-eager-reference S]
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
from bench.machine import announce, load_average
from engine import attribute_probe, data, distill as D, embed, evaluate

ITERATIONS = {"dm": 4, "dc": 2, "idc": 2, "mtt": 2, "dream": 2, "cafe": 2}  # timed iterations (the first, a warm-up, is not counted)


def distill_costs(train: data.BiasedSplit, algorithm: str) -> dict:
    """Seconds per iteration: each method alone and all five together."""
    out = {}
    for methods in [(m,) for m in D.METHODS] + [D.METHODS]:
        cfg = D.config_for("quick", algorithm, 10, iterations=ITERATIONS[algorithm] + 1, device="cpu",
                           checkpoint_every=10 ** 6)
        out["+".join(methods) if len(methods) > 1 else methods[0]] = round(time_engine(train, cfg, methods), 4)
        print(f"  {algorithm} {'+'.join(methods):<36} {out[list(out)[-1]]:.3f} s/it", flush=True)
    return out


def relative_costs(train: data.BiasedSplit, algorithm: str, base: str, base_row: dict) -> dict:
    """A backbone's row as its measured ratio to another's, timed alternately in one process (vanilla alone and all
    five), times that backbone's row: on a busy machine the two see the same load, so the ratio holds where
    absolute seconds do not. Each method alone is scaled by the vanilla ratio."""
    ratios = {}
    for methods in (("vanilla",), D.METHODS):
        times = {}
        for alg in (base, algorithm):
            cfg = D.config_for("quick", alg, 10, iterations=ITERATIONS[alg] + 1, device="cpu", checkpoint_every=10 ** 6)
            times[alg] = time_engine(train, cfg, methods)
        ratios[len(methods)] = times[algorithm] / times[base]
        print(f"  {algorithm}/{base} {'+'.join(methods):<36} {times[algorithm]:.3f} / {times[base]:.3f} s/it "
              f"= x{ratios[len(methods)]:.3f}", flush=True)
    five = "+".join(D.METHODS)
    row = {m: round(base_row[m] * ratios[1], 4) for m in D.METHODS}
    row[five] = round(base_row[five] * ratios[len(D.METHODS)], 4)
    row["relative_to"] = {"backbone": base, "vanilla": round(ratios[1], 4), "all_five": round(ratios[len(D.METHODS)], 4)}
    return row


def eval_cost(train: data.BiasedSplit, rounds: int = 3) -> dict:
    """Seconds per image-epoch of one quick evaluation training in each mode (engine/eval_train.py), steady
    state, each training followed by scoring the balanced test split: eager and fused on 50 real images (5 per
    class, eval_train.COST_IMAGES: the size the mode choice's saving per step is read at), `rounds` trainings each,
    alternated so that both see the same load (fused compiled first); batched as 6 trainings of 10 images; and
    what the compile costs a process with an empty kernel cache (cold) and with the kernels on disk (warm)."""
    from engine import eval_train
    test = data.load_split(train.dataset, train.meta["conflict_ratio"], "test", train.meta["seed"])
    preset = evaluate.get_preset("quick")
    cpu = torch.device("cpu")
    ipc = eval_train.COST_IMAGES // train.num_classes

    def jobs(n: int, ipc: int) -> list:
        return [eval_train.Job(*evaluate.random_subset(train, ipc, seed=i), i) for i in range(n)]

    def timed(js: list, mode: str) -> float:
        t = time.perf_counter()
        nets, _ = eval_train.train_jobs(js, preset, cpu, num_classes=train.num_classes, mode=mode)
        for net in nets:
            evaluate.evaluate_net(net, test)
        return time.perf_counter() - t

    single = jobs(rounds, ipc)
    eval_train.train_jobs(single[:1], preset, cpu, num_classes=train.num_classes, epochs=1, mode="fused")  # compile
    seconds = {"eager": 0.0, "fused": 0.0}
    for job in single:
        for mode in seconds:
            seconds[mode] += timed([job], mode)
    out = {m: round(s / (preset.epochs * rounds * len(single[0].labels)), 7) for m, s in seconds.items()}
    stack = jobs(6, 1)
    eval_train.train_jobs(stack, preset, cpu, num_classes=train.num_classes, epochs=1, mode="batched")  # compile
    out["batched"] = round(timed(stack, "batched") / (preset.epochs * len(stack) * len(stack[0].labels)), 7)
    for mode, v in out.items():
        print(f"  evaluation {mode:<8} {v * 1e3:.3f} ms per image-epoch", flush=True)
    from bench.bench_eval import compile_cost
    rows = compile_cost(argparse.Namespace(ipc=[ipc]))
    first = {(r["mode"], r["cache"]): r["first_epoch_s"] for r in rows}
    eager_epoch = out["eager"] * len(single[0].labels)  # the first epoch's own share, not the compile's
    return {"eval_image_epoch": out, "eval_cost_images": len(single[0].labels),
            "eval_compile_cold": round(max(first[("fused", "cold")] - eager_epoch, 0.0), 1),
            "eval_compile_warm": round(max(first[("fused", "warm")] - eager_epoch, 0.0), 1)}


def scale_eval_costs(costs: dict, eager_reference: float) -> dict:
    """On a shared machine: keep the modes' measured ratios and compile share, scaled so that eager takes
    `eager_reference` seconds per image-epoch (a measurement of a quiet machine); the raw figures are kept."""
    factor = eager_reference / costs["eval_image_epoch"]["eager"]
    out = {"eval_image_epoch": {m: round(v * factor, 7) for m, v in costs["eval_image_epoch"].items()},
           "eval_compile_cold": round(costs["eval_compile_cold"] * factor, 1),
           "eval_compile_warm": round(costs["eval_compile_warm"] * factor, 1),
           "eval_cost_images": costs["eval_cost_images"]}
    out["eval_raw"] = {**{k: costs[k] for k in out}, "scaled_by": round(factor, 3),
                       "eager_reference": eager_reference}
    return out


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
    ap.add_argument("--only", choices=("eval", "steps") + D.algorithms(), default=None,
                    help="re-measure only this part (a backbone: its row) and keep the rest of --write's file")
    ap.add_argument("--eval-eager-reference", type=float, default=None,
                    help="seconds per eager image-epoch measured on a quiet machine: on a loaded one, keep the "
                         "modes' measured ratios and scale them to it (the raw figures are kept as eval_raw)")
    ap.add_argument("--relative-to", default=None,
                    help="with --only BACKBONE: measure it as a ratio to this backbone's row, timed alternately "
                         "(for a busy machine)")
    args = ap.parse_args(argv)
    announce()
    train = data.load_split("colored-digits", 0.05, "train", 0)
    if args.only:
        costs = json.loads(Path(args.write).read_text(encoding="utf-8"))
    else:
        costs = {"measured": time.strftime("%Y-%m-%d"), "command": "python -m bench.bench_costs --write engine/costs.json",
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
                 "dataset": "colored-digits", "pixels": int(train.images[0].numel()), "ipc": 10,
                 "distill": {a: distill_costs(train, a) for a in D.algorithms()}}
    if args.only in D.algorithms():  # a new backbone: its rows alone, the rest of the file kept
        costs["distill"][args.only] = (relative_costs(train, args.only, args.relative_to,
                                                      costs["distill"][args.relative_to])
                                       if args.relative_to else distill_costs(train, args.only))
    if args.only in (None, "mtt"):
        costs["expert_image_epoch"] = round(expert_cost(train), 7)
    if args.only in (None, "eval"):
        ev = eval_cost(train)
        costs.update(scale_eval_costs(ev, args.eval_eager_reference) if args.eval_eager_reference else ev)
        costs["eval_measured"] = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
                                  "load_average": round(load_average(), 1)}
    if args.only in (None, "steps"):
        costs.update(step_costs(train))
    print(json.dumps(costs, indent=1), flush=True)
    if args.write:
        Path(args.write).write_text(json.dumps(costs, indent=1) + "\n", encoding="utf-8")
    return costs


if __name__ == "__main__":
    main(None)
