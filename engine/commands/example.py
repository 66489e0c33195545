"""`example build|check`: the bundled example in assets/example (`make assets` builds it)."""
from __future__ import annotations

import argparse

from ..cli import emit
from ..errors import DDAuditError
from .common import add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("example", help="build or check the bundled example the dashboard shows first")
    ex = p.add_subparsers(dest="example_command", required=True, metavar="{build,check}")
    q = ex.add_parser("build", help="compute the example's runs (about 10 minutes on 2 cores) into assets/example")
    q.add_argument("--home", default=None,
                   help="compute in this folder and keep it (a rebuild then reuses every finished run); "
                        "default: a temporary one")
    add_json(q)
    q.set_defaults(func=run_build)
    q = ex.add_parser("check", help="whether the bundle matches this code's versions and run keys")
    add_json(q)
    q.set_defaults(func=run_check)


def run_build(args: argparse.Namespace) -> int:
    from .. import example
    from pathlib import Path
    manifest = example.build(home=Path(args.home) if args.home else None)
    emit({k: manifest[k] for k in ("roles", "bytes", "seconds")}, args.json)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from .. import example
    problems = example.stale()
    if problems:
        raise DDAuditError("the bundled example is stale: " + "; ".join(problems),
                           f"rebuild it: {example.BUILD_COMMAND}")
    emit({"bundle": str(example.ASSET_DIR), "up_to_date": True}, args.json)
    return 0
