"""`distill`: DM / DC with vanilla, KDE and FairDD side by side; writes DIR/<method>/synthetic.safetensors."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import data
from ..cli import emit
from ..errors import InvalidArgument
from .common import add_dataset_args, add_distill_args, add_json, parse_float, parse_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distill a biased dataset with several methods side by side")
    add_dataset_args(p)
    add_distill_args(p)
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (default: the run's folder in the run store); resumes")
    p.add_argument("--out", required=True, help="output folder: OUT/<method>/synthetic.safetensors + grid.png")
    add_json(p)
    p.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    from .. import distill as D  # torch-heavy: imported only when the command runs

    # validate everything cheap before loading data or writing anything
    methods = D.check_methods(args.methods)
    ratio = data.check_ratio(args.conflict_ratio)
    seed = data.check_seed(args.seed)
    data.get_spec(args.dataset)
    ipc = parse_int(args.ipc, "ipc")
    kv = parse_float(args.kernel_variance, "kernel-variance", positive=True)
    cfg = D.config_for(args.preset, args.algorithm, ipc, iterations=parse_int(args.iterations, "iterations"), seed=seed,
                       device=args.device, init=args.init)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} exists and is not a folder", "pass a folder path")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise InvalidArgument(f"cannot write into {parent}", "pass an --out folder you can write to")

    train = data.load_split(args.dataset, ratio, "train", seed, args.data_root)
    D.check_ipc(train, ipc)
    from ..store import RunStore
    key = {"dataset": args.dataset, "conflict_ratio": ratio, "seed": seed, "methods": list(methods),
           "data_root": args.data_root, "kernel_variance": kv, "embed_preset": args.preset,
           "distill": cfg.key(), "versions": {"data": data.BUILD_VERSION, "distill": D.DISTILL_VERSION}}
    t0 = time.perf_counter()
    with RunStore().run("distill", key, force=args.force) as run:
        if run.reused and all((run.dir / m / "synthetic.safetensors").is_file() for m in methods):
            sets = {m: D.load_synthetic(run.dir / m) for m in methods}
        else:
            weights = _kde_weights(train, kv, args.preset, seed, cfg.device) if "kde" in methods else None
            bar = _bar(cfg.iterations, f"distill {args.algorithm} x{len(methods)}")
            try:
                sets = D.distill(train, cfg, methods, weights=weights, progress=bar.update if bar else None,
                                 should_stop=run.should_stop,
                                 checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir
                                 else run.checkpoint_dir)
            finally:
                if bar:
                    bar.close()
            D.save_synthetic(sets, run.dir)
            run.finish({"methods": {m: {"final_loss": x.final_loss, "seconds": x.seconds} for m, x in sets.items()},
                        "iterations": cfg.iterations})
    D.save_synthetic(sets, out)
    print(f"run {run.id} ({'reused' if run.reused else 'computed'}; python -m engine runs show {run.id})",
          file=sys.stderr)
    emit({"out": str(out), "methods": {m: {"final_loss": s.final_loss, "seconds": s.seconds} for m, s in sets.items()},
          "iterations": cfg.iterations, "seconds": round(time.perf_counter() - t0, 3), "run_id": run.id}, args.json)
    return 0


def _kde_weights(train, kernel_variance, preset: str, seed: int, device: str):
    """KDE weights from engine.density (the embeddings issue); a clear error if it is not there yet."""
    try:
        from .. import density
    except ImportError:
        raise InvalidArgument("the kde method needs engine.density, which is not installed in this build",
                              "drop kde from --methods (e.g. --methods vanilla,fairdd)") from None
    kwargs = {"kernel_variance": kernel_variance, "temperature": 1.0, "preset": preset, "seed": seed}
    if device and device != "auto":
        kwargs["device"] = device
    return density.training_weights(train, **kwargs).weights


class _Tqdm:
    """tqdm on stderr fed by the engine's progress dicts."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(self, info: dict) -> None:
        self.bar.n = info["step"]
        losses = info.get("losses") or {}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if v is not None}, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _bar(total: int, desc: str) -> _Tqdm | None:
    try:
        return _Tqdm(total, desc)
    except ImportError:
        return None
