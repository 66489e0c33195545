"""`datasets` and `summary`: what can be loaded, and the counts of one biased split."""
from __future__ import annotations

import argparse

from .. import data
from ..cli import emit
from .common import add_dataset_args, add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list datasets and whether their data is available")
    p.add_argument("--data-root", default=None)
    add_json(p)
    p.set_defaults(func=run_datasets)

    p = sub.add_parser("summary", help="class x attribute counts of a biased dataset")
    add_dataset_args(p)
    add_json(p)
    p.set_defaults(func=run_summary)


def run_datasets(args: argparse.Namespace) -> int:
    data.check_data_root(args.data_root)
    rows = [data.dataset_status(name, args.data_root) for name in data.REGISTRY]
    if args.json:
        emit([{k: r[k] for k in ("name", "available", "source", "image_shape", "num_classes", "num_attributes")}
              for r in rows], True)
    else:
        for r in rows:
            mark = "yes" if r["available"] else "no "
            print(f"{r['name']:<18} {mark}  {r['source']}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    ratio = data.check_ratio(args.conflict_ratio)
    seed = data.check_seed(args.seed)
    train, test = data.load_pair(args.dataset, ratio, seed, args.data_root)
    emit({"dataset": args.dataset, "conflict_ratio": ratio, "seed": seed,
          "train": train.summary(), "test": test.summary()}, args.json)
    return 0
