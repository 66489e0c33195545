"""`report`: one self-contained HTML audit report (offline; plotly and images inlined) from stored audit runs."""
from __future__ import annotations

import argparse

from ..cli import emit
from .common import add_json, check_out_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a shareable HTML report of one audit run, or several to compare")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="finished audit run(s) (python -m engine runs list)")
    p.add_argument("--out", required=True, help="the HTML file to write (a single run's also goes into its folder)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import cache, report
    ids = [cache.safe_name(i) for i in args.run_ids]
    emit(report.write(ids, check_out_file(args.out)), args.json)
    return 0
