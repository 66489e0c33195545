"""Evaluation: group metrics on hand-made predictions, training determinism, baselines, the probe."""
from __future__ import annotations


import pytest
import torch

from engine import attribute_probe, cache, data, results
from engine import evaluate as ev
from engine.errors import InvalidArgument


# --------------------------------------------------------------------------- metrics

def _hand_made():
    """2 classes x 3 attributes, a(0)=0, a(1)=1; cell (0, 2) is empty.

    cell (class, attr): n, correct -> (0,0): 4, 3   (0,1): 2, 1   (0,2): 0
                                      (1,0): 2, 0   (1,1): 4, 4   (1,2): 2, 1
    """
    rows = []  # (target, attribute, correct)
    for (c, a), (n, k) in {(0, 0): (4, 3), (0, 1): (2, 1), (1, 0): (2, 0), (1, 1): (4, 4), (1, 2): (2, 1)}.items():
        rows += [(c, a, i < k) for i in range(n)]
    targets = torch.tensor([r[0] for r in rows])
    attrs = torch.tensor([r[1] for r in rows])
    pred = torch.where(torch.tensor([r[2] for r in rows]), targets, 1 - targets)
    aligned = attrs == targets  # a(c) = c
    return pred, targets, attrs, aligned


def test_group_metrics_hand_made_with_empty_cell():
    m = ev.group_metrics(*_hand_made(), num_classes=2, num_attributes=3)
    assert m["accuracy"] == pytest.approx(9 / 14 * 100)
    assert m["aligned_accuracy"] == pytest.approx(7 / 8 * 100)
    assert m["conflicting_accuracy"] == pytest.approx(2 / 6 * 100)
    assert m["group_accuracy"] == [[75.0, 50.0, None], [0.0, 100.0, 50.0]]
    assert m["group_counts"] == [[4, 2, 0], [2, 4, 2]]
    assert m["worst_group_accuracy"] == 0.0
    # the empty cell is excluded: DEO(0) = 75 - 50, not 75 - 0
    assert m["deo_per_class"] == [25.0, 100.0]
    assert m["deo_m"] == 100.0
    assert m["deo_a"] == pytest.approx(62.5)


def test_worst_group_ignores_empty_cells():
    pred, targets, attrs, aligned = _hand_made()
    pred = targets.clone()  # everything right: worst group must be 100, not the empty cell's "0"
    m = ev.group_metrics(pred, targets, attrs, aligned, 2, 3)
    assert m["worst_group_accuracy"] == 100.0
    assert m["deo_m"] == 0.0 and m["deo_a"] == 0.0


def test_deo_undefined_for_a_class_with_one_cell():
    # class 0 seen with attribute 0 only: its DEO is undefined and left out of DEO_M / DEO_A
    targets = torch.tensor([0, 0, 1, 1, 1])
    attrs = torch.tensor([0, 0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 0, 1])
    m = ev.group_metrics(pred, targets, attrs, attrs == targets, 2, 2)
    assert m["deo_per_class"] == [None, 50.0]
    assert m["deo_m"] == 50.0 and m["deo_a"] == 50.0
    assert m["group_accuracy"] == [[50.0, None], [100.0, 50.0]]


def test_no_conflicting_samples_gives_none_not_zero():
    targets = torch.tensor([0, 1])
    m = ev.group_metrics(targets, targets, targets, torch.tensor([True, True]), 2, 2)
    assert m["conflicting_accuracy"] is None and m["aligned_accuracy"] == 100.0


def test_metrics_accept_numpy_and_reject_bad_input():
    pred, targets, attrs, aligned = (t.numpy() for t in _hand_made())
    assert ev.group_metrics(pred, targets, attrs, aligned, 2, 3)["accuracy"] == pytest.approx(9 / 14 * 100)
    with pytest.raises(InvalidArgument):
        ev.group_metrics(pred[:-1], targets, attrs, aligned, 2, 3)
    with pytest.raises(InvalidArgument):
        ev.group_metrics(pred, targets, attrs, aligned, 2, 2)  # attribute 2 out of range
    with pytest.raises(InvalidArgument):
        ev.group_metrics(pred[:0], targets[:0], attrs[:0], aligned[:0], 2, 3)


def test_aggregate_mean_std_and_missing_cells():
    a = ev.group_metrics(*_hand_made(), 2, 3)
    pred, targets, attrs, aligned = _hand_made()
    b = ev.group_metrics(targets, targets, attrs, aligned, 2, 3)  # all correct
    out = ev.aggregate([a, b])
    assert out["accuracy"] == pytest.approx((9 / 14 * 100 + 100) / 2)
    assert out["accuracy_std"] == pytest.approx(abs(9 / 14 * 100 - 100) / 2)
    assert out["group_accuracy"][0] == [pytest.approx(87.5), 75.0, None]
    assert out["deo_m"] == pytest.approx(50.0)
    assert len(out["per_seed"]) == 2


