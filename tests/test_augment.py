"""DSA: parameter ranges, siamese application, differentiability, determinism."""
from __future__ import annotations

import math

import pytest
import torch

from engine.augment import DSA, FAMILIES, DSAParams
from engine.errors import InvalidArgument


pytestmark = pytest.mark.usefixtures("one_thread")


def _params_of(family: str, n: int, seed: int = 0) -> DSAParams:
    dsa = DSA(family)
    return dsa.sample(n, torch.Generator().manual_seed(seed))


def test_one_family_per_call_and_all_families_drawn() -> None:
    dsa = DSA()
    g = torch.Generator().manual_seed(0)
    seen = {dsa.sample(4, g).family for _ in range(200)}
    assert seen == set(FAMILIES)


def test_no_flip_for_digits() -> None:
    dsa = DSA(flip=False)
    g = torch.Generator().manual_seed(0)
    assert "flip" not in dsa.families
    assert all(dsa.sample(2, g).family != "flip" for _ in range(200))


def test_parameter_ranges_match_reference() -> None:
    n = 4000
    sc = _params_of("scale", n).values
    assert 1 / 1.2 - 1e-6 <= float(sc["sx"].min()) and float(sc["sx"].max()) <= 1.2 + 1e-6
    rot = _params_of("rotate", n).values["theta"]
    assert float(rot.abs().max()) <= 15 / 180 * math.pi + 1e-6 and float(rot.abs().max()) > 14 / 180 * math.pi
    col = _params_of("color", n).values
    assert -0.5 <= float(col["brightness"].min()) and float(col["brightness"].max()) <= 0.5
    assert 0 <= float(col["saturation"].min()) and float(col["saturation"].max()) <= 2
    assert 0.5 <= float(col["contrast"].min()) and float(col["contrast"].max()) <= 1.5
    flips = _params_of("flip", n).values["flip"].float().mean()
    assert 0.45 < float(flips) < 0.55


def test_crop_shifts_by_whole_pixels_within_range() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 16, 16] = 1.0
    dsa = DSA("crop")
    g = torch.Generator().manual_seed(1)
    shifts = set()
    for _ in range(300):
        y = dsa.apply(x, dsa.sample(1, g))
        assert float(y.sum()) == 1.0  # a pure translation of the single bright pixel
        r, c = torch.nonzero(y[0, 0])[0].tolist()
        shifts.add((r - 16, c - 16))
    assert max(max(abs(a), abs(b)) for a, b in shifts) == 4  # 12.5% of 32
    assert len(shifts) > 40


def test_cutout_zeroes_a_half_size_square() -> None:
    dsa = DSA("cutout")
    p = DSAParams("cutout", {"u": torch.tensor([0.5]), "v": torch.tensor([0.5])})
    y = dsa.apply(torch.ones(1, 3, 32, 32), p)
    assert int((y[0, 0] == 0).sum()) == 16 * 16


def test_colour_is_hand_checkable() -> None:
    x = torch.tensor([[[[0.0, 1.0]], [[2.0, 3.0]], [[4.0, 5.0]]]])  # 1 x 3 x 1 x 2
    p = DSAParams("color", {"brightness": torch.tensor([0.25]), "saturation": torch.tensor([1.0]),
                            "contrast": torch.tensor([1.0])})
    assert torch.allclose(DSA("color").apply(x, p), x + 0.25)
    p = DSAParams("color", {"brightness": torch.tensor([0.0]), "saturation": torch.tensor([0.0]),
                            "contrast": torch.tensor([1.0])})
    gray = x.mean(1, keepdim=True).expand_as(x)
    assert torch.allclose(DSA("color").apply(x, p), gray)


def test_siamese_same_params_on_real_and_synthetic() -> None:
    """Per-class params expanded with take(): each synthetic image gets exactly its class's transform."""
    dsa = DSA()
    g = torch.Generator().manual_seed(3)
    real = torch.randn(12, 3, 32, 32)
    real_labels = torch.tensor([0, 1, 2] * 4)
    for _ in range(30):
        params = dsa.sample(3, g)
        out_real = dsa.apply(real, params.take(real_labels))
        syn = real[[0, 1, 2, 4]]  # a smaller "synthetic" batch made of the same images
        out_syn = dsa.apply(syn, params.take(torch.tensor([0, 1, 2, 1])))
        assert torch.allclose(out_syn, out_real[[0, 1, 2, 4]], atol=1e-6), params.family


def test_single_row_broadcasts_to_any_batch_size() -> None:
    dsa = DSA()
    g = torch.Generator().manual_seed(4)
    img = torch.randn(1, 3, 32, 32)
    for _ in range(30):
        p = dsa.sample(1, g)
        a = dsa.apply(img.expand(7, -1, -1, -1).contiguous(), p)
        b = dsa.apply(img, p)
        assert torch.allclose(a, b.expand_as(a), atol=1e-6)


def test_mismatched_rows_refused() -> None:
    dsa = DSA()
    p = dsa.sample(3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        dsa.apply(torch.zeros(5, 3, 32, 32), p)


@pytest.mark.parametrize("family", FAMILIES)
def test_differentiable_and_deterministic(family: str) -> None:
    dsa = DSA(family)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    y1 = dsa(x, torch.Generator().manual_seed(9))
    y2 = dsa(x, torch.Generator().manual_seed(9))
    assert torch.equal(y1, y2)
    y1.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_unknown_family_is_a_user_error() -> None:
    with pytest.raises(InvalidArgument):
        DSA("color_blur")
