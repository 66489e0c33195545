"""`export-split`: write a biased split for other code (ImageFolder PNGs, tensor files or the DFA layout)."""
from __future__ import annotations

import argparse

from ..cli import emit
from .common import add_dataset_args, add_json, check_out, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-split", help="write a biased split's train and test images for other code "
                                            "(DM/DC, MTT, FairDD, DFA scripts); see docs/IMPORT.md")
    add_dataset_args(p)
    p.add_argument("--format", required=True,
                   help="imagefolder (PNG class folders + manifest.csv), tensors (split.safetensors + split.pt) "
                        "or dfa (the DisEnt/DFA release layout)")
    p.add_argument("--out", required=True,
                   help="a new or empty folder, or one holding an earlier export of the same --format (replaced)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate everything (the folder included), then export with a progress bar on stderr."""
    from .. import export
    plan = export.plan_export(args.dataset, args.conflict_ratio, args.seed, args.data_root, args.format)
    out = check_out(args.out)
    export.check_target(out, plan.fmt)
    update, close = progress_printer()
    try:
        summary = export.export_split(plan, out, progress=update)
    finally:
        close()
    emit(summary, args.json)
    return 0
