"""Backbones against the one each builds on: seconds per iteration (all five methods in one paired run, and
vanilla alone), at the quick and paper settings, IPC 10, on colored-digits and (when Debian's Fashion-MNIST is
installed) bg-fmnist. IDC against DC (DC's matching steps on factor^2 x as many decoded images, its network
trained on real data); DREAM against IDC (the same steps plus its k-means every --interval steps: the
clustering's cost); CAFE against DM (both match features; CAFE adds DC's bi-level loop).

    python -m bench.bench_backbones [--pairs dc:idc,idc:dream,dm:cafe] [--quick-iters 3] [--paper-iters 1]
                                    [--datasets colored-digits] [--presets quick]
"""
from __future__ import annotations

import argparse

from bench.bench_distill import available, time_engine
from bench.machine import announce
from engine import data, distill as D


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="bench.bench_backbones")
    ap.add_argument("--quick-iters", type=int, default=3)
    ap.add_argument("--paper-iters", type=int, default=1)
    ap.add_argument("--datasets", default="colored-digits,bg-fmnist")
    ap.add_argument("--presets", default="quick,paper")
    ap.add_argument("--pairs", default="dc:idc,idc:dream,dm:cafe", help="base:other backbone pairs")
    args = ap.parse_args(argv)
    announce()
    rows = []
    for name in available(args.datasets):
        train = data.load_split(name, 0.05, "train", 0)
        for preset in args.presets.split(","):
            its = args.quick_iters if preset == "quick" else args.paper_iters
            for pair in args.pairs.split(","):
                base, other = pair.split(":")
                for methods in (("vanilla",), D.METHODS):
                    times = {}
                    for algorithm in (base, other):
                        cfg = D.config_for(preset, algorithm, 10, iterations=its + 1, device="cpu",
                                           checkpoint_every=10 ** 6)
                        times[algorithm] = time_engine(train, cfg, methods)
                    run_s = times[other] * D.default_config(preset, other).iterations
                    row = {"dataset": name, "preset": preset, "methods": "+".join(methods), **times,
                           f"{other}_over_{base}": times[other] / times[base], f"{other}_run_s": run_s}
                    rows.append(row)
                    print(f"{name:<15} {preset:<6} {'all five' if len(methods) > 1 else 'vanilla':<9} "
                          f"{base.upper()} {times[base]:8.3f} s/it  {other.upper()} {times[other]:8.3f} s/it  "
                          f"(x{times[other] / times[base]:.2f}; a {preset} {other.upper()} run of "
                          f"{D.default_config(preset, other).iterations} it ~ {run_s:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    main(None)
