"""Evaluation trainings against the machine's limit: eager / fused / batched (engine/eval_train.py).

    python -m bench.bench_eval                 # one and 18 trainings at IPC 1, 10, 50 in each mode (quick net)
    python -m bench.bench_eval --audit         # the bundled five-method audit's 18 trainings, each mode
    python -m bench.bench_eval --audit --home DIR   # the same in DIR: run twice, the second has warm kernels
    python -m bench.bench_eval --compile-cost  # what torch.compile costs a cold and a warm process

Each case trains `--epochs` epochs (the quick preset's 300 scaled down; seconds per training are projected to
300) after a one-epoch warm-up that is timed on its own (`first_s`: the compile, when the mode compiles).
Achieved GFLOP/s counts the forward and backward FLOPs of the steps (torch.utils.flop_counter) over the timed
seconds, beside a 2048 x 2048 float32 matrix product measured in the same run (best of 10). Peak memory: the
process's peak RSS so far on the CPU, the peak allocated per case on a GPU. The load average is printed with
every figure: on a machine shared with other work the figures are contended.
"""
from __future__ import annotations

import argparse
import json
import statistics
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.machine import load_average
from engine import data, eval_train, evaluate

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()



def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """Best GFLOP/s of an n x n float32 matrix product here (the machine's reachable rate)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_flops(job: eval_train.Job, cfg, num_classes: int) -> int:
    """Forward + backward FLOPs of one training step on the job's whole set (one batch when it fits)."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.nets import ConvNet
    net = ConvNet(eval_train.net_config(job, cfg, num_classes))
    x = job.images[:cfg.batch_size]
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(net(x), job.labels[:cfg.batch_size]).backward()
    return counter.get_total_flops()


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def jobs_for(train: data.BiasedSplit, ipc: int, trainings: int) -> list[eval_train.Job]:
    """`trainings` trainings on sets of ipc random real images per class (a different set and seed each)."""
    out = []
    for i in range(trainings):
        x, y = evaluate.random_subset(train, ipc, seed=i)
        out.append(eval_train.Job(x, y, 1000 + i))
    return out


