"""DREAM: the k-means pick on hand-made clusters, sample weights, how k is shared between groups, each remedy's
selection on a toy split, and a tiny run of every method (resume: tests/test_methods.py)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine import distill as D
from engine.distill import kmeans
from engine.distill.backbones import dream
from engine.nets import ConvNet, init_network

from .test_distill import TINY_DC, _random_weights, tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_DREAM = replace(TINY_DC, algorithm="dream", iterations=2, outer_loop=3, batch_real=4,
                     options=dream.DREAMOptions(idc_net_data=8, interval=2, factor=1))


def _three_clusters() -> tuple[torch.Tensor, list[int]]:
    """Three tight 2-d clusters, each with one point at its exact centre (rows 0, 5, 10)."""
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = torch.tensor([[0.0, 0.0], [0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])
    return torch.cat([c + offsets for c in centres]), [0, 5, 10]


def test_the_pick_is_the_image_nearest_each_centroid() -> None:
    x, centre_rows = _three_clusters()
    picked = kmeans.representatives(x, 3, seed=0)
    assert sorted(picked.tolist()) == centre_rows
    assert len(kmeans.representatives(x, 20, seed=0)) == len(x)  # k >= n: every row once


def test_nearest_never_takes_a_row_twice() -> None:
    x = torch.tensor([[0.0], [1.0], [5.0]])
    assert kmeans.nearest(x, torch.tensor([[0.1], [0.2]])).tolist() == [0, 1]


def test_sample_weights_move_a_centroid_toward_heavy_points() -> None:
    x = torch.tensor([[0.0], [1.0]])
    plain = kmeans.fit(x, 1, seed=0)
    heavy = kmeans.fit(x, 1, seed=0, weights=torch.tensor([1.0, 9.0]))
    assert plain.item() == pytest.approx(0.5) and heavy.item() == pytest.approx(0.9)


def test_the_gpu_path_lloyd_agrees_on_hand_made_clusters() -> None:
    x, centre_rows = _three_clusters()
    centers = kmeans._lloyd(x, 3, seed=0, weights=None)  # the torch path, run on the CPU here
    assert sorted(kmeans.nearest(x, centers).tolist()) == centre_rows
    heavy = kmeans._lloyd(torch.tensor([[0.0], [1.0]]), 1, 0, torch.tensor([1.0, 9.0]))
    assert heavy.item() == pytest.approx(0.9)


def test_k_is_shared_between_groups_without_leaving_one_out() -> None:
    assert kmeans.shares([100, 2, 0], 8) == [6, 2, 0]      # the small group gives all it has, the rest moves on
    assert kmeans.shares([100, 1], 1) == [1, 1]            # a present group always gets one (k grows)
    assert kmeans.shares([3, 3, 3], 7) == [3, 2, 2]
    assert kmeans.equal_shares([100, 2, 0], 8) == [4, 4, 0]  # balanced: equal, whatever the sizes
    assert kmeans.cycle(torch.tensor([7, 9]), 5).tolist() == [7, 9, 7, 9, 7]


@pytest.mark.parametrize("method", D.METHODS)
def test_each_remedys_pick_keeps_every_group_the_class_has(tiny, method: str) -> None:  # noqa: F811
    w = _random_weights(tiny)
    picker = dream.Picker(tiny, w, pool=0)
    net = ConvNet(TINY_DREAM.net_config(3, tiny.num_classes, tiny.images.shape[-1]))
    init_network(net, torch.Generator().manual_seed(0))
    view = dream._StartView(tiny, torch.full((3,), 0.5), torch.full((3,), 0.25), net)
    kind = dream.rule(method)
    k = 6
    picks = picker.select(view, net, [kind], k, torch.Generator().manual_seed(1))[kind]
    for c in range(tiny.num_classes):
        mine = picks[tiny.targets[picks] == c]
        assert len(mine) == k or kind == "groups", (method, c)
        if kind in ("plain", "weighted"):
            assert len(torch.unique(mine)) == k  # distinct images
        if kind in ("groups", "balanced"):
            have = set(torch.unique(tiny.attributes[tiny.targets == c]).tolist())
            assert set(tiny.attributes[mine].tolist()) == have, (method, c)  # no group left out
        if kind == "balanced":
            counts = torch.bincount(tiny.attributes[mine])
            counts = counts[counts > 0]
            assert int(counts.max() - counts.min()) <= 1


def test_weights_move_the_pick_toward_the_heavy_images(tiny) -> None:  # noqa: F811
    w = torch.where(tiny.aligned, torch.tensor(0.01), torch.tensor(1.0))  # conflicting images heavy
    picker = dream.Picker(tiny, w, pool=0)
    net = ConvNet(TINY_DREAM.net_config(3, tiny.num_classes, tiny.images.shape[-1]))
    init_network(net, torch.Generator().manual_seed(0))
    view = dream._StartView(tiny, torch.full((3,), 0.5), torch.full((3,), 0.25), net)
    picks = picker.select(view, net, ["plain", "weighted"], 4, torch.Generator().manual_seed(1))
    share = {k: float(tiny.aligned[v].float().mean()) for k, v in picks.items()}
    assert share["weighted"] < share["plain"], share


def test_a_pool_is_uniform_and_only_the_group_rules_add_every_group() -> None:
    attributes = torch.cat([torch.zeros(990, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    picker = dream.Picker.__new__(dream.Picker)
    picker.groups = [[torch.nonzero(attributes == g).flatten() for g in (0, 1)]]
    picker.pool = 100
    pool, extra = picker.candidates(0, 8, torch.Generator().manual_seed(0))
    assert len(pool) == 100 and len(set(pool.tolist())) == 100 and not torch.isin(extra, pool).any()
    assert int((attributes[pool] == 1).sum()) + len(extra) == 8  # the rare group: min(k, its size) with the extra
    assert bool((attributes[extra] == 1).all())
    assert len(picker.candidates(0, 150, torch.Generator().manual_seed(0))[0]) == 150  # a pool holds k at least
    picker.pool = 0
    pool, extra = picker.candidates(0, 8, torch.Generator().manual_seed(0))
    assert len(pool) == 1000 and len(extra) == 0


def test_every_method_runs_and_each_remedy_sees_its_own_batch(tiny) -> None:  # noqa: F811
    sets = D.distill(tiny, TINY_DREAM, D.METHODS, weights=_random_weights(tiny))
    images = {m: s.images for m, s in sets.items()}
    for a in D.METHODS:
        for b in D.METHODS:
            if a < b:
                assert not torch.equal(images[a], images[b]), (a, b)
    shares = {m: [v for _, v in s.meta["records"][dream.RECORD]] for m, s in sets.items()}
    assert all(len(v) == TINY_DREAM.iterations and all(0 <= x <= 100 for x in v) for v in shares.values())
    assert shares["balanced"][0] < shares["vanilla"][0]  # the balanced pick holds fewer aligned images


def test_the_kmeans_start_picks_representatives(tiny) -> None:  # noqa: F811
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    starts = D.backbones.get("dream").initial_sets(tiny, TINY_DREAM, mean, std, D.METHODS, _random_weights(tiny))
    assert starts["vanilla"].shape == (tiny.num_classes * TINY_DREAM.ipc, 3, *tiny.images.shape[-2:])
    real = (tiny.images.float() / 255 - 0.5) / 0.25
    for x in starts["vanilla"]:  # each start image is one of the split's images
        assert bool(((real - x).abs().flatten(1).amax(1) < 1e-5).any())
    again = D.backbones.get("dream").initial_sets(tiny, TINY_DREAM, mean, std, D.METHODS, _random_weights(tiny))
    assert torch.equal(starts["fairdd"], again["fairdd"])  # deterministic


@pytest.mark.parametrize("argv, match", [
    (["--algorithm", "idc", "--interval", "5"], "--interval is a setting of DREAM"),
    (["--algorithm", "dream", "--interval", "0"], "interval must be a positive integer"),
    (["--algorithm", "dm", "--factor", "2"], "--factor is a setting of IDC and DREAM"),
])
def test_dreams_flags_are_refused_clearly(argv, match, tmp_path, capsys, tiny_presets) -> None:
    from engine import cli
    rc = cli.main(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--preset", "quick",
                   "--methods", "vanilla", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "fix:" in err and "Traceback" not in err


def test_dream_and_cafe_are_choices_on_the_distill_form(fresh_home, monkeypatch) -> None:
    from .test_app import ok, open_page
    monkeypatch.setenv("DDAUDIT_TINY", "1")
    monkeypatch.setenv("DDAUDIT_EXAMPLE", "0")
    at = open_page("distill")
    ok(at)
    assert {"DREAM", "CAFE"} <= set(at.selectbox(key="dst_algorithm").options)
    at.selectbox(key="dst_algorithm").set_value("dream").run()
    ok(at)
    assert at.number_input(key="dst_dream_interval").value == 10
    assert at.number_input(key="dst_dream_pool").label.startswith("Clustering pool")
    at.selectbox(key="dst_algorithm").set_value("cafe").run()
    ok(at)


@pytest.mark.parametrize("algorithm", ["dream", "cafe"])
def test_the_estimate_and_the_report_command_know_the_new_backbones(algorithm: str) -> None:
    from engine import data, estimate, pipeline, report
    train = data.load_split("colored-digits", 0.05, "train", 0)
    overrides = {"interval": 5} if algorithm == "dream" else {}
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, D.METHODS, algorithm, ipc=10, preset="quick",
                                       distill_overrides=overrides))
    e = estimate.estimate(p, train, "audit", True)
    assert e.parts["distill"] > 0 and e.parts["evaluate"] > 0
    res = {"dataset": "colored-digits", "conflict_ratio": 0.05, "algorithm": algorithm, "ipc": 10, "preset": "quick",
           "seed": 0, "eval_seeds": p.seeds}
    cmd = report.command({"config": pipeline.run_key(p, "audit")}, res)
    assert f"--algorithm {algorithm}" in cmd and (("--interval 5" in cmd) == (algorithm == "dream"))


def test_the_records_are_drawn_on_the_results_page_and_in_the_report() -> None:
    from engine import figures, report
    records = {"vanilla": {dream.RECORD: [[1, 90.0], [2, 85.0]]}, "balanced": {dream.RECORD: [[1, 50.0], [2, 50.0]]}}
    points = figures.trajectory.record_points(records)
    assert points["vanilla"] == [{"iteration": 1, dream.RECORD: 90.0}, {"iteration": 2, dream.RECORD: 85.0}]
    fig = figures.trajectory.trajectory_curves({"run": points}, dream.RECORD, 95.0)
    assert [list(t.y) for t in fig.data] == [[90.0, 85.0], [50.0, 50.0]]
    html = report._records_section({"records": records, "real_aligned_share": 95.0})
    assert "What the matcher saw" in html
    assert report._records_section({}) == ""
