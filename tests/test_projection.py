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
def test_map_is_seeded_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    z, labels, aligned = _toy()
    rows, coords = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert len(rows) == 150 and set(np.flatnonzero(~aligned)) <= set(rows.tolist())
    assert coords.shape == (150, 2) and np.isfinite(coords).all()

    real_fit = projection._fit
    monkeypatch.setattr(projection, "_fit", lambda *a: pytest.fail("refit despite a cached map"))
    rows2, coords2 = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert np.array_equal(rows, rows2) and np.array_equal(coords, coords2)

    monkeypatch.setattr(projection, "_fit", real_fit)
    for f in cache.cache_dir("umap").glob("*.safetensors"):
        f.unlink()
    _, coords3 = projection.umap_map(z, labels, aligned, max_points=150, seed=3)
    assert np.array_equal(coords, coords3)  # same seed, same map


def test_place_puts_a_map_point_on_itself_and_new_points_among_their_neighbours() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 8)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    coords = rng.normal(size=(200, 2)).astype(np.float32)
    xy, dist = projection.place(z, coords, z[[3, 50, 199]])
    np.testing.assert_allclose(xy, coords[[3, 50, 199]], atol=1e-4)
    np.testing.assert_allclose(dist, 0, atol=1e-3)
    # halfway between two map points (and far from the rest): lands between their positions
    z2 = np.zeros((2, 8), np.float32)
    z2[0, 0], z2[1, 1] = 1, 1
    mid = (z2[0] + z2[1]) / 2
    xy, dist = projection.place(z2, np.array([[0, 0], [4, 2]], np.float32), mid[None], k=2)
    np.testing.assert_allclose(xy[0], [2, 1], atol=1e-4)
    assert dist[0] == pytest.approx(np.linalg.norm(mid - z2[0]), rel=1e-5)
    with pytest.raises(InvalidArgument, match="shapes differ"):
        projection.place(z, coords, z[:, :4])
    with pytest.raises(InvalidArgument, match="NaN"):
        projection.place(z, coords, np.full((1, 8), np.nan))


def test_warm_up_compiles_umap_and_reports_seconds() -> None:
    import sys

    from engine.projection import warm_up
    seconds = warm_up()
    assert "umap" in sys.modules and 0 < seconds < 600
