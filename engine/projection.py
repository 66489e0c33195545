"""2-D UMAP map of the embeddings: stratified, capped, every conflicting sample kept, seeded, cached."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from . import cache
from .errors import InvalidArgument

PROJECTION_VERSION = 2  # 2: min_dist 0.5
PLACE_NEIGHBOURS = 10  # place(): map points whose positions a new point averages
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.5, "metric": "euclidean"}  # euclidean on unit vectors ~ cosine;
# min_dist 0.5 (not 0.1): the ten class blobs of a SupCon map are far apart, and 0.5 spreads each blob 1.3x wider
# (radius / extent 0.032 -> 0.043 on colored-digits), so a blob's conflicting images stand apart from its core


def _as_numpy(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 0:
        raise InvalidArgument(f"{name} must be an array", f"pass one {name} entry per sample")
    return arr


def select_rows(labels: np.ndarray, aligned: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Sorted row ids: every conflicting row, plus aligned rows per class in proportion, up to max_points."""
    n = len(labels)
    conflict = np.flatnonzero(~aligned)
    if n <= max_points:
        return np.arange(n)
    budget = max(0, max_points - len(conflict))  # conflicting rows are never dropped, even over the cap
    rng = np.random.default_rng([seed, 7])
    pools = [np.flatnonzero(aligned & (labels == c)) for c in np.unique(labels)]
    sizes = np.array([len(p) for p in pools], dtype=float)
    quota = budget * sizes / max(sizes.sum(), 1)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: budget - take.sum()]:  # largest remainders get the rest
        take[i] += 1
    chosen = [rng.choice(p, size=min(t, len(p)), replace=False) for p, t in zip(pools, take)]
    return np.sort(np.concatenate([conflict] + chosen)).astype(np.int64)


def _fit(z: np.ndarray, seed: int):
    import umap  # slow import (numba): only when a map is really computed
    n_neighbors = min(UMAP_PARAMS["n_neighbors"], max(2, len(z) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=UMAP_PARAMS["min_dist"],
                        metric=UMAP_PARAMS["metric"], random_state=seed, n_jobs=1)  # seeded => single-threaded
    coords = reducer.fit_transform(z)
    return reducer, np.asarray(coords, dtype=np.float32)


def warm_up() -> float:
    """Import umap and fit a tiny map so numba compiles (and caches) its kernels; returns the seconds taken.

    On a fresh install the first map costs ~35 s of import and JIT compilation before any real work
    (measured on 2 cores); `make install` and the dashboard's start pay it ahead of time.
    """
    import time
    t0 = time.perf_counter()
    z = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    _fit(z, 0)
    return time.perf_counter() - t0


def umap_map(z, labels, aligned, max_points: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row_ids, coords [n, 2]) for a capped, stratified subsample that keeps all conflicting rows."""
    z_np = _as_numpy(z, "embedding").astype(np.float32, copy=False)
    labels_np = _as_numpy(labels, "label").astype(np.int64)
    aligned_np = _as_numpy(aligned, "aligned flag").astype(bool)
    if z_np.ndim != 2 or not (len(z_np) == len(labels_np) == len(aligned_np)):
        raise InvalidArgument(f"shapes differ: embeddings {z_np.shape}, labels {labels_np.shape}, "
                              f"aligned {aligned_np.shape}", "pass one label and aligned flag per embedding row")
    if not np.isfinite(z_np).all():
        raise InvalidArgument("embeddings contain NaN or infinite values", "recompute the embeddings")
    if isinstance(max_points, bool) or int(max_points) < 3:
        raise InvalidArgument(f"max_points {max_points} is too small", "give at least 3 points (default 5000)")
    if len(z_np) < 3:
        raise InvalidArgument(f"a map needs at least 3 points, got {len(z_np)}", "use a larger split")
    rows = select_rows(labels_np, aligned_np, int(max_points), int(seed))
    z_sub = np.ascontiguousarray(z_np[rows])
    key = cache.cache_key(z=hashlib.sha256(z_sub.tobytes()).hexdigest(), rows=hashlib.sha256(rows.tobytes()).hexdigest(),
                          seed=int(seed), params=UMAP_PARAMS, version=PROJECTION_VERSION)
    path = cache.cache_dir("umap") / f"umap-{key}.safetensors"
    hit = cache.load_or_none(path)
    if hit is not None and np.array_equal(hit[0]["rows"].numpy(), rows):
        return rows, hit[0]["coords"].numpy()
    _, coords = _fit(z_sub, int(seed))
    cache.save_tensors(path, {"rows": torch.from_numpy(rows), "coords": torch.from_numpy(coords)},
                       {"seed": int(seed), "params": UMAP_PARAMS, "version": PROJECTION_VERSION})
    return rows, coords


def place(z_map, coords, z_new, k: int = PLACE_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """New embeddings (e.g. synthetic images) on an existing map: (coords [m, 2], distance to the nearest map point).

    Each point goes to the inverse-distance-weighted mean of the map positions of its k nearest map
    points in embedding space (docs/DASHBOARD.md). Not UMAP's own transform: that needs the fitted
    model, which a cached map does not keep (no pickle) and refitting it costs as much as the map.
    A map point's own embedding lands on its own position (distance 0 dominates the weights).
    """
    zm = _as_numpy(z_map, "map embedding").astype(np.float64)
    zn = _as_numpy(z_new, "embedding").astype(np.float64)
    xy = _as_numpy(coords, "map coordinate").astype(np.float64)
    if zm.ndim != 2 or zn.ndim != 2 or xy.shape != (len(zm), 2) or zn.shape[1] != zm.shape[1] or len(zm) == 0:
        raise InvalidArgument(f"shapes differ: map embeddings {zm.shape}, map coordinates {xy.shape}, new "
                              f"embeddings {zn.shape}", "embed the new images with the model of the map")
    if not (np.isfinite(zm).all() and np.isfinite(zn).all()):
        raise InvalidArgument("embeddings contain NaN or infinite values", "embed the images with the same model")
    k = max(1, min(int(k), len(zm)))
    d2 = (zn ** 2).sum(1)[:, None] + (zm ** 2).sum(1)[None, :] - 2 * zn @ zm.T
    d = np.sqrt(np.clip(d2, 0, None))
    near = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(zm) else np.tile(np.arange(len(zm)), (len(zn), 1))
    dn = np.take_along_axis(d, near, axis=1)
    w = 1.0 / (dn + 1e-6)
    placed = (w[:, :, None] * xy[near]).sum(1) / w.sum(1, keepdims=True)
    return placed.astype(np.float32), dn.min(1).astype(np.float32)
