"""Argument helpers shared by the sub-commands."""
from __future__ import annotations

import argparse

from ..data import DEFAULT_DATASET


def add_dataset_args(p: argparse.ArgumentParser, ratio_default: float | None = None) -> None:
    """--dataset, --conflict-ratio, --seed, --data-root (validated by the engine, not argparse)."""
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    p.add_argument("--conflict-ratio", required=ratio_default is None, default=ratio_default,
                   help="fraction of bias-conflicting training samples, in (0, 1)")
    p.add_argument("--seed", default="0", help="random seed (integer, default 0)")
    p.add_argument("--data-root", default=None, help="folder with the raw data (or set DDAUDIT_DATA)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
