"""`reproduce`: a published table's audits as one sweep (stored runs reused), then the table side by side."""
from __future__ import annotations

import argparse
import sys

from ..cli import emit
from .common import add_json, add_ray_args, check_out, parse_float, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce a published table: its audits (stored ones reused), then "
                                         "published against ours side by side")
    p.add_argument("table", nargs="?", default=None, help="the table's id (python -m engine reproduce --list)")
    p.add_argument("--list", action="store_true", help="list the published tables and exit")
    p.add_argument("--rows", default=None,
                   help="filter, KEY=VALUE comma-separated (a key twice: either value), keys dataset, algorithm, "
                        "method, ipc, ratio, source; e.g. dataset=bg-fmnist,algorithm=dm,ipc=10")
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes per audit; default) or paper (the "
                                                     "published settings)")
    p.add_argument("--stand-ins", action="store_true",
                   help="where a row's data is missing, audit its stand-in (colored-digits for C-MNIST FG), shown "
                        "apart and never as the published row")
    p.add_argument("--dry-run", action="store_true",
                   help="print every audit, whether it is stored, and the estimated time; run nothing")
    p.add_argument("--data-root", default=None, help="folder with the raw data (or set DDAUDIT_DATA)")
    add_ray_args(p, "audit")
    p.add_argument("--out", default=None, help="folder for reproduce.json, .csv, .md and .html (optional)")
    add_json(p)
    p.set_defaults(func=run)


def _listing(as_json: bool) -> int:
    from .. import reproduce
    listed = [reproduce.describe(t) for t in reproduce.tables().values()]
    if as_json:
        emit(listed, True)
    else:
        for t in listed:
            print(f"{t['table']:<16} {t['rows']:>3} rows  {t['title']}\n{'':<22}datasets {', '.join(t['datasets'])}; "
                  f"backbones {', '.join(t['backbones'])}")
    return 0


def _print_dry_run(plan, audits: list[dict]) -> None:
    from ..estimate import duration
    todo = [a for a in audits if not a["stored"]]
    print(f"reproduce {plan.table.id} at the {plan.preset} preset: {len(plan.rows)} row(s), {len(audits)} audit(s), "
          f"{len(audits) - len(todo)} stored")
    for a in audits:
        state = "stored" if a["stored"] else a["estimate"]
        print(f"  {a['run_id']}  {'[stand-in] ' if a['stand_in'] else ''}{a['rows']} row(s): {state}\n    {a['command']}")
    _print_skipped(plan)
    known = [a["seconds"] for a in todo if a["seconds"] is not None]
    print(f"to compute: {len(todo)} audit(s), about {duration(sum(known))} one after another on 2 CPU cores"
          + (" (paper preset: extrapolated from the quick preset's measured costs)" if plan.preset == "paper" else ""))


def _print_skipped(plan) -> None:
    """Rows not run, one line per missing dataset or absent backbone (with the rows it holds and the fix)."""
    def rows(entries) -> str:
        return "; ".join(f"{e['row'].algorithm} {e['row'].method} IPC {e['row'].ipc}" for e in entries)
    by_data: dict = {}
    for m in plan.missing:
        by_data.setdefault(m["dataset"], []).append(m)
    for name, entries in by_data.items():
        first = entries[0]
        ran = any(a.stand_in == first["stand_in"] for a in plan.audits)
        alt = "" if not first["stand_in"] else (
            f" Its stand-in {first['stand_in']} is audited in its place (shown apart)." if ran else
            f" Stand-in {first['stand_in']} is here: --stand-ins audits it (shown apart).")
        print(f"  not run, data missing: {first['row'].paper_dataset} ({name}), {len(entries)} row(s): {rows(entries)}\n"
              f"    where to put it: {first['fix'].rstrip('.')}.{alt}")
    by_backbone: dict = {}
    for u in plan.unsupported:
        by_backbone.setdefault(u["row"].algorithm, []).append(u)
    for name, entries in by_backbone.items():
        print(f"  not run, {entries[0]['problem']}: {len(entries)} row(s)")


def run(args: argparse.Namespace) -> int:
    from .. import reproduce
    from ..errors import InvalidArgument
    if args.list:
        return _listing(args.json)
    if args.table is None:
        raise InvalidArgument("no table given", "name one, e.g. python -m engine reproduce fairdd-table1 "
                                                "(python -m engine reproduce --list shows them)")
    table = reproduce.get_table(args.table)
    rows = reproduce.select(table, reproduce.parse_filter(args.rows))
    plan = reproduce.make_plan(table, rows, args.preset, args.data_root, args.stand_ins)
    cpus = parse_float(args.cpus_per_cell, "cpus-per-cell", positive=True)
    gpus = parse_float(args.gpus_per_cell, "gpus-per-cell") or 0.0
    out = check_out(args.out) if args.out is not None else None
    if args.dry_run:
        audits = reproduce.dry_run(plan)
        if args.json:
            emit({"table": table.id, "preset": plan.preset, "audits": audits,
                  "missing": [_skip(m) for m in plan.missing], "unsupported": [_skip(u) for u in plan.unsupported]},
                 True)
        else:
            _print_dry_run(plan, audits)
        return 0
    update, close = progress_printer()
    try:
        result = reproduce.reproduce(plan, args.address, cpus, gpus, progress=update)
    except KeyboardInterrupt:
        close()
        print("reproduce interrupted: finished audits are stored; run the same command again to resume", file=sys.stderr)
        raise
    finally:
        close()
    if out is not None:
        _write(result, out)
    print(f"reproduce {table.id}: {result['audits']} audit(s), {result['computed']} computed, {result['reused']} "
          f"reused, {result['seconds']:.0f} s", file=sys.stderr)
    if args.json:
        emit(result, True)
    else:
        from ..figures.reproduce import markdown
        print(f"{result['title']}\n{result['citation']}; preset {result['preset']}\n")
        print(markdown(result))
        if plan.missing or plan.unsupported:
            print("\nRows not run:")
            _print_skipped(plan)
        c = result["counts"]
        print(f"\n{c['agrees']} agree, {c['partly']} partly, {c['differs']} differ (docs/REPRODUCE.md: the rule)")
    return 0


def _skip(entry: dict) -> dict:
    r = entry["row"]
    return {"row": f"{r.paper_dataset} {r.algorithm} {r.method} IPC {r.ipc}", "dataset": r.dataset,
            **{k: v for k, v in entry.items() if k != "row"}}


def _write(result: dict, out) -> None:
    from .. import reproduce
    from ..cache import atomic_write_bytes, atomic_write_json
    from ..figures.reproduce import markdown
    from ..report import reproduction_html
    from ..sweep import to_csv
    atomic_write_json(out / "reproduce.json", result)
    atomic_write_bytes(out / "reproduce.csv", to_csv(reproduce.table_rows(result)).encode())
    atomic_write_bytes(out / "reproduce.md", (markdown(result) + "\n").encode())
    atomic_write_bytes(out / "reproduce.html", reproduction_html(result).encode())
    print(f"written: {out}/reproduce.json, .csv, .md, .html", file=sys.stderr)
