"""export-split on real bg-fmnist (60,000 training + 10,000 test images from Debian's Fashion-MNIST at

from bench.machine import load_average
/usr/share/datasets/fashion-mnist): seconds and MB per format, each into a fresh temp folder.

Targets on 2 cores: tensors <= 10 s, imagefolder <= 90 s. The split is loaded (built and cached the first
time) before the clock starts; the timed export reads it back from the cache, as a second export would.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.machine import load_average

TARGETS_S = {"tensors": 10.0, "imagefolder": 90.0, "dfa": 90.0}


def run(dataset: str, ratio: float, formats: tuple[str, ...], data_root: str | None = None,
        tmp: str | None = None) -> list[dict]:
    """One row per format: seconds (wall and CPU), files, MB, the target and whether it was met."""
    from engine import data, export
    t0 = time.perf_counter()
    train = data.load_split(dataset, ratio, "train", 0, data_root)
    test = data.load_split(dataset, ratio, "test", 0, data_root)
    rows = [{"what": "load split", "seconds": time.perf_counter() - t0, "train": len(train), "test": len(test)}]
    for fmt in formats:
        plan = export.plan_export(dataset, ratio, 0, data_root, fmt)
        folder = Path(tempfile.mkdtemp(prefix="ddaudit-bench-export-", dir=tmp))
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            summary = export.export_split(plan, folder / "out")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append({"what": fmt, "seconds": wall, "cpu_seconds": cpu, "files": summary["files"],
                     "mb": summary["bytes"] / 1e6, "target_s": TARGETS_S[fmt], "met": wall <= TARGETS_S[fmt]})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_export")
    ap.add_argument("--dataset", default="bg-fmnist")
    ap.add_argument("--conflict-ratio", type=float, default=0.01)
    ap.add_argument("--formats", default="tensors,imagefolder", help="comma-separated: tensors, imagefolder, dfa")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--tmp", default=None, help="where the temp folders go (default: the system's temp folder)")
    args = ap.parse_args(argv)
    load = load_average()
    print(f"export-split {args.dataset} at conflict ratio {args.conflict_ratio}; load average before: {load:.2f} "
          f"on {os.cpu_count()} CPUs; temp folders in {args.tmp or tempfile.gettempdir()}")
    for r in run(args.dataset, args.conflict_ratio, tuple(args.formats.split(",")), args.data_root, args.tmp):
        if r["what"] == "load split":
            print(f"load split: {r['seconds']:.1f} s ({r['train']:,} train + {r['test']:,} test images)")
            continue
        print(f"{r['what']:<12} {r['seconds']:6.1f} s (CPU {r['cpu_seconds']:.1f} s)  {r['files']:>6,} files  "
              f"{r['mb']:7.1f} MB  [target <= {r['target_s']:g} s: {'met' if r['met'] else 'NOT met'}]")


if __name__ == "__main__":
    main()
