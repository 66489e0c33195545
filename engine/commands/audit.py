"""`audit`: distill with several methods, evaluate them against baselines, audit the synthetic sets."""
from __future__ import annotations

import argparse
import sys

from ..cli import emit
from .common import add_dataset_args, add_distill_args, add_json, check_out, parse_float, progress_printer, request_args


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
    from .. import audit, pipeline, stored

    p = pipeline.plan(pipeline.Request(**request_args(args), temperature=parse_float(args.temperature, "temperature"),
                                       eval_seeds=args.eval_seeds, baseline=not args.no_baseline))
    out = check_out(args.out)
    update, close = progress_printer()
    try:
        result, run = stored.audit_stored(p, force=args.force, progress=update)
    finally:
        close()
    # the run lives in the store; OUT gets a copy of its results, sets and grids
    run.copy_to(out)
    print(f"run {run.id} ({'reused' if run.reused else 'computed'}; python -m engine runs show {run.id})",
          file=sys.stderr)
    if args.json:
        emit(result, True)
    else:
        print(audit.table(result))
        print(f"written: {out}/results.json", file=sys.stderr)
    return 0
