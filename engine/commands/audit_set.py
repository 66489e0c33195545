"""`audit-set`: audit synthetic sets made elsewhere (DatasetCondensation, MTT, FairDD, an image folder, ...)
with the native audit's protocol, on a split `export-split` handed to that code (docs/IMPORT.md)."""
from __future__ import annotations

import argparse

from .common import add_dataset_args, add_json, check_out, finish_audit, parse_int, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit-set", help="audit a synthetic set made by other code, beside the native methods")
    add_dataset_args(p)
    p.add_argument("--set", action="append", required=True, metavar="PATH[=NAME]",
                   help="a set: ddaudit's synthetic.safetensors (or its folder), a DatasetCondensation result .pt, "
                        "MTT's images_*.pt (labels_*.pt beside it), a .pt/.safetensors with images and labels, "
                        "or an image folder of class subfolders; repeat for several sets")
    p.add_argument("--normalization", default=None,
                   help="the space the images are in: split (default: standardised with the split's mean/std, as "
                        "export-split's meta.json gives them), unit ([0, 1]) or mean=a[,b,c],std=d[,e,f]; image "
                        "folders and uint8 tensors are pixels whatever is given")
    p.add_argument("--experiment", default=None,
                   help="DatasetCondensation result files: which experiment's set (0, 1, ...; default the last)")
    p.add_argument("--soft-labels", default=None, choices=("argmax",),
                   help="soft label matrices (DATM) are refused unless turned into their argmax")
    p.add_argument("--preset", default="quick", help="evaluation preset: quick, paper or tiny (as `audit`)")
    p.add_argument("--eval-seeds", default=None, help="evaluation trainings per set (default: the preset's)")
    p.add_argument("--eval-dsa", choices=("on", "off"), default=None,
                   help="DSA augmentation while training on the set (default: the preset's, on; public DM code "
                        "evaluates with it, DC without)")
    p.add_argument("--eval-depth", default=None, help="ConvNet depth of the evaluation (default 3; 4 for 64x64)")
    p.add_argument("--no-baseline", action="store_true", help="skip the 'random' baseline")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: $DDAUDIT_DEVICE or auto)")
    p.add_argument("--force", action="store_true", help="recompute even if an identical finished run is stored")
    p.add_argument("--out", required=True, help="folder for results.json, the sets and their grids")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import pipeline, stored
    overrides: dict = {}
    if args.eval_dsa is not None:
        overrides["dsa"] = args.eval_dsa == "on"
    if args.eval_depth is not None:
        overrides["depth"] = parse_int(args.eval_depth, "eval-depth")
    req = pipeline.SetRequest(args.dataset, args.conflict_ratio, tuple(args.set), seed=args.seed,
                              normalization=args.normalization, experiment=parse_int(args.experiment, "experiment"),
                              soft_labels=args.soft_labels, preset=args.preset, eval_seeds=args.eval_seeds,
                              baseline=not args.no_baseline, data_root=args.data_root, device=args.device,
                              eval_overrides=overrides)
    pipeline.plan_sets(req)  # every argument checked before the files are read
    out = check_out(args.out)
    update, close = progress_printer()
    try:
        result, run_ = stored.audit_sets_stored(req, force=args.force, progress=update)
    finally:
        close()
    return finish_audit(result, run_, out, args.json)