def time_case(jobs, cfg, device, mode: str, epochs: int, classes: int, flip: bool, compile: bool = True) -> dict:
    """One warm-up epoch (timed alone: compiling happens there), then `epochs` timed epochs."""
    _sync(device)
    t = time.perf_counter()
    _, ran = eval_train.train_jobs(jobs, cfg, device, num_classes=classes, flip=flip, epochs=1, mode=mode,
                                   compile=compile)
    _sync(device)
    first = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    eval_train.train_jobs(jobs, cfg, device, num_classes=classes, flip=flip, epochs=epochs, mode=mode,
                          compile=compile)
    _sync(device)
    s = time.perf_counter() - t
    steps = epochs * -(-len(jobs[0].labels) // cfg.batch_size)
    flops = step_flops(jobs[0], cfg, classes) * steps * len(jobs)
    return {"mode": ran, "trainings": len(jobs), "images": len(jobs[0].labels), "epochs_timed": epochs,
            "first_s": round(first, 2), "timed_s": round(s, 3),
            "s_per_training_projected": round(s / epochs * cfg.epochs / len(jobs), 2),
            "gflops": round(flops / s / 1e9, 1), "peak_mb": round(peak_mb(device)), "load": round(load_average(), 2)}


def run_grid(args, device: torch.device) -> list[dict]:
    train = data.load_split("colored-digits", 0.05, "train", 0)
    cfg = evaluate.get_preset(args.preset)
    rows = []
    for ipc in args.ipc:
        for trainings in args.trainings:
            jobs = jobs_for(train, ipc, trainings)
            for mode in args.modes:
                r = {"ipc": ipc, **time_case(jobs, cfg, device, mode, args.epochs, train.num_classes, flip=False,
                                             compile=not args.no_compile)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """The grid as text: seconds per training (projected to the preset's epochs) and the share of the matmul."""
    lines = [f"{'IPC':>4} {'trainings':>9} {'mode':>14} {'s/training':>11} {'GFLOP/s':>8} {'of matmul':>9} "
             f"{'first s':>8} {'load':>5}"]
    for r in rows:
        lines.append(f"{r['ipc']:>4} {r['trainings']:>9} {r['mode']:>14} {r['s_per_training_projected']:>11.2f} "
                     f"{r['gflops']:>8.1f} {r.get('share_of_matmul', 0):>9.0%} {r['first_s']:>8.1f} {r['load']:>5.1f}")
    return "\n".join(lines)


def audit_sets(home: Path):
    """The bundled example audit's five sets and its random baseline, with its evaluation settings."""
    from engine import example, pipeline
    os.environ["DDAUDIT_HOME"] = str(home)
    store = example.install()
    if store is None:
        raise SystemExit(f"no usable bundled example ({'; '.join(example.stale()) or 'switched off'}): run make assets")
    req = example.audit_request()
    plan = pipeline.plan(req)
    sets = store.open(example.roles()["audit"]).sets()
    train, test = data.load_pair(req.dataset, req.conflict_ratio, req.seed)
    any_set = next(iter(sets.values()))
    candidates = {m: (s.images, s.labels) for m, s in sets.items()}
    candidates["random"] = evaluate.random_subset(train, req.ipc, req.seed, any_set.mean, any_set.std)
    return candidates, test, plan, any_set.mean, any_set.std


def run_audit(args, device: torch.device) -> list[dict]:
    """The evaluation of the bundled audit (6 sets x 3 trainings), uncached, once per mode (and `auto`)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddaudit-bench-eval-") as tmp:
        candidates, test, plan, mean, std = audit_sets(Path(args.home or tmp))
        trainings = len(candidates) * len(plan.seeds)
        gf = matmul_gflops(device)
        step = step_flops(eval_train.Job(*next(iter(candidates.values())), 0), plan.eval_cfg, test.num_classes)
        flops = step * plan.eval_cfg.epochs * trainings
        for mode in [m for _ in range(args.repeat) for m in args.audit_modes]:  # alternated: both see the same load
            t = time.perf_counter()
            out = evaluate.evaluate_many(candidates, test, plan.eval_cfg, plan.seeds, mean=mean, std=std,
                                         device=device, flip=False, use_cache=False,
                                         mode=None if mode == "auto" else mode)
            s = time.perf_counter() - t
            r = {"audit": "bundled example, 5 methods + random, IPC 5, 3 trainings each", "mode": mode,
                 "ran": sorted({m for o in out.values() for m in (o["mode"] or [])}), "trainings": trainings,
                 "seconds": round(s, 1), "gflops": round(flops / s / 1e9, 1), "matmul_gflops": round(gf, 1),
                 "share_of_matmul": round(flops / s / 1e9 / gf, 3), "peak_mb": round(peak_mb(device)),
                 "load": round(load_average(), 2),
                 "conflicting_accuracy": {m: round(o["conflicting_accuracy"], 2) for m, o in out.items()}}
            rows.append(r)
            print(json.dumps(r), flush=True)
    summary = {m: statistics.median(r["seconds"] for r in rows if r["mode"] == m) for m in args.audit_modes}
    for m, s in summary.items():
        ratio = f", {summary['eager'] / s:.2f}x eager's" if "eager" in summary and m != "eager" else ""
        print(f"median of {args.repeat}: {m} {s:.1f} s{ratio}", flush=True)
    return rows


COMPILE_PROBE = """
import os, sys, time, torch
t0 = time.perf_counter()
from engine import data, eval_train, evaluate
train = data.load_split("colored-digits", 0.05, "train", 0)
x, y = evaluate.random_subset(train, int(sys.argv[1]), 0)
t = time.perf_counter()
eval_train.train_jobs([eval_train.Job(x, y, 0)], evaluate.get_preset("quick"), torch.device("cpu"),
                      num_classes=10, flip=False, epochs=1, mode=sys.argv[2])
print(f"{time.perf_counter() - t:.2f} {time.perf_counter() - t0:.2f}")
"""


def compile_cost(args) -> list[dict]:
    """First step of a fused and a batched training in a new process: cold (empty kernel cache), then warm."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddaudit-bench-compile-") as home:
        env = {**os.environ, "DDAUDIT_HOME": home, "PYTHONPATH": str(ROOT)}
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        for ipc in args.ipc[:1]:
            for mode in ("fused", "batched"):
                for state in ("cold", "warm"):
                    out = subprocess.run([sys.executable, "-c", COMPILE_PROBE, str(ipc), mode], env=env, cwd=ROOT,
                                         capture_output=True, text=True, timeout=900)
                    first, process = (float(v) for v in out.stdout.split()[-2:])
                    r = {"mode": mode, "cache": state, "ipc": ipc, "first_epoch_s": first, "process_s": process,
                         "load": round(load_average(), 2)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench.bench_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--ipc", type=lambda s: [int(v) for v in s.split(",")], default=[1, 10, 50])
    ap.add_argument("--trainings", type=lambda s: [int(v) for v in s.split(",")], default=[1, 18])
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(eval_train.MODES))
    ap.add_argument("--epochs", type=int, default=15, help="timed epochs per case (projected to the preset's)")
    ap.add_argument("--audit", action="store_true", help="time the bundled audit's evaluation instead of the grid")
    ap.add_argument("--audit-modes", type=lambda s: s.split(","), default=["eager", "fused", "batched", "auto"])
    ap.add_argument("--repeat", type=int, default=1, help="--audit: run the modes this many times, alternated, and "
                                                        "print each mode's median")
    ap.add_argument("--compile-cost", action="store_true", help="time a cold and a warm process's compile")
    ap.add_argument("--home", default=None, help="--audit: this DDAUDIT_HOME (its kernel cache: a second run is "
                                                 "warm) instead of a fresh temporary one (cold)")
    ap.add_argument("--no-compile", action="store_true", help="never torch.compile (fused = eager; a smoke run)")
    ap.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    from engine.allocator import tune_cpu_allocator
    from engine.device import pick_device
    tune_cpu_allocator()
    device = pick_device(args.device)
    report: dict = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "load_at_start": round(load_average(), 2)}
    print(json.dumps(report), flush=True)
    if args.compile_cost:
        report["compile"] = compile_cost(args)
    elif args.audit:
        report["audit"] = run_audit(args, device)
    else:
        report["matmul_gflops"] = round(matmul_gflops(device), 1)
        print(f"2048x2048 matmul: {report['matmul_gflops']} GFLOP/s (load {load_average():.2f})", flush=True)
        report["grid"] = run_grid(args, device)
        report["matmul_gflops_after"] = round(matmul_gflops(device), 1)
        for r in report["grid"]:
            r["share_of_matmul"] = round(r["gflops"] / max(report["matmul_gflops"], report["matmul_gflops_after"]), 3)
        print(table(report["grid"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main(None)
