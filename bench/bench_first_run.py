"""The dashboard's first launch, timed: the engine calls its pages make for colored-digits, cold caches.

Embeddings page: SupCon training + embeddings, UMAP map, suggested kernel variance. Distill page
(default form: 3 methods, DM, IPC 10, quick, evaluate ticked, 1 evaluation training per set):
the stored audit. Runs in a fresh DDAUDIT_HOME so nothing is cached; prints seconds per step. UMAP's numba kernels
are compiled by `make install` (engine.projection.warm_up); `--cold-jit` measures without that.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.machine import load_average


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_first_run")
    ap.add_argument("--dataset", default="colored-digits")
    ap.add_argument("--conflict-ratio", type=float, default=0.05)
    ap.add_argument("--eval-seeds", type=int, default=1, help="the dashboard's default")
    ap.add_argument("--iterations", type=int, default=None, help="default: the quick preset's")
    ap.add_argument("--cold-jit", action="store_true",
                    help="an empty numba cache, as if `make install` had not compiled UMAP (its warm-up)")
    ap.add_argument("--baseline", action="store_true",
                    help="also evaluate the random-real baseline (off by default, as on the Distill form)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ddaudit-first-run-") as home:
        os.environ["DDAUDIT_HOME"] = home  # cold: nothing cached (read by engine.cache at call time)
        if args.cold_jit:  # numba reads this when umap is first imported, below
            os.environ["NUMBA_CACHE_DIR"] = os.path.join(home, "numba")
        import torch

        from engine import data, density, embed, pipeline, projection, stored
        from engine.device import describe, pick_device
        dev = pick_device()
        load = load_average()
        print(f"device: {describe(dev)}; load average {load:.1f} on {os.cpu_count()} cores", flush=True)
        steps: dict[str, float] = {}
        t0 = time.perf_counter()
        # as app.py does at server start: UMAP's per-process JIT in the background (ui.state.warm_up_umap)
        import threading
        threading.Thread(target=projection.warm_up, daemon=True).start()

        def lap(name: str, start: float) -> None:
            steps[name] = time.perf_counter() - start
            print(f"{name:<42} {steps[name]:7.1f} s", flush=True)

        t = time.perf_counter()
        train, _ = data.load_pair(args.dataset, args.conflict_ratio, 0)
        lap("data (build + cache the split)", t)
        t = time.perf_counter()
        z = embed.get_embeddings(train, preset="quick", seed=0, device=dev).float().cpu()
        lap("embeddings page: SupCon + embeddings", t)
        t = time.perf_counter()
        projection.umap_map(z, train.targets, train.aligned, 5000, 0)
        density.suggest_kernel_variance(z, train.targets)
        lap("embeddings page: UMAP + suggested variance", t)
        t = time.perf_counter()
        overrides = {"iterations": args.iterations} if args.iterations else {}
        req = pipeline.Request(dataset=args.dataset, conflict_ratio=args.conflict_ratio, eval_seeds=args.eval_seeds,
                               baseline=args.baseline, distill_overrides=overrides)
        result, _ = stored.audit_stored(req)
        lap("distill page: audit (distill + evaluate)", t)
        for stage, s in result["timings"].items():
            print(f"    {stage:<38} {s:7.1f} s", flush=True)
        total = time.perf_counter() - t0
        print(f"{'total, first launch to results':<42} {total:7.1f} s  (torch threads {torch.get_num_threads()})",
              flush=True)
        return {"steps": steps, "audit_timings": result["timings"], "total_s": total}


if __name__ == "__main__":
    main(None)
