"""Argument helpers shared by the sub-commands."""
from __future__ import annotations

import argparse

from ..data import DEFAULT_DATASET
from ..errors import InvalidArgument


def add_dataset_args(p: argparse.ArgumentParser, ratio_default: float | None = None) -> None:
    """--dataset, --conflict-ratio, --seed, --data-root (validated by the engine, not argparse)."""
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    p.add_argument("--conflict-ratio", required=ratio_default is None, default=ratio_default,
                   help="fraction of bias-conflicting training samples, in (0, 1)")
    p.add_argument("--seed", default="0", help="random seed (integer, default 0)")
    p.add_argument("--data-root", default=None, help="folder with the raw data (or set DDAUDIT_DATA)")


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """The distillation options `distill` and `audit` share (validated by the engine, not argparse)."""
    p.add_argument("--methods", default="vanilla,kde,fairdd", help="comma-separated: vanilla, kde, fairdd")
    p.add_argument("--algorithm", default="dm", help="dm (distribution matching) or dc (gradient matching)")
    p.add_argument("--ipc", default="10", help="synthetic images per class (default 10)")
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes) or paper (published settings)")
    p.add_argument("--iterations", default=None, help="distillation iterations (default: the preset's)")
    p.add_argument("--kernel-variance", default=None, help="KDE kernel variance (default: suggested from the data)")
    p.add_argument("--init", default=None,
                   help="synthetic start: method (default: each method its own), real, balanced or noise")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: $DDAUDIT_DEVICE or auto)")
    p.add_argument("--force", action="store_true", help="recompute even if an identical finished run is stored")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def parse_int(value: str | None, flag: str) -> int | None:
    """--flag as an integer (None stays None); range checks belong to the engine."""
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidArgument(f"--{flag} {value!r} is not an integer", f"give a whole number for --{flag}") from None


def parse_float(value: str | None, flag: str, positive: bool = False) -> float | None:
    """--flag as a float (None stays None); with positive=True also finite and > 0."""
    if value is None:
        return None
    try:
        v = float(value)
    except ValueError:
        raise InvalidArgument(f"--{flag} {value!r} is not a number", f"give a number for --{flag}") from None
    if positive and (not v > 0 or v == float("inf")):
        raise InvalidArgument(f"--{flag} must be a positive number, got {value}", f"give --{flag} > 0")
    return v
