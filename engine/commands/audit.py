"""`audit`: distill with several methods, evaluate them against baselines, audit the synthetic sets."""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time

from .. import audit
from ..cli import emit
from .common import add_dataset_args, add_distill_args, add_json, parse_float

log = logging.getLogger("ddaudit")


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


def _progress_printer() -> callable:
    """Stage changes and ~10% steps as log lines on stderr (shown with -v); stdout stays clean for --json."""
    last: dict[str, int] = {}
    t0 = time.time()

    def show(ev: dict) -> None:
        stage, step, total = ev.get("stage", "?"), int(ev.get("step", 0)), max(int(ev.get("total", 1)), 1)
        tenth = step * 10 // total
        if last.get(stage) != tenth:
            last[stage] = tenth
            log.info("[%5.0f s] %s %d/%d", time.time() - t0, stage, step, total)
    return show


def _distill_overrides(args: argparse.Namespace) -> dict:
    """--iterations and --init as DistillConfig overrides (checked by distill.config_for)."""
    out: dict = {}
    if args.iterations is not None:
        out["iterations"] = audit.positive_int(args.iterations, "iterations",
                                               "give --iterations as a whole number such as 300")
    if args.init is not None:
        out["init"] = args.init
    return out


def run(args: argparse.Namespace) -> int:
    cfg = audit.AuditConfig(
        dataset=args.dataset, conflict_ratio=args.conflict_ratio, out=args.out, methods=args.methods,
        algorithm=args.algorithm, ipc=args.ipc, preset=args.preset,
        kernel_variance=parse_float(args.kernel_variance, "kernel-variance"),
        temperature=parse_float(args.temperature, "temperature"), seed=args.seed,
        eval_seeds=args.eval_seeds, baseline=not args.no_baseline, data_root=args.data_root, device=args.device,
        distill_overrides=_distill_overrides(args))
    result, run = audit.run_stored(cfg, force=args.force, progress=_progress_printer())
    # the run lives in the store; OUT gets a copy of its results, sets and grids
    shutil.copytree(run.dir, args.out, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("checkpoints", "status.json", "log.txt", ".*"))
    print(f"run {run.id} ({'reused' if run.reused else 'computed'}; python -m engine runs show {run.id})",
          file=sys.stderr)
    if args.json:
        emit(result, True)
    else:
        print(audit.table(result))
        print(f"written: {cfg.out}/results.json", file=sys.stderr)
    return 0
