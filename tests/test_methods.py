"""COBRA and the group-balanced baseline: losses by hand, their relations to vanilla and FairDD, the warm
start, and the balanced sampler."""
from __future__ import annotations

import pytest
import torch

from engine import distill as D
from engine.distill import grads, methods, toolkit
from engine.distill.backbones import dm
from engine.data import BiasedSplit, load_split
from engine.nets import ConvNet, ConvNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = D.DistillConfig(algorithm="dm", ipc=2, iterations=3, batch_real=6, lr_img=1.0, width=8, checkpoint_every=2,
                       seed=0, device="cpu", group_min=2, cobra_warmup=2)


@pytest.fixture(scope="module")
def tiny() -> BiasedSplit:
    """colored-digits (real loader): 3 classes x (8 aligned + 3 conflicting) images."""
    full = load_split("colored-digits", 0.1, "train", seed=0)
    keep = torch.cat([torch.cat([r[full.aligned[r]][:8], r[~full.aligned[r]][:3]])
                      for r in (torch.nonzero(full.targets == c).flatten() for c in range(3))])
    return BiasedSplit(full.dataset, "train", full.images[keep], full.targets[keep], full.attributes[keep],
                       full.aligned[keep], full.class_names[:3], full.attribute_names, full.aligned_attribute[:3],
                       dict(full.meta))


def _batch(real, labels, groups, uniform=None) -> methods.Batch:
    uniform = torch.ones(len(labels), dtype=torch.bool) if uniform is None else uniform
    return methods.Batch(real, labels, groups, uniform, torch.zeros_like(uniform), None, None)


def test_cobra_dm_is_l1_to_the_uniform_barycenter_by_hand() -> None:
    # class 0: group 0 has rows (0,0) and (2,0), group 1 one row (0,4): means (1,0) and (0,4) -> barycenter (0.5, 2)
    # class 1: one group with rows (1,1), (3,3) -> barycenter (2, 2)
    real = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0], [3.0, 3.0]])
    labels, groups = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 0, 1, 0, 0])
    mu_syn = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    loss = methods.cobra_dm(real, _batch(real, labels, groups), mu_syn, methods.Context(2, 2))
    assert loss.item() == pytest.approx((0.5 + 1.0) + (2.0 + 2.0))  # |0.5-1| + |2-1| + |2| + |2|
    # a class's plain mean would be (2/3, 4/3): the barycenter ignores that group 0 has twice the images
    center, has = methods.barycenters(real, _batch(real, labels, groups), methods.Context(2, 2))
    assert torch.allclose(center[0], torch.tensor([0.5, 2.0])) and has.tolist() == [True, True]


def test_cobra_with_one_group_has_vanilla_target_and_shares_fairdd_minimiser() -> None:
    g = torch.Generator().manual_seed(0)
    real, labels = torch.randn(12, 5, generator=g), torch.arange(12) % 3
    one = _batch(real, labels, torch.zeros(12, dtype=torch.long))
    center, _ = methods.barycenters(real, one, methods.Context(3, 1))
    assert torch.allclose(center, methods.class_mean(real, labels, 3))  # one group: the vanilla target
    # several groups: FairDD's sum_g ||mu_g - m||^2 is minimised exactly at COBRA's barycenter (K = 0)
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2])
    b, ctx = _batch(real, labels, groups), methods.Context(3, 3)
    center, _ = methods.barycenters(real, b, ctx)
    m = center.clone().requires_grad_(True)
    methods.fairdd_dm(real, b, m, ctx).backward()
    assert m.grad.abs().max() < 1e-5
    shifted = methods.fairdd_dm(real, b, center + 0.1, ctx)
    assert shifted > methods.fairdd_dm(real, b, center, ctx)


def test_cobra_dc_matches_the_mean_of_group_gradients() -> None:
    torch.manual_seed(0)
    net = ConvNet(ConvNetConfig(channels=3, num_classes=3, image_size=32, width=4, depth=2))
    xs = torch.randn(2, 3, 32, 32, requires_grad=True)
    xr, groups = torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 0, 0, 1, 1])
    got = D.dc_class_loss(net, xs, 1, xr, "cobra", groups=groups)
    # by hand: per-group CE gradients, their plain mean, DC's distance to the synthetic gradient
    gw_syn = grads.syn_grad(net, xs, 1, torch.device("cpu"))
    parts = [grads.real_grad(net, xr[groups == k], 1, None, torch.device("cpu")) for k in (0, 1)]
    want = D.match_distance(gw_syn, [(a + b) / 2 for a, b in zip(*parts)])
    assert torch.allclose(got, want, atol=1e-6)
    # one group: exactly vanilla's DC loss
    assert torch.allclose(D.dc_class_loss(net, xs, 1, xr, "cobra", groups=torch.zeros(6, dtype=torch.long)),
                          D.dc_class_loss(net, xs, 1, xr, "vanilla"), atol=1e-6)


