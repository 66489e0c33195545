"""Argument helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..data import DEFAULT_DATASET
from ..distill import backbones
from ..errors import InvalidArgument
from ..progress import Event, Progress


def add_dataset_args(p: argparse.ArgumentParser, ratio_default: float | None = None) -> None:
    """--dataset, --conflict-ratio, --seed, --data-root (validated by the engine, not argparse)."""
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    p.add_argument("--conflict-ratio", required=ratio_default is None, default=ratio_default,
                   help="fraction of bias-conflicting training samples, in (0, 1)")
    p.add_argument("--seed", default="0", help="random seed (integer, default 0)")
    p.add_argument("--data-root", default=None, help="folder with the raw data (or set DDAUDIT_DATA)")


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """The distillation options `distill` and `audit` share (validated by the engine, not argparse)."""
    from ..distill import METHODS
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated: {', '.join(METHODS)}")
    add_backbone_args(p)
    p.add_argument("--ipc", default="10", help="synthetic images per class (default 10)")
    p.add_argument("--preset", default="quick",
                   help="quick (CPU, minutes), paper (published settings) or tiny (seconds; plumbing checks)")
    p.add_argument("--embed-preset", default=None,
                   help="SupCon settings for the KDE weights: tiny, quick or paper (default: --preset); "
                        "e.g. paper distillation on a CPU with quick embeddings")
    p.add_argument("--iterations", default=None, help="distillation iterations (default: the preset's)")
    p.add_argument("--kernel-variance", default=None, help="KDE kernel variance (default: suggested from the data)")
    p.add_argument("--init", default=None,
                   help="synthetic start: method (default: each method its own), real, balanced or noise")
    p.add_argument("--cobra-warmup", default=None,
                   help="cobra (DM): epochs its network is trained on its set each iteration; default by IPC as in "
                        "COBRA's code (10; 50 at IPC 50; 100 at IPC 100), 0 = no warm start (about halves a five-way DM "
                        "iteration on CPU)")
    p.add_argument("--track-every", default=None,
                   help="measure each method's set every N iterations (aligned share, loss; the start and the end "
                        "always): the trajectory in results.json (default: about 10 points per run; 0 = off)")
    p.add_argument("--track-eval", action="store_true",
                   help="at every track point also train one short evaluation net (a third of the preset's "
                        "epochs) and record its conflicting, aligned and worst-group accuracy (costly)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: $DDAUDIT_DEVICE or auto)")
    p.add_argument("--force", action="store_true", help="recompute even if an identical finished run is stored")


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    """--algorithm and every registered backbone's own flags (refused under the others: backbone_overrides)."""
    p.add_argument("--algorithm", default="dm",
                   help="the backbone: " + "; ".join(f"{b.name} ({b.summary})" for b in backbones.REGISTRY.values()))
    for flag, option in backbones.flag_options().items():
        owners = ", ".join(b.name for b in backbones.flag_owners(flag))
        p.add_argument(f"--{flag}", default=None, help=f"{owners}: {option.help} (default: the preset's)")


def backbone_overrides(args: argparse.Namespace) -> dict:
    """The backbone flags given, as distillation overrides by field; a flag of another backbone is refused."""
    overrides = {}
    for flag, option in backbones.flag_options().items():
        value = getattr(args, flag.replace("-", "_"), None)
        if value is None:
            continue
        owners = backbones.flag_owners(flag)
        if args.algorithm not in [b.name for b in owners]:
            raise InvalidArgument(f"--{flag} is a setting of {' and '.join(b.label for b in owners)} ({option.help})",
                                  f"add {' or '.join(f'--algorithm {b.name}' for b in owners)}, or drop --{flag}")
        overrides[option.name] = (parse_float if option.kind is float else parse_int)(value, flag)
    return overrides


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_ray_args(p: argparse.ArgumentParser, unit: str) -> None:
    """Where a command's Ray work runs (sweep, reproduce): the cluster and what each `unit` reserves."""
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (HOST:PORT or auto); default: a local Ray sized to this machine")
    p.add_argument("--cpus-per-cell", default="1", help=f"CPUs each {unit} reserves (and its torch threads; default 1)")
    p.add_argument("--gpus-per-cell", default="0", help=f"GPU fraction each {unit} reserves, e.g. 0.25 (default 0)")


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


