"""Import cost (#26): reading and checking a 100-image set (target <= 1 s), and what an `audit-set` costs
beyond its evaluation trainings (target <= 5%), on colored-digits at the quick preset, 2 cores.

    python -m bench.bench_import [--trainings 3]

Runs in a fresh DDAUDIT_HOME. The set is a random-real IPC-10 set saved as DatasetCondensation does
(torch.save({'data': [[images, labels]]})). The audit is timed twice: with a cold attribute probe (the
split's first audit) and with the probe cached (any later audit of the split, native or imported), each
time with the evaluation cache emptied so that every training really runs. The cold probe is a training
of its own (on the real split, shared by every audit of the split, native or imported): the overhead is
reported beyond the evaluation trainings and beyond all trainings.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import")
    parser.add_argument("--trainings", type=int, default=3, help="evaluation trainings per set (quick: 3)")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="ddaudit-bench-import-")
    os.environ["DDAUDIT_HOME"] = home
    try:
        import torch

        from engine import cache, evaluate, pipeline, stored
        from engine.allocator import tune_cpu_allocator
        from engine.data import load_split
        from engine.distill import channel_stats
        from engine.set_files import read_set
        tune_cpu_allocator()
        train = load_split("colored-digits", 0.05, "train", 0)
        mean, std = channel_stats(train.images)
        x, y = evaluate.random_subset(train, 10, 0, mean, std)
        path = os.path.join(home, "res_DM_colored-digits_ConvNet_10ipc.pt")
        torch.save({"data": [[x, y]], "accs_all_exps": {}}, path)
        t = time.perf_counter()
        for _ in range(5):
            read_set(path, train)
        read_s = (time.perf_counter() - t) / 5
        print(f"read + check a {len(y)}-image set: {read_s * 1000:.1f} ms (target <= 1000 ms)")
        out = {"read_seconds": read_s}
        for label, warm in (("cold probe", False), ("cached probe", True)):
            shutil.rmtree(cache.cache_dir("evaluations"), ignore_errors=True)
            if not warm:
                shutil.rmtree(cache.cache_dir("probes"), ignore_errors=True)
            req = pipeline.SetRequest("colored-digits", 0.05, (f"{path}=dm",), eval_seeds=args.trainings,
                                      baseline=False)
            t = time.perf_counter()
            res, _ = stored.audit_sets_stored(req, force=True)
            total = time.perf_counter() - t
            evals = sum(m["eval_seconds"] for m in res["methods"].values())
            probe = res["timings"].get("probe", 0.0)  # the attribute probe: a training on the real split
            extra = total - evals
            beyond = total - evals - probe
            print(f"audit-set, {label}: {total:.1f} s, of which {evals:.1f} s its {args.trainings} evaluation "
                  f"trainings and {probe:.1f} s the attribute probe: +{extra:.1f} s beyond the evaluation trainings "
                  f"({extra / evals:.1%}), +{beyond:.1f} s beyond all trainings ({beyond / (evals + probe):.1%}; "
                  "target <= 5%)")
            out[label] = {"seconds": total, "eval_seconds": evals, "probe_seconds": probe,
                          "overhead": extra / evals, "overhead_beyond_trainings": beyond / (evals + probe)}
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
