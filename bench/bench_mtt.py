"""MTT's costs on this machine: expert training per remedy (seconds per expert epoch, and what a preset's
experts cost), the matching loop per iteration (vanilla alone and all five side by side) with the peak
memory of the unroll (one method's unroll is held at a time), at the quick and paper settings (paper:
vanilla alone unless --paper-five), IPC 10; and, with --audits, a first-time quick MTT
audit of all five methods on colored-digits with cold caches, then a second audit reusing its experts
(`--init real`: new starts, so new sets and evaluations; the experts, SupCon and probe read back).

    python -m bench.bench_mtt [--datasets colored-digits] [--presets quick,paper] [--iters 2] [--audits]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.bench_distill import available
from engine import data, distill as D
from engine.allocator import tune_cpu_allocator
from engine.distill import experts as X, loop
from engine.distill.backbones import mtt
from engine.distill.toolkit import Gens

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _weights(train: data.BiasedSplit) -> torch.Tensor:
    """Stand-in KDE weights (random, seeded): the costs do not depend on their values."""
    return torch.rand(len(train), generator=torch.Generator().manual_seed(0)) + 0.1


def expert_epoch_seconds(train: data.BiasedSplit, cfg: D.DistillConfig, device: torch.device) -> dict:
    """Seconds of one expert epoch under each remedy's objective (one expert, one epoch, a scratch folder)."""
    mean, std = loop.channel_stats(train.images)
    run, _ = loop.build(train, cfg, ("vanilla",), None, mean, std, device)
    setup = X.ExpertSetup(run.images, run.targets, run.mean, run.std, run.net.cfg, run.dsa, run.fmt, device)
    out = {}
    one = cfg.replace(expert_train_epochs=1, max_start_epoch=1, expert_epochs=1)
    for m, obj in X.objectives(train, cfg, D.METHODS, _weights(train)).items():
        with tempfile.TemporaryDirectory() as folder:
            _sync(device)
            t = time.perf_counter()
            X.train_expert(setup, obj, one, 0, Path(folder))
            _sync(device)
            out[m] = time.perf_counter() - t
    return out


class _Standin:
    """Random trajectories in memory: the loop's cost does not depend on the experts' values."""

    def __init__(self, params: int, epochs: int):
        self.t = torch.randn(epochs + 1, params, generator=torch.Generator().manual_seed(0)) * 0.05

    def trajectory(self, e: int) -> torch.Tensor:
        return self.t


