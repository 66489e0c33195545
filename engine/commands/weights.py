"""`weights`: SupCon embeddings -> per-class KDE -> inverse-density weights, their diagnostics, a CSV."""
from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

from .. import cache, data, density, embed
from ..cli import emit
from ..device import pick_device
from ..errors import InvalidArgument
from ..progress import report
from .common import add_dataset_args, add_json, progress_printer

JSON_KEYS = ("kernel_variance", "temperature", "conflict_fraction", "conflict_weight_mass",
             "effective_sample_size", "per_class")
CSV_COLUMNS = ("index", "class", "attribute", "aligned", "density", "weight", "umap_x", "umap_y")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="KDE inverse-density weights of a biased training set (docs/KDE.md)")
    add_dataset_args(p)
    p.add_argument("--kernel-variance", default=None,
                   help="Gaussian kernel variance s2 (default: the suggested value, see docs/KDE.md)")
    p.add_argument("--temperature", default="1.0", help="T in w ∝ f^(-1/T); 1 = plain inverse density")
    p.add_argument("--preset", default="quick", help=f"SupCon preset: {' | '.join(embed.PRESETS)} (default quick)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="write one row per training sample: " + ",".join(CSV_COLUMNS))
    p.add_argument("--map-points", default="5000",
                   help="UMAP cap for --csv (every conflicting sample is kept; rows off the map get empty umap_x/y)")
    add_json(p)
    p.set_defaults(func=run_weights)


def _check_csv_path(path: str) -> Path:
    out = Path(path).expanduser()
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise InvalidArgument(f"--csv {out} is a folder", "give a file name, e.g. weights.csv")
    if not parent.is_dir():
        raise InvalidArgument(f"folder {parent} for --csv does not exist", "create it or write somewhere else")
    if not os.access(parent, os.W_OK):
        raise InvalidArgument(f"folder {parent} for --csv is not writable", "write somewhere else")
    return out


def _check_points(value: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"--map-points {value!r} is not an integer", "give a whole number such as 5000") from None
    if n < 3:
        raise InvalidArgument(f"--map-points {n} is too small", "give at least 3 (default 5000)")
    if n > 10_000_000:  # a map keeps at most every training image; more is a typo
        raise InvalidArgument(f"--map-points {n:,} is above the limit of 10,000,000", "give e.g. 5000")
    return n


def run_weights(args: argparse.Namespace) -> int:
    # validate everything before any heavy work or any write
    ratio = data.check_ratio(args.conflict_ratio)
    seed = data.check_seed(args.seed)
    s2 = None if args.kernel_variance is None else density.check_kernel_variance(args.kernel_variance)
    t = density.check_temperature(args.temperature)
    embed.get_preset(args.preset)
    data.get_spec(args.dataset)
    csv_path = _check_csv_path(args.csv) if args.csv else None
    points = _check_points(args.map_points)
    device = pick_device(args.device)

    update, close = progress_printer()
    try:
        train = data.load_split(args.dataset, ratio, "train", seed, args.data_root)
        res = density.training_weights(train, kernel_variance=s2, temperature=t, preset=args.preset, seed=seed,
                                       device=device, progress=update)
        if csv_path is not None:
            report(update, "umap", 0, 1)
            _write_csv(csv_path, train, res, points, seed)
            report(update, "umap", 1, 1)
    finally:
        close()
    d = res.diagnostics
    out = {"kernel_variance": res.kernel_variance, "temperature": res.temperature,
           "conflict_fraction": d["conflict_fraction"], "conflict_weight_mass": d["conflict_weight_mass"],
           "effective_sample_size": d["effective_sample_size"], "per_class": d["per_class"]}
    emit({k: out[k] for k in JSON_KEYS}, args.json)
    return 0


def _write_csv(path: Path, train, res: density.WeightResult, max_points: int, seed: int) -> None:
    """One row per training sample; umap_x/umap_y empty for rows outside the capped map."""
    from .. import projection
    rows, coords = projection.umap_map(res.embeddings, train.targets, train.aligned, max_points, seed)
    xy: dict[int, tuple[float, float]] = {int(r): (float(c[0]), float(c[1])) for r, c in zip(rows, coords)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    dens = res.log_density.double().exp().tolist()
    weights = res.weights.tolist()
    targets, attrs, aligned = train.targets.tolist(), train.attributes.tolist(), train.aligned.tolist()
    for i in range(len(train)):
        u = xy.get(i)
        w.writerow([i, targets[i], attrs[i], int(aligned[i]), f"{dens[i]:.9g}", f"{weights[i]:.9g}",
                    "" if u is None else f"{u[0]:.6g}", "" if u is None else f"{u[1]:.6g}"])
    cache.atomic_write_bytes(path, buf.getvalue().encode())
