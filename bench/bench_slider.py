"""The Embeddings page's temperature slider: slider -> weights, diagnostics and the redrawn map at N points.

Before: every temperature recomputed the whole O(n^2) per-class KDE (density.kde_weights).
Now: the page caches the log-density per kernel variance and a temperature change only reweights it
(density.weights_from_log_density). Both paths are timed here on the same embeddings, with the same
figure build, so the difference is what a user feels when dragging the slider.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.bench_kde import make_embeddings


def _redraw(w: torch.Tensor, labels: torch.Tensor, aligned: torch.Tensor, coords: np.ndarray) -> None:
    from engine import density
    from engine import figures
    density.weight_diagnostics(w, labels, aligned)
    rel = figures.relative_weights(w.numpy().astype(float), labels.numpy())
    figures.embedding_scatter(coords, np.arange(len(coords)), values=rel, kind="continuous", label="KDE weight",
                              hover={"w×n": np.round(rel, 3)}).to_json()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from engine import density
    z, labels = make_embeddings(args.n, args.dim, 10)
    aligned = torch.rand(args.n, generator=torch.Generator().manual_seed(1)) > 0.05
    coords = np.random.default_rng(0).normal(size=(args.n, 2))
    s2 = density.suggest_kernel_variance(z, labels)
    log_f = density.kde_log_density(z, labels, s2)  # what the page caches per kernel variance
    out = {}
    for name, weights in (("before (KDE per temperature)", lambda t: density.kde_weights(z, labels, s2, t)),
                          ("now (cached log-density)", lambda t: density.weights_from_log_density(log_f, labels, t))):
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            _redraw(weights(0.5 + i), labels, aligned, coords)
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
        print(f"{name:<32} slider -> redrawn map at {args.n:,} points: {min(times):6.2f} s "
              f"(best of {args.repeats}; torch threads {torch.get_num_threads()})", flush=True)
    return out


if __name__ == "__main__":
    main(None)
