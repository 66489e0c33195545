"""`audit`: distill with several methods, evaluate them against baselines, audit the synthetic sets."""
from __future__ import annotations

import argparse

from .common import (add_dataset_args, add_distill_args, add_json, check_out, finish_audit, parse_float,
                     progress_printer, request_args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="distill, evaluate and audit bias amplification end to end")
    add_dataset_args(p)
    add_distill_args(p)
    p.add_argument("--temperature", default="1.0", help="KDE weight temperature (default 1)")
    p.add_argument("--eval-seeds", default=None, help="evaluation trainings per set (default: the preset's)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the 'random' baseline (IPC random real images per class, evaluated like the sets)")
    p.add_argument("--out", required=True, help="folder for results.json, the synthetic sets and their grids")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import pipeline, stored

    p = pipeline.plan(pipeline.Request(**request_args(args), temperature=parse_float(args.temperature, "temperature"),
                                       eval_seeds=args.eval_seeds, baseline=not args.no_baseline))
    out = check_out(args.out)
    update, close = progress_printer()
    try:
        result, run = stored.audit_stored(p, force=args.force, progress=update)
    finally:
        close()
    return finish_audit(result, run, out, args.json)
