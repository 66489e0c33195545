"""Hashes of the synthetic sets of a small fixed run of every backbone and every method: the check that a
refactor keeps results bit-identical (docs/DEVELOPING.md). Record them before a change, compare after:

    python -m bench.set_hashes --out /tmp/before.json
    ... change ...
    python -m bench.set_hashes --compare /tmp/before.json

colored-digits at 5% (the real loader), tiny presets, every method side by side, fixed random KDE weights
(the distillation alone is checked, not SupCon); DM and DC at two seeds plus a few non-default options; every
other backbone at seed 0; MTT's expert trajectories too. Each hash is the sha256 of the float32 bytes of a
set's images and labels (and of the stored tiles where a backbone keeps them). A private DDAUDIT_HOME is used
so MTT's experts are trained here, not read from a cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cases(algorithms) -> list[tuple[str, str, dict]]:
    """(name, algorithm, config overrides) of every fixed run."""
    out = []
    for algorithm in algorithms:
        seeds = (0, 1) if algorithm in ("dm", "dc") else (0,)
        out += [(f"{algorithm}/seed{s}", algorithm, {"seed": s}) for s in seeds]
    if "dm" in algorithms:
        out += [("dm/weighted-kde", "dm", {"kde_sampling": "weighted"}), ("dm/init-real", "dm", {"init": "real"}),
                ("dm/sum", "dm", {"fairdd_reduction": "sum", "cobra_warmup": 0})]
    if "dc" in algorithms:
        out += [("dc/init-balanced", "dc", {"init": "balanced", "kde_sampling": "weighted"})]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the hashes as JSON here")
    ap.add_argument("--compare", default=None, help="compare with hashes written earlier; exit 1 on a difference")
    ap.add_argument("--algorithms", default=None, help="comma-separated (default: every registered backbone)")
    args = ap.parse_args(argv)
    os.environ["DDAUDIT_HOME"] = tempfile.mkdtemp(prefix="ddaudit-hashes-")
    torch.set_num_threads(1)
    from engine import cache, data, distill
    algorithms = tuple(args.algorithms.split(",")) if args.algorithms else distill.algorithms()
    train = data.load_split("colored-digits", 0.05, "train", seed=0)
    weights = torch.rand(len(train), generator=torch.Generator().manual_seed(0)) + 0.05
    hashes: dict[str, str] = {}
    for name, algorithm, overrides in cases(algorithms):
        cfg = distill.config_for("tiny", algorithm, 2, device="cpu", **overrides)
        sets = distill.distill(train, cfg, distill.METHODS, weights=weights)
        for m, s in sets.items():
            parts = [s.images, s.labels.float()] + ([s.formation] if s.formation is not None else [])
            hashes[f"{name}/{m}"] = _digest(*parts)
            if "syn_lr" in s.meta:
                hashes[f"{name}/{m}/syn_lr"] = _digest(torch.tensor([s.meta["syn_lr"]]))
        print(f"{name}: {' '.join(hashes[f'{name}/{m}'] for m in sets)}", file=sys.stderr, flush=True)
    experts = cache.cache_dir("experts")
    for path in sorted(experts.rglob("expert_*.safetensors")):
        hashes[f"experts/{path.parent.name[:12]}/{path.stem}"] = _digest(cache.load_tensors(path)[0]["trajectory"])
    if args.out:
        Path(args.out).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.compare:
        before = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        differ = sorted(k for k in before if k in hashes and before[k] != hashes[k])
        missing = sorted(set(before) - set(hashes))
        print(f"{len(before) - len(differ) - len(missing)} of {len(before)} identical; differ: {differ or 'none'}; "
              f"missing: {missing or 'none'}; new: {sorted(set(hashes) - set(before)) or 'none'}")
        return 1 if differ or missing else 0
    print(json.dumps(hashes, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