# --------------------------------------------------------------------------- presets, training

def test_presets_follow_the_protocol():
    p = ev.PRESETS["paper"]
    assert (p.lr, p.momentum, p.weight_decay, p.batch_size, p.epochs, p.lr_decay, p.dsa, p.seeds) == \
        (0.01, 0.9, 5e-4, 256, 1000, 0.1, True, 5)
    assert ev.get_preset("quick", epochs=3).epochs == 3
    with pytest.raises(InvalidArgument):
        ev.get_preset("slow")
    with pytest.raises(InvalidArgument):
        ev.get_preset("quick", epoch=3)
    with pytest.raises(InvalidArgument):
        ev.get_preset("quick", epochs=0)
    with pytest.raises(InvalidArgument):
        ev.get_preset("quick", lr=float("nan"))


def _colour_set(n_per_class: int = 6, seed: int = 0):
    """A set whose class is its colour: a net must learn it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    x = torch.rand(len(labels), 3, 16, 16, generator=g) * 0.2
    for c in range(3):
        x[labels == c, c] += 0.8
    return x, labels


def test_train_on_is_deterministic_on_cpu_and_learns():
    x, y = _colour_set()
    cfg = ev.get_preset("quick", epochs=25, width=8, dsa=False, lr=0.05)
    a = ev.train_on(x, y, cfg, seed=3, device="cpu")
    b = ev.train_on(x, y, cfg, seed=3, device="cpu")
    c = ev.train_on(x, y, cfg, seed=4, device="cpu")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
    assert (ev.predict(a, x) == y).float().mean() == 1.0


def test_random_subset_is_seeded_and_per_class():
    train = data.load_split("colored-digits", 0.05, "train", 0)
    x, y = ev.random_subset(train, 4, seed=1)
    assert x.dtype == torch.float32 and x.shape == (40, 3, 32, 32) and float(x.max()) <= 1.0
    assert torch.bincount(y, minlength=10).tolist() == [4] * 10
    x2, _ = ev.random_subset(train, 4, seed=1)
    x3, _ = ev.random_subset(train, 4, seed=2)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    with pytest.raises(InvalidArgument):
        ev.random_subset(train, 10_000, seed=0)
    with pytest.raises(InvalidArgument):
        ev.random_subset(train, 0, seed=0)


def test_evaluate_synthetic_with_dsa_on_real_images():
    train, test = data.load_pair("colored-digits", 0.05, 0)
    x, y = ev.random_subset(train, 5, seed=0)
    sub = _subset(test, 400)
    events = []
    out = ev.evaluate_synthetic(x, y, sub, ev.get_preset("quick", epochs=4, width=8), seeds=2, device="cpu",
                                flip=False, progress=events.append)
    for key in results.METRICS:
        assert key in out and f"{key}_std" in out
    assert out["seeds"] == [0, 1] and len(out["per_seed"]) == 2
    assert 0.0 <= out["accuracy"] <= 100.0 and len(out["group_accuracy"]) == 10
    assert events and events[-1].step == events[-1].total
    again = ev.evaluate_synthetic(x, y, sub, ev.get_preset("quick", epochs=4, width=8), seeds=[0, 1],
                                  device="cpu", flip=False, use_cache=False)  # trained again, not read back
    assert again["per_seed"] == out["per_seed"] and not again["cached"]  # CPU determinism through DSA too


def test_evaluation_cache_reads_back_only_the_same_evaluation(fresh_home, monkeypatch):
    train, test = data.load_pair("colored-digits", 0.05, 0)
    x, y = ev.random_subset(train, 3, seed=0)
    sub, cfg = _subset(test, 200), ev.get_preset("quick", epochs=2, width=8)
    first = ev.evaluate_synthetic(x, y, sub, cfg, seeds=2, device="cpu")
    files = sorted(cache.cache_dir("evaluations").glob("*.json"))
    assert not first["cached"] and len(files) == 2  # one entry per (set, seed)

    def no_training(*a, **k):
        raise AssertionError("a cached evaluation trained a net")
    with monkeypatch.context() as m:
        m.setattr(ev.eval_train, "train_jobs", no_training)
        events = []
        hit = ev.evaluate_synthetic(x.clone(), y.clone(), sub, cfg, seeds=[0, 1], device="cpu", progress=events.append)
    assert hit["cached"] and hit["per_seed"] == first["per_seed"] and hit["group_accuracy"] == first["group_accuracy"]
    assert events[-1].step == events[-1].total
    # anything that changes the result is a different entry: one pixel, the preset, the test split; a new seed
    # trains that seed only (seed 0's training is read back)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.5
    for args, kw, new in [((x2, y, sub, cfg), {"seeds": 2}, 2), ((x, y, sub, cfg), {"seeds": [0, 2]}, 1),
                          ((x, y, sub, ev.get_preset("quick", epochs=3, width=8)), {"seeds": 2}, 2),
                          ((x, y, _subset(test, 150), cfg), {"seeds": 2}, 2)]:
        before = len(list(cache.cache_dir("evaluations").glob("*.json")))
        out = ev.evaluate_synthetic(*args, device="cpu", **kw)
        assert not out["cached"] and len(list(cache.cache_dir("evaluations").glob("*.json"))) == before + new
        if kw["seeds"] == [0, 2]:
            assert out["per_seed"][0] == first["per_seed"][0] and out["per_seed"][1] != first["per_seed"][1]
    # a corrupt entry is recomputed and rewritten, never an error
    files[0].write_text("{not json", encoding="utf-8")
    again = ev.evaluate_synthetic(x, y, sub, cfg, seeds=2, device="cpu")
    assert not again["cached"] and again["per_seed"] == first["per_seed"]
    assert ev.evaluate_synthetic(x, y, sub, cfg, seeds=2, device="cpu")["cached"]


def _subset(split: data.BiasedSplit, n: int) -> data.BiasedSplit:
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n]
    return data.BiasedSplit(split.dataset, split.split, split.images[idx], split.targets[idx], split.attributes[idx],
                            split.aligned[idx], split.class_names, split.attribute_names, split.aligned_attribute,
                            split.meta)


# --------------------------------------------------------------------------- probe

def test_probe_learns_colour_not_class_on_colored_digits():
    train, test = data.load_pair("colored-digits", 0.05, 0)
    cfg = attribute_probe.get_preset("quick", steps=60, width=16)
    probe = attribute_probe.train_probe(train, cfg, seed=0, device="cpu", use_cache=False)
    # the test set holds every digit in every colour: reading the digit would score ~10% + aligned
    assert attribute_probe.probe_accuracy(probe, test) > 90.0
    mask = ~test.aligned
    pred = attribute_probe.predict_attributes(probe, test.images[mask])
    assert (pred == test.attributes[mask]).float().mean() > 0.90
    # real training images: the share the probe sees matches the labels' share
    assert attribute_probe.real_aligned_share(train) == pytest.approx(float(train.aligned.float().mean()) * 100)
    x, y = ev.random_subset(train, 20, seed=0)
    share = attribute_probe.synthetic_aligned_share(probe, x, y, train.aligned_attribute)
    assert abs(share - attribute_probe.real_aligned_share(train)) < 10.0
    # recolour every image to its class's aligned colour: the share must become ~100%
    recoloured = data.render_fg_threshold((x.amax(1) * 255).round().to(torch.uint8), y, None)
    assert attribute_probe.synthetic_aligned_share(probe, recoloured, y, train.aligned_attribute) > 90.0
    # ... and to a conflicting colour: ~0%
    other = data.render_fg_threshold((x.amax(1) * 255).round().to(torch.uint8), (y + 1) % 10, None)
    assert attribute_probe.synthetic_aligned_share(probe, other, y, train.aligned_attribute) < 10.0


def test_probe_cache_roundtrip_and_corruption(fresh_home):
    train, test = data.load_pair("colored-digits", 0.05, 0)
    cfg = attribute_probe.get_preset("quick", steps=2, width=8, batch=16)
    a = attribute_probe.train_probe(train, cfg, seed=0, device="cpu")
    files = list(cache.cache_dir("probes").glob("*.safetensors"))
    assert len(files) == 1
    b = attribute_probe.train_probe(train, cfg, seed=0, device="cpu")
    assert torch.equal(attribute_probe.predict_attributes(a, test.images), attribute_probe.predict_attributes(b, test.images))
    attribute_probe.train_probe(train, cfg, seed=1, device="cpu")  # a different seed is a different file
    assert len(list(cache.cache_dir("probes").glob("*.safetensors"))) == 2
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated: rebuilt, same result (CPU determinism)
    c = attribute_probe.train_probe(train, cfg, seed=0, device="cpu")
    assert torch.equal(attribute_probe.predict_attributes(a, test.images), attribute_probe.predict_attributes(c, test.images))


def test_aligned_share_rejects_mismatch():
    train = data.load_split("colored-digits", 0.05, "train", 0)
    probe = attribute_probe.Probe(ev.ConvNet(attribute_probe._probe_config(train, attribute_probe.get_preset("quick", width=8))), 10, {})
    with pytest.raises(InvalidArgument):
        attribute_probe.synthetic_aligned_share(probe, torch.zeros(3, 3, 32, 32), torch.zeros(2, dtype=torch.long), range(10))
