"""Run every bench/bench_*.py module's main(), in name order (`python -m bench [NAME ...]`)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    chosen = [n for n in names if not argv or n in argv or n.removeprefix("bench_") in argv]
    if not chosen:
        print(f"error: no benchmark matches {argv}\n  fix: choose from {', '.join(names)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
