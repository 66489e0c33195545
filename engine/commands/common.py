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
