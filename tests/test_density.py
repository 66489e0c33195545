"""KDE maths against scikit-learn, weight normalisation, temperature, underflow, diagnostics, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KernelDensity

from engine import density
from engine.errors import InvalidArgument


def _data(n: int = 300, d: int = 8, classes: int = 3, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    z = torch.randn(n, d, generator=g, dtype=dtype) * 0.3 + labels[:, None].to(dtype)
    return z, labels


@pytest.mark.parametrize("s2", [1e-3, 0.05, 1.0, 30.0])
def test_log_density_matches_sklearn_up_to_its_constant(s2: float) -> None:
    z, labels = _data()
    got = density.kde_log_density(z, labels, s2, chunk_size=37)  # odd chunk: strips of unequal size
    d = z.shape[1]
    for c in range(3):
        x = z[labels == c].numpy()
        ref = KernelDensity(kernel="gaussian", bandwidth=math.sqrt(s2)).fit(x).score_samples(x)
        ref += 0.5 * d * math.log(2 * math.pi * s2)  # sklearn's normalising constant
        np.testing.assert_allclose(got[labels == c].numpy(), ref, rtol=0, atol=1e-9)


def test_float32_close_to_float64() -> None:
    z, labels = _data()
    lo = density.kde_log_density(z.float(), labels, 0.05)
    hi = density.kde_log_density(z, labels, 0.05)
    assert lo.dtype == torch.float32
    np.testing.assert_allclose(lo.double().numpy(), hi.numpy(), atol=1e-4)


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    z, labels = _data(n=200)
    ref = density.kde_log_density(z, labels, 0.2, chunk_size=10_000)
    monkeypatch.setattr(density, "COL_CHUNK", 13)  # column blocks too, not just row strips
    for chunk in (1, 7, 64):
        got = density.kde_log_density(z, labels, 0.2, chunk_size=chunk)
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=1e-12)


def test_exact_values_with_duplicates_at_tiny_variance() -> None:
    # 5 identical points + 5 far-apart points: densities are exactly 5/10 and 1/10 even at s2 = 1e-12
    z = torch.cat([torch.zeros(5, 4), torch.eye(4) * 10, torch.full((1, 4), -10.0)])
    labels = torch.zeros(10, dtype=torch.long)
    lf = density.kde_log_density(z, labels, 1e-12)
    np.testing.assert_allclose(lf.exp().numpy(), [0.5] * 5 + [0.1] * 5, rtol=1e-6)
    w = density.kde_weights(z, labels, 1e-12)
    assert bool((w > 0).all()) and bool(torch.isfinite(w).all())
    # inverse density: each isolated point weighs 5x a duplicated one
    np.testing.assert_allclose((w[5:] / w[:5].mean()).numpy(), 5.0, rtol=1e-5)


@pytest.mark.parametrize("s2", [1e-9, 1e-4, 1e4])
def test_no_zero_weights(s2: float) -> None:
    z, labels = _data(n=400, d=32, dtype=torch.float32)
    w = density.kde_weights(torch.nn.functional.normalize(z, dim=1), labels, s2)
    assert bool((w > 0).all()) and bool(torch.isfinite(w).all())


def test_weights_sum_to_one_per_class_and_follow_inverse_density() -> None:
    z, labels = _data()
    w = density.kde_weights(z, labels, 0.1)
    lf = density.kde_log_density(z, labels, 0.1)
    for c in range(3):
        m = labels == c
        assert float(w[m].sum()) == pytest.approx(1.0, abs=1e-5)
        # T = 1: w_i / w_j = f_j / f_i
        ratio = (w[m] / w[m][0]).double()
        np.testing.assert_allclose(ratio.numpy(), (lf[m][0] - lf[m]).exp().numpy(), rtol=1e-5)


def test_temperature_flattens_and_sharpens() -> None:
    z, labels = _data()
    ess = []
    for t in (0.25, 1.0, 4.0, 1e6):
        w = density.kde_weights(z, labels, 0.1, temperature=t)
        ess.append(density.weight_diagnostics(w, labels, torch.ones(len(w), dtype=torch.bool))["effective_sample_size"])
    assert ess[0] < ess[1] < ess[2] < ess[3]
    assert ess[3] == pytest.approx(len(z), rel=1e-4)  # T -> inf: uniform within each class
    # the ordering of weights never changes with T: lower density, higher weight
    w1 = density.kde_weights(z, labels, 0.1, temperature=1.0)
    w4 = density.kde_weights(z, labels, 0.1, temperature=4.0)
    m = labels == 0
    assert torch.equal(torch.argsort(w1[m], stable=True), torch.argsort(w4[m], stable=True))


def test_diagnostics_by_hand() -> None:
    w = torch.tensor([0.1, 0.2, 0.7, 0.5, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 1])
    aligned = torch.tensor([True, True, False, True, False])
    d = density.weight_diagnostics(w, labels, aligned)
    assert d["conflict_fraction"] == pytest.approx(2 / 5)
    assert d["conflict_weight_mass"] == pytest.approx((0.7 + 0.5) / 2.0)
    assert d["effective_sample_size"] == pytest.approx(1 / 0.54 + 2.0)  # sum of the per-class ESS
    assert d["effective_sample_size_per_class"] == pytest.approx([1 / 0.54, 2.0])
    assert d["per_class"] == [
        {"class": 0, "conflict_fraction": pytest.approx(1 / 3), "conflict_weight_mass": pytest.approx(0.7)},
        {"class": 1, "conflict_fraction": pytest.approx(0.5), "conflict_weight_mass": pytest.approx(0.5)}]


def test_sparse_points_get_the_weight() -> None:
    # a dense aligned blob and a few scattered conflicting points: inverse density lifts them far above 1%
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(990, 16, generator=g) * 0.05
    sparse = torch.randn(10, 16, generator=g)
    z = torch.nn.functional.normalize(torch.cat([dense + 1.0, sparse]), dim=1)
    labels = torch.zeros(1000, dtype=torch.long)
    aligned = torch.arange(1000) < 990
    s2 = density.suggest_kernel_variance(z, labels)
    d = density.weight_diagnostics(density.kde_weights(z, labels, s2), labels, aligned)
    assert d["conflict_fraction"] == pytest.approx(0.01)
    assert d["conflict_weight_mass"] > 0.2


def test_suggested_variance_is_the_scaled_median() -> None:
    z, labels = _data(n=120, d=5)
    s2 = density.suggest_kernel_variance(z, labels)
    meds = []
    for c in range(3):
        x = z[labels == c].numpy()
        dd = ((x[:, None] - x[None]) ** 2).sum(-1)
        meds.append(dd[np.triu_indices(len(x), 1)])
    assert s2 == pytest.approx(density.SUGGEST_SCALE * float(np.median(np.concatenate(meds))), rel=1e-9)
    assert density.suggest_kernel_variance(2 * z, labels) == pytest.approx(4 * s2, rel=1e-9)


@pytest.mark.parametrize("s2", [0, -1.0, float("nan"), float("inf"), "abc", True, None])
def test_bad_kernel_variance(s2) -> None:
    z, labels = _data(n=20)
    with pytest.raises(InvalidArgument):
        density.kde_log_density(z, labels, s2)


@pytest.mark.parametrize("t", [0, -2.0, float("nan"), float("inf"), "x"])
def test_bad_temperature(t) -> None:
    z, labels = _data(n=20)
    with pytest.raises(InvalidArgument):
        density.kde_weights(z, labels, 0.1, temperature=t)


def test_bad_embeddings_and_labels() -> None:
    z, labels = _data(n=20)
    for bad in (float("nan"), float("inf")):
        zz = z.clone()
        zz[3, 1] = bad
        with pytest.raises(InvalidArgument, match="NaN or infinite"):
            density.kde_weights(zz, labels, 0.1)
        with pytest.raises(InvalidArgument):
            density.suggest_kernel_variance(zz, labels)
    with pytest.raises(InvalidArgument):
        density.kde_log_density(z, labels[:-1], 0.1)
    with pytest.raises(InvalidArgument):
        density.kde_log_density(z[:, 0], labels, 0.1)
    with pytest.raises(InvalidArgument):
        density.kde_log_density(z, labels.float(), 0.1)
    with pytest.raises(InvalidArgument):
        density.weight_diagnostics(torch.ones(5), torch.zeros(4, dtype=torch.long), torch.ones(5, dtype=torch.bool))
    with pytest.raises(InvalidArgument):
        density.suggest_kernel_variance(torch.zeros(6, 3), torch.zeros(6, dtype=torch.long))
