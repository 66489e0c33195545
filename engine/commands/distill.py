"""`distill`: every chosen method side by side; writes DIR/<method>/synthetic.safetensors + grid.png."""
from __future__ import annotations

import argparse
import time

from ..cli import emit
from .common import (add_dataset_args, add_distill_args, add_json, check_out, parse_float, progress_printer,
                     request_args, say_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distill a biased dataset with several methods side by side")
    add_dataset_args(p)
    add_distill_args(p)
    p.add_argument("--temperature", default="1.0", help="KDE weight temperature (default 1)")
    p.add_argument("--out", required=True, help="output folder: OUT/<method>/synthetic.safetensors + grid.png")
    add_json(p)
    p.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    from .. import distill as D
    from .. import pipeline, stored

    t0 = time.perf_counter()
    p = pipeline.plan(pipeline.Request(**request_args(args), temperature=parse_float(args.temperature, "temperature")))
    out = check_out(args.out)
    update, close = progress_printer()
    try:
        sets, run = stored.distill_stored(p, force=args.force, progress=update)
    finally:
        close()
    D.save_synthetic(sets, out)
    say_run(run)
    emit({"out": str(out), "methods": {m: {"final_loss": s.final_loss, "seconds": s.seconds} for m, s in sets.items()},
          "iterations": p.distill_cfg.iterations, "seconds": round(time.perf_counter() - t0, 3), "run_id": run.id},
         args.json)
    return 0
