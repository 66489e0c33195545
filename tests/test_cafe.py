"""CAFE: the layers it aligns, each remedy's loss by hand on small features, the step-size schedule, and a tiny
run of every method (resume: tests/test_methods.py)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from engine import distill as D
from engine.distill import methods
from engine.distill.backbones import cafe
from engine.nets import ConvNet, init_network

from .test_distill import TINY_DC, _random_weights, tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_CAFE = replace(TINY_DC, algorithm="cafe", iterations=3)


def test_layers_are_each_blocks_activation_then_the_embedding() -> None:
    net = ConvNet(TINY_CAFE.net_config(3, 4, 32))
    init_network(net, torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, 32, 32)
    feats = cafe.layers(net, x)
    assert len(feats) == TINY_CAFE.depth + 1 and cafe.layer_weights(3) == [0.1, 0.1, 1.0, 1.0]
    assert torch.allclose(feats[-1], net.embed(x), atol=1e-6)
    h = net.features[2](net.features[1](net.features[0](x)))  # block 1: conv, norm, ReLU
    assert torch.allclose(feats[0], h.flatten(1), atol=1e-6)


def _batch() -> tuple[list[torch.Tensor], methods.Batch, list[torch.Tensor]]:
    """Two classes, two groups, two layers of 2-d features; row 3 is the only group-1 row of class 0."""
    torch.manual_seed(0)
    real = [torch.randn(5, 2), torch.randn(5, 2)]
    labels, groups = torch.tensor([0, 0, 1, 0, 1]), torch.tensor([0, 0, 0, 1, 1])
    b = methods.Batch(real[0], labels, groups, torch.tensor([True, True, True, False, True]),
                      torch.zeros(5, dtype=torch.bool), None, None, torch.tensor([0, 3, 2, 4]))
    syn = [torch.randn(2, 2), torch.randn(2, 2)]
    return real, b, syn


def _mse(a: torch.Tensor, s: torch.Tensor) -> float:
    return float(((a - s) ** 2).mean(1).sum())


def test_vanilla_cafe_by_hand() -> None:
    real, b, syn = _batch()
    w = [0.5, 2.0]
    rows = [torch.tensor([0, 1]), torch.tensor([2, 4])]  # the uniform rows of each class
    mean = lambda x: torch.stack([x[r].mean(0) for r in rows])  # noqa: E731
    want = sum(lw * _mse(mean(r), s) for lw, r, s in zip(w, real, syn))
    want += _mse(mean(real[-1]), syn[-1])
    logits = real[-1][[0, 1, 2, 4]] @ syn[-1].T
    ce = F.cross_entropy(logits, torch.tensor([0, 0, 1, 1]), reduction="none")
    want += methods.CAFE_CE * float((ce[:2].mean() + ce[2:].mean()) / 2)
    got = methods.vanilla_cafe(real, b, syn, w, methods.Context(2, 2))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_cobra_cafe_is_the_barycenter_mse_without_discrimination() -> None:
    real, b, syn = _batch()
    w = [0.5, 2.0]
    # class 0: groups 0 (rows 0, 1) and 1 (row 3) weigh the same; class 1: groups 0 (row 2) and 1 (row 4)
    bary = lambda x: torch.stack([(x[[0, 1]].mean(0) + x[3]) / 2, (x[2] + x[4]) / 2])  # noqa: E731
    want = sum(lw * _mse(bary(r), s) for lw, r, s in zip(w, real, syn))
    got = methods.cobra_cafe(real, b, syn, w, methods.Context(2, 2))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_fairdd_cafe_averages_each_groups_distance() -> None:
    real, b, syn = _batch()
    w = [0.5, 2.0]
    groups = {0: [[0, 1], [3]], 1: [[2], [4]]}
    want = 0.0
    for lw, r, s in zip(w, real, syn):
        for c, parts in groups.items():
            want += lw * sum(float(((r[p].mean(0) - s[c]) ** 2).mean()) for p in parts) / len(parts)
    # plus the discrimination term with every group weighing the same
    want += methods.cafe_target(real, torch.arange(5), torch.tensor([0.25, 0.25, 0.5, 0.5, 0.5]), b, syn, [],
                                methods.Context(2, 2)).item()
    got = methods.fairdd_cafe(real, b, syn, w, methods.Context(2, 2))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_balanced_cafe_is_vanilla_on_the_balanced_draws() -> None:
    real, b, syn = _batch()
    w = [1.0, 1.0]
    plain = replace(b, uniform=torch.tensor([True, False, True, True, True]))  # rows 0, 3 | 2, 4 as the draws
    got = methods.balanced_cafe(real, b, syn, w, methods.Context(2, 2))
    assert got.item() == pytest.approx(methods.vanilla_cafe(real, plain, syn, w, methods.Context(2, 2)).item(), rel=1e-5)


def test_the_step_size_halves_at_60_80_and_90_percent() -> None:
    cfg = replace(TINY_CAFE, iterations=100, lr_img=0.8)
    assert [cafe.step_size(cfg, i) for i in (0, 59, 60, 80, 90, 99)] == [0.8, 0.8, 0.4, 0.2, 0.1, 0.1]


def test_every_method_runs_and_the_remedies_differ(tiny) -> None:  # noqa: F811
    sets = D.distill(tiny, TINY_CAFE, D.METHODS, weights=_random_weights(tiny))
    for a in D.METHODS:
        for other in D.METHODS:
            if a < other:
                assert not torch.equal(sets[a].images, sets[other].images), (a, other)
    assert all(len(s.loss_history) == TINY_CAFE.iterations for s in sets.values())
