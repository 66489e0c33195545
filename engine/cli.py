"""`python -m engine ...`: every sub-command lives in engine/commands/<name>.py with register(sub)."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from typing import Any, Sequence

from .allocator import tune_cpu_allocator
from .errors import DDAuditError

# Each module defines register(subparsers) and sets `func` on its parser(s).
COMMAND_MODULES = (
    "engine.commands.data",
    "engine.commands.weights",
    "engine.commands.runs",
    "engine.commands.audit",
    "engine.commands.audit_set",
    "engine.commands.distill",
    "engine.commands.report",
    "engine.commands.sweep",
    "engine.commands.export",
    "engine.commands.example",
    "engine.commands.serve",
    "engine.commands.reproduce",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line plus the fix, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n  fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m engine", description="ddaudit: audit bias amplification in dataset distillation")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def emit(obj: Any, as_json: bool) -> None:
    """Print a result: JSON on stdout when --json, else a readable rendering."""
    if as_json:
        print(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    else:
        print(_pretty(obj))


def _pretty(obj: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(obj, dict):
        return "\n".join(f"{pad}{k}:" + ("\n" + _pretty(v, indent + 1) if isinstance(v, (dict, list)) and v
                                         and not _flat(v) else f" {_short(v)}") for k, v in obj.items())
    if isinstance(obj, list):
        return "\n".join(_pretty(v, indent) if isinstance(v, (dict, list)) else f"{pad}- {v}" for v in obj)
    return f"{pad}{obj}"


def _flat(v: Any) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict,)) for x in v) and len(str(v)) < 100


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _tolerate_legacy_terminal() -> None:
    """Under an ASCII locale (LC_ALL=C with PYTHONUTF8=0) print "±" as "\\xb1" instead of crashing."""
    for stream in (sys.stdout, sys.stderr):
        if "utf" not in (getattr(stream, "encoding", None) or "utf").lower() and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _tolerate_legacy_terminal()
    tune_cpu_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except DDAuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a file where a folder should be...: the user can act on these
        from .errors import from_os_error
        if os.environ.get("DDAUDIT_DEBUG"):
            traceback.print_exc()
        err = from_os_error(exc)
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as exc:  # never a raw traceback unless asked for
        if os.environ.get("DDAUDIT_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc}\n  fix: rerun with DDAUDIT_DEBUG=1 for a "
              "traceback and report it", file=sys.stderr)
        return 1
