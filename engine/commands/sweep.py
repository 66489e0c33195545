"""`sweep`: a grid of audits (ratios x kernel variances x IPCs x seeds) on Ray; tidy CSV + summary JSON."""
from __future__ import annotations

import argparse
import sys

from ..cli import emit
from .common import add_backbone_args, add_json, add_ray_args, backbone_overrides, check_out, parse_float, parse_int, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of audits on Ray (local by default, a cluster with --address)")
    p.add_argument("--dataset", required=True, help="dataset name")
    p.add_argument("--conflict-ratio", required=True, help="comma-separated ratios, e.g. 0.01,0.05")
    p.add_argument("--kernel-variance", default="suggested",
                   help="comma-separated kernel variances; 'suggested' = the median heuristic (default)")
    p.add_argument("--methods", default="vanilla,kde,fairdd", help="comma-separated methods (default vanilla,kde,fairdd)")
    p.add_argument("--ipc", default="10", help="comma-separated images per class (default 10)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--preset", default="quick", help="tiny | quick | paper (default quick)")
    add_backbone_args(p)
    p.add_argument("--eval-seeds", default=None, help="evaluation trainings per set (default: the preset's)")
    p.add_argument("--data-root", default=None, help="folder with the raw data (or set DDAUDIT_DATA)")
    add_ray_args(p, "cell")
    p.add_argument("--out", required=True, help="folder for sweep.json and sweep.csv")
    add_json(p)
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    """The backbone's own flags as the grid's distillation overrides (none: the grid's key is unchanged)."""
    own = backbone_overrides(args)
    return {"overrides": {"distill": own}} if own else {}


def run(args: argparse.Namespace) -> int:
    from .. import sweep
    grid = sweep.make_grid(args.dataset, args.conflict_ratio, args.kernel_variance, args.methods, args.ipc, args.seeds,
                           preset=args.preset, algorithm=args.algorithm, eval_seeds=parse_int(args.eval_seeds, "--eval-seeds"),
                           data_root=args.data_root, **_overrides(args))
    cpus = parse_float(args.cpus_per_cell, "--cpus-per-cell", positive=True)
    gpus = parse_float(args.gpus_per_cell, "--gpus-per-cell") or 0.0
    n = len(sweep.prepare(grid, args.address, cpus, gpus))  # a bad grid or missing data fails here, before Ray
    out = check_out(args.out)
    print(f"sweep: {n} cells on {args.address or 'a local Ray (listening on 127.0.0.1 only)'}", file=sys.stderr)
    note = sweep.use_token(args.address)
    if note:
        print(note, file=sys.stderr)
    update, close = progress_printer()
    try:
        summary = sweep.run_sweep(grid, args.address, cpus, gpus, progress=update)
    except KeyboardInterrupt:
        close()
        print("sweep interrupted: finished cells are stored; run the same command again to resume", file=sys.stderr)
        raise
    finally:
        close()
    from ..cache import atomic_write_json
    atomic_write_json(out / "sweep.json", summary)
    (out / "sweep.csv").write_text(sweep.to_csv(summary["rows"]), encoding="utf-8")
    print(f"sweep {summary['run_id']}: {summary['cells']} cells ({summary['reused_cells']} reused); "
          f"written: {out}/sweep.json, {out}/sweep.csv", file=sys.stderr)
    if args.json:
        emit(summary, True)
    else:
        for b in summary["best_kernel_variance"]:
            print(f"ratio {b['conflict_ratio']:g} IPC {b['ipc']} {b['method']}: best kernel variance by conflicting "
                  f"accuracy {b['best_by_conflicting_accuracy']}, by worst group {b['best_by_worst_group_accuracy']}")
    return 0