def loop_seconds(train: data.BiasedSplit, cfg: D.DistillConfig, methods: tuple[str, ...], iters: int,
                 device: torch.device) -> tuple[float, float]:
    """(seconds per iteration after a warm-up one, peak memory in MB: CUDA allocated, else the process's RSS)."""
    mean, std = loop.channel_stats(train.images)
    run, state = loop.build(train, cfg, methods, _weights(train), mean, std, device)
    mtt.learn_step_size(run, state)
    bank = _Standin(sum(p.numel() for p in run.net.parameters()), cfg.options.expert_train_epochs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(iters + 1):
        _sync(device)
        t = time.perf_counter()
        mtt.step(run, state, Gens.at(0, it), {m: bank for m in methods})
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return sum(times[1:]) / max(len(times) - 1, 1), peak


def timed_audit(home: str, out: str, extra: list[str]) -> dict:
    """One CLI audit (quick MTT, colored-digits at 5%, IPC 10, all five), wall time and its stage timings."""
    cmd = [sys.executable, "-m", "engine", "audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05",
           "--algorithm", "mtt", "--ipc", "10", "--preset", "quick", "--out", out, "--json"] + extra
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, DDAUDIT_HOME=home), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"wall_s": wall, "error": proc.stderr[-2000:]}
    res = json.loads(proc.stdout)
    return {"wall_s": wall, "timings": res.get("timings"), "out": out, "methods": res["methods"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench.bench_mtt")
    ap.add_argument("--datasets", default="colored-digits")
    ap.add_argument("--presets", default="quick,paper")
    ap.add_argument("--iters", type=int, default=2, help="timed matching iterations (after one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--paper-five", action="store_true", help="also time all five at paper settings (slow on CPU)")
    ap.add_argument("--audits", action="store_true", help="also time a cold and a warm quick MTT audit (minutes)")
    ap.add_argument("--home", default=None, help="DDAUDIT_HOME for the audits: must not exist yet (cold caches); "
                    "default a new temporary folder")
    args = ap.parse_args(argv)
    tune_cpu_allocator()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; device {device}", flush=True)
    report: dict = {"experts": [], "loop": [], "audits": None}
    for name in available(args.datasets):
        train = data.load_split(name, 0.05, "train", 0)
        for preset in args.presets.split(","):
            cfg = replace(D.config_for(preset, "mtt", 10), device=args.device)
            per = expert_epoch_seconds(train, cfg, device)
            net_cfg = cfg.net_config(train.images.shape[1], train.num_classes, train.images.shape[2])
            distinct = len({X.expert_key("d", obj, cfg, net_cfg)
                            for obj in X.objectives(train, cfg, D.METHODS, _weights(train)).values()})
            every = cfg.options.num_experts * cfg.options.expert_train_epochs
            row = {"dataset": name, "preset": preset, "s_per_expert_epoch": per,
                   "experts_all_five_s": sum(per.values()) / len(per) * every * distinct, "distinct_objectives": distinct}
            report["experts"].append(row)
            print(f"{name:<15} {preset:<6} expert epoch: " + ", ".join(f"{m} {s:.2f} s" for m, s in per.items())
                  + f"; {cfg.options.num_experts} experts x {cfg.options.expert_train_epochs} epochs x {distinct} objectives "
                  f"~ {row['experts_all_five_s']:.0f} s", flush=True)
            for methods in (("vanilla",), D.METHODS):
                if preset == "paper" and len(methods) > 1 and not args.paper_five:
                    continue  # on CPU one paper iteration of five methods takes minutes; their peak is vanilla's
                s, peak = loop_seconds(train, cfg, methods, args.iters if preset != "paper" else 1, device)
                r = {"dataset": name, "preset": preset, "methods": "+".join(methods), "s_per_it": s,
                     "run_s": s * cfg.iterations, "peak_mb": peak}
                report["loop"].append(r)
                print(f"{name:<15} {preset:<6} {'all five' if len(methods) > 1 else 'vanilla':<9} {s:8.3f} s/it "
                      f"(a {preset} run of {cfg.iterations} it ~ {r['run_s']:.0f} s); peak {peak:.0f} MB", flush=True)
    if args.audits:
        if args.home and Path(args.home).exists():
            raise SystemExit(f"--home {args.home} exists: the first audit must start with cold caches")
        home = args.home or tempfile.mkdtemp(prefix="ddaudit-bench-mtt-")
        out = tempfile.mkdtemp(prefix="ddaudit-bench-mtt-out-")
        cold = timed_audit(home, out + "/a", [])
        print(f"cold quick MTT audit (colored-digits, all five): {cold['wall_s']:.0f} s; {cold.get('timings')}",
              flush=True)
        warm = timed_audit(home, out + "/b", ["--init", "real"])  # new sets and evaluations, the same experts
        print(f"a second audit (--init real), experts reused: {warm['wall_s']:.0f} s; {warm.get('timings')}",
              flush=True)
        report["audits"] = {"cold": cold, "experts_reused": warm, "home": home}
        for name, r in report["audits"].items():
            if isinstance(r, dict) and "methods" in r:
                print(f"{name}: " + "; ".join(f"{m} {v['accuracy']:.1f}" for m, v in r["methods"].items()), flush=True)
    return report


if __name__ == "__main__":
    main(None)
