"""`runs list|show|compare|rm|clean|cancel|rebuild-index`: the stored audits and distillations."""
from __future__ import annotations

import argparse
import sys

from .. import cache
from ..cli import emit
from ..errors import DDAuditError, InvalidArgument
from ..store import STATUSES, RunStore
from .common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list, show, compare and remove stored runs")
    runs = p.add_subparsers(dest="runs_command", required=True, metavar="{list,show,compare,rm,clean,gc,keep,cancel,"
                            "rebuild-index}")

    q = runs.add_parser("list", help="stored runs, newest first")
    q.add_argument("--kind", default=None, help="only runs of this kind (audit, distill, ...)")
    q.add_argument("--status", default=None, choices=STATUSES, help="only runs with this status")
    add_json(q)
    q.set_defaults(func=run_list)

    q = runs.add_parser("show", help="one run: config, metrics, files and integrity problems")
    q.add_argument("run_id")
    add_json(q)
    q.set_defaults(func=run_show)

    q = runs.add_parser("compare", help="runs side by side: differing config keys and headline metrics")
    q.add_argument("run_ids", nargs="+")
    add_json(q)
    q.set_defaults(func=run_compare)

    q = runs.add_parser("rm", help="delete a run (folder and index entry)")
    q.add_argument("run_id")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=run_rm)

    q = runs.add_parser("clean", help="delete every run with a status (default: failed)")
    q.add_argument("--status", default="failed", choices=[s for s in STATUSES if s != "running"])
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=run_clean)

    q = runs.add_parser("gc", help="remove old runs (by age, by total size) and finished runs' checkpoints; "
                                   "never a running, kept or referenced run")
    q.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="remove runs last updated more than DAYS days ago")
    q.add_argument("--max-size", default=None, metavar="SIZE",
                   help="then remove the oldest runs until the store is under SIZE (e.g. 2G, 500M)")
    q.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_json(q)
    q.set_defaults(func=run_gc)

    q = runs.add_parser("keep", help="mark a run to keep: gc never removes it (--off unmarks it)")
    q.add_argument("run_id")
    q.add_argument("--off", action="store_true", help="remove the mark")
    q.set_defaults(func=run_keep)

    q = runs.add_parser("cancel", help="ask a running run to stop at its next step")
    q.add_argument("run_id")
    q.set_defaults(func=run_cancel)

    q = runs.add_parser("rebuild-index", help="rebuild index.sqlite from the run folders")
    q.set_defaults(func=run_rebuild)


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal unless --yes; scripts (no terminal) are taken at their word."""
    if yes or not sys.stdin.isatty():
        return
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise DDAuditError("nothing removed", "answer y, or pass --yes")


def run_list(args: argparse.Namespace) -> int:
    if args.kind is not None:
        cache.safe_name(args.kind)
    rows = RunStore().list(kind=args.kind, status=args.status)
    if args.json:
        emit(rows, True)
        return 0
    if not rows:
        print("no runs stored (they live in", RunStore().root, ")")
    for r in rows:
        shown = [f"{k}={v:.4g}" for k, v in r["metrics"].items() if isinstance(v, float)][:3]
        print(f"{r['id']:<48} {r['status']:<9} {r['created'][:19]}  {r['error'] or ' '.join(shown)}")
    if rows:
        from ..store.gc import human, store_bytes
        print(f"{len(rows)} run(s), {human(store_bytes(RunStore()))} in {RunStore().root} "
              "(python -m engine runs gc --dry-run shows what could go)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    run_id = cache.safe_name(args.run_id)
    info = RunStore().get(run_id)
    emit(info, args.json)
    if info["problems"]:
        raise DDAuditError(f"run {run_id} has damaged files: " + "; ".join(info["problems"]),
                           f"start it again to recompute, or remove it: python -m engine runs rm {run_id}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    ids = [cache.safe_name(i) for i in args.run_ids]
    emit(RunStore().compare(ids), args.json)
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from .. import example
    run_id = cache.safe_name(args.run_id)
    store = RunStore()
    if store.index.get_row(run_id) is None and example.holds(run_id):
        example.refuse_removal(run_id)
    store.get(run_id)  # unknown id -> clear error before asking anything
    _confirm(f"remove run {run_id}?", args.yes)
    store.remove(run_id)
    print(f"removed {run_id}")
    return 0


def run_clean(args: argparse.Namespace) -> int:
    store = RunStore()
    doomed = [r["id"] for r in store.list(status=args.status)]
    if not doomed:
        print(f"no {args.status} runs")
        return 0
    _confirm(f"remove {len(doomed)} {args.status} run(s)?", args.yes)
    removed = store.clean(args.status)
    for run_id in removed:
        print(f"removed {run_id}")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    from ..store import gc
    store = RunStore()
    limit = gc.parse_size(args.max_size) if args.max_size is not None else None
    plan = gc.plan_gc(store, args.older_than, limit)
    if not args.dry_run and (plan["runs"] or plan["checkpoints"]):
        _confirm(f"remove {len(plan['runs'])} run(s) and the checkpoints of {len(plan['checkpoints'])} finished "
                 "run(s)?", args.yes)
    out = gc.run_gc(store, args.older_than, limit, dry_run=args.dry_run)
    if args.json:
        emit(out, True)
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in out["runs"]:
        print(f"{verb} {r['id']}  {gc.human(r['bytes'])}  ({r['reason']})")
    freed = sum(c["bytes"] for c in out["checkpoints"])
    if freed:
        print(f"{verb} the checkpoints of {len(out['checkpoints'])} finished run(s): {gc.human(freed)}")
    for rid, why in out["protected"].items():
        print(f"kept {rid}  ({why})")
    print(f"store: {gc.human(out['store_bytes'])} -> {gc.human(out['after_bytes'])}" + (" (dry run)" if args.dry_run else ""))
    return 0


def run_keep(args: argparse.Namespace) -> int:
    from ..store import gc
    gc.set_keep(RunStore(), args.run_id, keep=not args.off)
    print(f"{'unmarked' if args.off else 'kept'} {cache.safe_name(args.run_id)}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    run_id = cache.safe_name(args.run_id)
    store = RunStore()
    if store.get(run_id)["status"] != "running":
        raise InvalidArgument(f"run {run_id} is not running", "only running runs can be cancelled")
    store.request_cancel(run_id)
    print(f"asked {run_id} to stop")
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    print(f"indexed {RunStore().rebuild_index()} run(s)")
    return 0
