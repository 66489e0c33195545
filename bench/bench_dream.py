"""What DREAM's clustering costs inside its own iterations: the seconds its k-means picks take (embedding the
pool and clustering it) against the whole iteration, timed in the same process and the same iterations, so a busy
machine's load cancels out (bench_backbones times DREAM and IDC one after the other, which a changing load skews).
The rest of a DREAM iteration is IDC's, so iteration / (iteration - clustering) is DREAM's cost over IDC's.

    python -m bench.bench_dream [--iterations 3] [--preset quick] [--datasets colored-digits]
"""
from __future__ import annotations

import argparse
import time

from bench.bench_distill import available, time_engine
from bench.machine import announce
from engine import data, distill as D
from engine.distill.backbones import dream
from engine.distill.toolkit import Run


def clustering_share(train: data.BiasedSplit, cfg: D.DistillConfig, methods: tuple[str, ...]) -> dict:
    """Seconds per iteration, of which k-means picks (the start's excluded), and the implied DREAM / IDC ratio."""
    spent: list[float] = []
    select = dream.Picker.select

    def timed(self, run, net, kinds, k, gen):
        t = time.perf_counter()
        out = select(self, run, net, kinds, k, gen)
        if isinstance(run, Run):  # the loop's picks, not the start's
            spent.append(time.perf_counter() - t)
        return out

    dream.Picker.select = timed
    try:
        per_it = time_engine(train, cfg, methods)
    finally:
        dream.Picker.select = select
    clusterings = spent[1:]  # time_engine does not count the first (warm-up) iteration
    pick_s = sum(clusterings) / max(cfg.iterations - 1, 1)
    return {"methods": "+".join(methods), "s_per_it": per_it, "clustering_s_per_it": pick_s,
            "clustering_share": pick_s / per_it, "dream_over_idc": per_it / max(per_it - pick_s, 1e-9)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="bench.bench_dream")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations (one more runs first, uncounted)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--datasets", default="colored-digits")
    args = ap.parse_args(argv)
    announce()
    rows = []
    for name in available(args.datasets):
        train = data.load_split(name, 0.05, "train", 0)
        for methods in (("vanilla",), D.METHODS):
            cfg = D.config_for(args.preset, "dream", 10, iterations=args.iterations + 1, device="cpu",
                               checkpoint_every=10 ** 6)
            row = {"dataset": name, "preset": args.preset, **clustering_share(train, cfg, methods)}
            rows.append(row)
            print(f"{name:<15} {args.preset:<6} {'all five' if len(methods) > 1 else 'vanilla':<9} "
                  f"{row['s_per_it']:8.3f} s/it, clustering {row['clustering_s_per_it']:.3f} s "
                  f"({row['clustering_share']:.1%}): DREAM / IDC x{row['dream_over_idc']:.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main(None)