def request_args(args: argparse.Namespace) -> dict:
    """The pipeline.Request fields that `distill` and `audit` share, from their common options."""
    overrides: dict = {}
    if args.iterations is not None:  # range: distill.config.check_config
        overrides["iterations"] = parse_int(args.iterations, "iterations")
    if args.init is not None:
        overrides["init"] = args.init
    if args.cobra_warmup is not None:
        overrides["cobra_warmup"] = parse_int(args.cobra_warmup, "cobra-warmup")
    overrides.update(backbone_overrides(args))
    return dict(dataset=args.dataset, conflict_ratio=args.conflict_ratio, methods=args.methods,
                algorithm=args.algorithm, ipc=args.ipc, preset=args.preset, embed_preset=args.embed_preset,
                kernel_variance=parse_float(args.kernel_variance, "kernel-variance"), seed=args.seed,
                data_root=args.data_root, device=args.device, distill_overrides=overrides,
                track_every=parse_int(args.track_every, "track-every"), track_eval=bool(args.track_eval))


def progress_printer() -> tuple[Progress, Callable[[], None]]:
    """(update, close): one tqdm bar per engine stage on stderr, fed by the engine's progress Events
    (losses shown while distilling); stdout stays clean for --json."""
    from tqdm import tqdm
    from ..store.queue import QUEUE_STAGE, wait_text
    state: dict = {"stage": None, "bar": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def update(ev: Event) -> None:
        if ev.stage == QUEUE_STAGE:  # waiting for another run to finish: one line per change of place
            close()
            state["stage"] = ev.stage
            print(wait_text(ev.step, ev.total), file=sys.stderr, flush=True)
            return
        if ev.stage != state["stage"]:
            close()
            state["stage"] = ev.stage
            state["bar"] = tqdm(total=ev.total, desc=ev.stage, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar = state["bar"]
        bar.total = ev.total
        bar.n = ev.step
        losses = ev.losses or ({"loss": ev.loss} if ev.loss is not None else {})
        if losses:
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if v is not None}, refresh=False)
        bar.refresh()
    return update, close


def _outside_store(path: Path) -> None:
    """Refuse a path inside ddaudit's home or inside any folder that holds a run."""
    from ..cache import home
    from ..store import holds_run
    resolved, store = path.resolve(), home().resolve()
    if resolved == store or store in resolved.parents or any(holds_run(p) for p in (resolved, *resolved.parents)):
        raise InvalidArgument(f"--out {path} is inside ddaudit's run store ({store})",
                              "pass a path outside DDAUDIT_HOME; every run already has its own folder there "
                              "(python -m engine runs show RUN_ID)")


def check_out_file(out) -> Path:
    """--out as a file: outside the run store, not a folder, and its folder really writable (checked first)."""
    if out is None or str(out).strip() == "":
        raise InvalidArgument("no output file given", "pass --out report.html")
    path = Path(out).expanduser()
    _outside_store(path)
    if path.is_dir():
        raise InvalidArgument(f"--out {path} is a folder", "pass a file name such as report.html")
    if path.parent.exists() and not path.parent.is_dir():
        raise InvalidArgument(f"cannot write --out {path}: {path.parent} is a file", "pass a path in a folder")
    _try_writing(path.parent)
    return path


def check_out(out) -> Path:
    """--out must be (or become) a writable folder outside ddaudit's home and outside any run: the
    store's files belong to their runs (a copy there would silently replace another run's results)."""
    if out is None or str(out).strip() == "":
        raise InvalidArgument("no output folder given", "pass --out DIR")
    path = Path(out).expanduser()
    _outside_store(path)
    if path.exists() and not path.is_dir():
        raise InvalidArgument(f"--out {path} exists and is not a folder", "pass a folder path to --out")
    _try_writing(path)  # creates, writes and cleans up: catches what a permission check cannot
    return path


def _try_writing(path: Path) -> None:
    """Create the folder and a file in it, then undo what was created: some folders (/proc, a full or
    read-only mount) pass every permission check and still refuse a write, which must show before the work."""
    import os
    import uuid
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        test = path / f".ddaudit-write-test-{uuid.uuid4().hex[:8]}"
        test.write_bytes(b"ok")
        test.unlink()
    except OSError as exc:
        raise InvalidArgument(f"cannot write into --out {path} ({exc.strerror or exc})",
                              "pass an --out folder on a writable disk") from None
    finally:
        for p in made:  # deepest first: leave nothing behind for a request that may still be refused
            try:
                os.rmdir(p)
            except OSError:
                pass


def say_run(run) -> None:
    """Which stored run a command used, and whether it was computed now or reused (stderr)."""
    print(f"run {run.id} ({'reused' if run.reused else 'computed'}; python -m engine runs show {run.id})",
          file=sys.stderr)


def finish_audit(result: dict, run, out: Path, as_json: bool) -> int:
    """An audit's last step on the CLI: copy the stored run to OUT, say which run it is, then its
    warnings and its table (or the JSON)."""
    from .. import audit
    from ..cli import emit
    run.copy_to(out)  # the run lives in the store; OUT gets a copy of its results, sets and grids
    say_run(run)
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        emit(result, True)
    else:
        print(audit.table(result))
        print(f"written: {out}/results.json", file=sys.stderr)
    return 0
