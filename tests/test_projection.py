"""UMAP map: the stratified cap keeps every conflicting sample; seeded, cached, new points placed."""
from __future__ import annotations

import numpy as np
import pytest

from engine import cache, projection
from engine.errors import InvalidArgument


def _toy(n: int = 400, conflicting: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    aligned = np.ones(n, dtype=bool)
    aligned[rng.choice(n, conflicting, replace=False)] = False
    centres = rng.normal(size=(8, 8))
    z = centres[labels + 4 * (~aligned)] + 0.1 * rng.normal(size=(n, 8))
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32), labels, aligned


def test_selection_keeps_conflicting_and_stratifies() -> None:
    _, labels, aligned = _toy(n=1000, conflicting=30)
    rows = projection.select_rows(labels, aligned, 200, seed=0)
    assert len(rows) == 200 and len(set(rows.tolist())) == 200
    assert set(np.flatnonzero(~aligned)) <= set(rows.tolist())
    per_class = np.bincount(labels[rows][aligned[rows]], minlength=4)
    quota = 170 * np.bincount(labels[aligned], minlength=4) / aligned.sum()
    assert np.all(np.abs(per_class - quota) <= 1)
    assert np.array_equal(rows, projection.select_rows(labels, aligned, 200, seed=0))
    assert not np.array_equal(rows, projection.select_rows(labels, aligned, 200, seed=1))
    assert np.array_equal(projection.select_rows(labels, aligned, 5000, 0), np.arange(1000))
    # more conflicting samples than the cap: all of them are still kept
    assert set(np.flatnonzero(~aligned)) <= set(projection.select_rows(labels, aligned, 10, 0).tolist())


def test_bad_input() -> None:
    z, labels, aligned = _toy(n=50)
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidArgument):
        projection.umap_map(bad, labels, aligned)
    with pytest.raises(InvalidArgument):
        projection.umap_map(z, labels[:-1], aligned)
    with pytest.raises(InvalidArgument):
        projection.umap_map(z, labels, aligned, max_points=2)


@pytest.mark.slow  # numba compiles UMAP on first use (~20-80 s on 2 busy cores)
def test_map_is_seeded_cached_and_places_new_points(monkeypatch: pytest.MonkeyPatch) -> None:
    z, labels, aligned = _toy()
    rows, coords, reducer = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert len(rows) == 150 and set(np.flatnonzero(~aligned)) <= set(rows.tolist())
    assert coords.shape == (150, 2) and np.isfinite(coords).all()
    placed = projection.place(reducer, z[:7])
    assert placed.shape == (7, 2) and np.isfinite(placed).all()

    real_fit = projection._fit
    monkeypatch.setattr(projection, "_fit", lambda *a: pytest.fail("refit despite a cached map"))
    rows2, coords2, lazy = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert np.array_equal(rows, rows2) and np.array_equal(coords, coords2)

    monkeypatch.setattr(projection, "_fit", real_fit)
    for f in cache.cache_dir("umap").glob("*.safetensors"):
        f.unlink()
    _, coords3, _ = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert np.array_equal(coords, coords3)  # same seed, same map
    # the cached map's reducer is refitted on demand and places points where the original did
    np.testing.assert_allclose(projection.place(lazy, z[:7]), placed, atol=1e-5)


def test_warm_up_compiles_umap_and_reports_seconds() -> None:
    import sys

    from engine.projection import warm_up
    seconds = warm_up()
    assert "umap" in sys.modules and 0 < seconds < 600