def test_warm_start_trains_a_copy_and_changes_only_cobra(tiny: BiasedSplit, monkeypatch) -> None:
    seen = []
    real_train = toolkit.train_on_set

    def spy(run, net, opt, data, g, epochs):
        before = [p.detach().clone() for p in net.parameters()]
        shared = [p.detach().clone() for p in run.net.parameters()]
        real_train(run, net, opt, data, g, epochs)
        seen.append((epochs, any(not torch.equal(a, p) for a, p in zip(before, net.parameters())),
                     all(torch.equal(a, p) for a, p in zip(shared, run.net.parameters()))))
    monkeypatch.setattr(dm, "train_on_set", spy)
    warm = D.distill(tiny, TINY, ("vanilla", "cobra"))
    assert seen and all(e == 2 and changed and shared_same for e, changed, shared_same in seen)
    monkeypatch.undo()
    cold = D.distill(tiny, TINY.__class__(**{**TINY.__dict__, "cobra_warmup": 0}), ("vanilla", "cobra"))
    alone = D.distill(tiny, TINY, ("vanilla",))
    assert not torch.allclose(warm["cobra"].images, cold["cobra"].images)  # the warm start matters
    assert torch.allclose(warm["vanilla"].images, alone["vanilla"].images, atol=1e-5)  # and touches only COBRA
    assert torch.allclose(cold["vanilla"].images, alone["vanilla"].images, atol=1e-5)


def test_warmup_epochs_follow_cobra_code_by_ipc() -> None:
    assert [D.DistillConfig(ipc=i).warmup_epochs() for i in (1, 10, 50, 100)] == [10, 10, 50, 100]
    assert D.DistillConfig(ipc=50, cobra_warmup=3).warmup_epochs() == 3
    with pytest.raises(D.config.InvalidArgument):
        D.config_for("quick", "dm", 10, cobra_warmup=-2)


def test_balanced_draws_every_present_group_equally(tiny: BiasedSplit) -> None:
    sampler = D.Sampler(tiny, 12, 2, True, balanced=True)
    d = sampler.draw(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), None,
                     torch.Generator().manual_seed(2))
    rows = d.balanced_take
    for c in range(3):
        mine = rows[d.labels[rows] == c]
        groups = tiny.attributes[d.index[mine]]
        present = torch.unique(tiny.attributes[tiny.targets == c])
        counts = torch.stack([(groups == g).sum() for g in present])
        assert len(mine) == 12 and int(counts.max() - counts.min()) <= 1, counts  # equal shares (+-1 remainder)
    # it reuses the shared rows: every uniform row of its class sits in the balanced draws where its group allows
    assert len(torch.unique(d.index)) == len(d.index)  # no image twice among the rows
    plain = D.Sampler(tiny, 12, 2, True).draw(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert torch.equal(plain.index, d.index[:len(plain.index)])  # vanilla's and FairDD's rows unchanged


def test_balanced_dm_is_vanilla_loss_on_the_balanced_rows() -> None:
    real = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels, groups = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])
    b = methods.Batch(real, labels, groups, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), None,
                      None, torch.tensor([0, 0, 1, 2]))  # row 0 drawn twice
    mu_syn = torch.zeros(2, 2)
    want = ((torch.tensor([5.0 / 3, 0.0])) ** 2).sum() + (torch.tensor([0.0, 2.0]) ** 2).sum()
    assert methods.balanced_dm(real, b, mu_syn, methods.Context(2, 2)).item() == pytest.approx(want.item())


@pytest.mark.parametrize("algorithm", D.algorithms())
def test_five_methods_side_by_side_resume_bit_identical(tiny: BiasedSplit, tmp_path, algorithm: str) -> None:
    from engine.errors import Cancelled
    cfg = D.config_for("tiny", algorithm, 2, iterations=4, width=8, batch_real=6, checkpoint_every=1, device="cpu",
                       cobra_warmup=1)
    w = torch.rand(len(tiny), generator=torch.Generator().manual_seed(0)) + 0.1
    whole = D.distill(tiny, cfg, D.METHODS, weights=w)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        D.distill(tiny, cfg, D.METHODS, weights=w, checkpoint_dir=tmp_path, should_stop=lambda: next(calls) >= 2)
    resumed = D.distill(tiny, cfg, D.METHODS, weights=w, checkpoint_dir=tmp_path)
    for m in D.METHODS:
        assert torch.equal(whole[m].images, resumed[m].images), m
        if whole[m].formation is not None:  # IDC, DREAM: the stored tiles too
            assert torch.equal(whole[m].formation, resumed[m].formation), m
        assert whole[m].meta.get("records") == resumed[m].meta.get("records"), m  # DREAM's picked batches
