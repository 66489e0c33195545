"""Trajectories: track points, identical sets with tracking, snapshots, resume, the stored-run path, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import attribute_probe, audit, distill as D, evaluate, pipeline, trajectory
from engine.data import load_split
from engine.distill.backbones import idc
from engine.errors import Cancelled, InvalidArgument
from engine.images import to_float, to_uint8
from engine.results import ACCURACIES

from .test_distill import TINY, TINY_DC, _random_weights, tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracker(tiny) -> trajectory.Tracker:  # noqa: F811
    probe = attribute_probe.train_probe(tiny, "tiny", seed=0, use_cache=False)
    return trajectory.Tracker(2, probe, tiny.aligned_attribute, attribute_probe.real_aligned_share(tiny))


def test_track_points_always_hold_start_and_end() -> None:
    assert D.resolve_every(100, None) == 10
    assert D.track_points(100, 10) == list(range(0, 101, 10))
    assert D.track_points(7, 3) == [0, 3, 6, 7]
    assert D.track_points(5, 0) == []
    assert D.track_points(1, D.resolve_every(1, None)) == [0, 1]
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidArgument, match="track interval"):
            D.resolve_every(100, bad)
    with pytest.raises(InvalidArgument, match="limit"):
        D.resolve_every(20_000, 1)


@pytest.mark.parametrize("cfg", [replace(TINY, iterations=5, init="real"), replace(TINY_DC, iterations=3),
                                 replace(TINY_DC, algorithm="idc", iterations=3, options=idc.IDCOptions(idc_net_data=8)),
                                 replace(D.default_config("tiny", "mtt"), ipc=2, iterations=3, width=8)],
                         ids=["dm", "dc", "idc", "mtt"])
def test_tracking_leaves_the_sets_unchanged(tiny, tracker, cfg) -> None:  # noqa: F811
    w = _random_weights(tiny)
    plain = D.distill(tiny, cfg, D.METHODS, weights=w)
    tracked = D.distill(tiny, cfg, D.METHODS, weights=w, tracker=tracker)
    points = D.track_points(cfg.iterations, 2)
    for m in D.METHODS:
        assert torch.equal(plain[m].images, tracked[m].images), m
        traj = tracked[m].trajectory
        assert [p["iteration"] for p in traj] == points
        assert traj[0]["loss"] is None and all(isinstance(p["loss"], float) for p in traj[1:])
        assert all(0 <= p["aligned_share"] <= 100 for p in traj)
        assert tracked[m].snapshots.shape == (len(points), *tracked[m].images.shape)
        assert tracked[m].snapshots.dtype == torch.uint8
        assert torch.equal(tracked[m].snapshots[-1], tracked[m].to_uint8())  # the last point is the result
        assert plain[m].trajectory == [] and plain[m].snapshots is None
    # the start snapshot is the start the loop was given (init="real": one shared real start)
    starts = D.initial_sets(tiny, cfg, tracked["vanilla"].mean, tracked["vanilla"].std, D.METHODS, w)
    start = D.BACKBONES[cfg.algorithm].form(cfg, 32).decode(starts["vanilla"])  # IDC: the stored tiles, decoded
    assert torch.equal(tracked["vanilla"].snapshots[0], to_uint8(D.to_unit(start, tracked["vanilla"].mean,
                                                                           tracked["vanilla"].std)))


def test_point_aligned_share_is_the_probe_share_of_the_set(tiny, tracker) -> None:  # noqa: F811
    s = D.distill(tiny, replace(TINY, iterations=4), ["vanilla", "fairdd"], tracker=tracker)["fairdd"]
    direct = attribute_probe.synthetic_aligned_share(tracker.probe, s.unit(), s.labels, tiny.aligned_attribute)
    assert s.trajectory[-1]["aligned_share"] == pytest.approx(direct)


def test_loss_at_a_point_is_the_mean_since_the_previous_point(tiny, tracker) -> None:  # noqa: F811
    cfg = replace(TINY, iterations=4)  # log_every 1: the history holds every iteration's loss
    s = D.distill(tiny, cfg, ["vanilla"], tracker=tracker)["vanilla"]
    losses = dict(s.loss_history)
    assert s.trajectory[1]["loss"] == pytest.approx((losses[1] + losses[2]) / 2)
    assert s.trajectory[2]["loss"] == pytest.approx((losses[3] + losses[4]) / 2)


def test_resumed_trajectory_equals_uninterrupted(tiny, tracker, tmp_path: Path) -> None:  # noqa: F811
    cfg = replace(TINY, iterations=5, checkpoint_every=1)
    full = D.distill(tiny, cfg, ["vanilla", "cobra"], tracker=tracker)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        D.distill(tiny, cfg, ["vanilla", "cobra"], tracker=tracker, should_stop=stop, checkpoint_dir=tmp_path)
    resumed = D.distill(tiny, cfg, ["vanilla", "cobra"], tracker=tracker, checkpoint_dir=tmp_path)
    for m in ("vanilla", "cobra"):
        assert resumed[m].trajectory == full[m].trajectory
        assert torch.equal(resumed[m].snapshots, full[m].snapshots)
    # a checkpoint written with tracking belongs to a tracked run
    with pytest.raises(InvalidArgument, match="another run"):
        D.distill(tiny, cfg, ["vanilla", "cobra"], checkpoint_dir=tmp_path)


def test_track_eval_records_short_evaluation_accuracies(tiny, tracker) -> None:  # noqa: F811
    test = load_split("colored-digits", 0.1, "test", seed=0)
    with_eval = replace(tracker, test=test, eval_cfg=evaluate.get_preset("tiny"))
    s = D.distill(tiny, replace(TINY, iterations=2), ["vanilla"], tracker=with_eval)["vanilla"]
    for p in s.trajectory:
        for k in ACCURACIES:
            assert 0 <= p[k] <= 100
    assert with_eval.key() != tracker.key()
    assert trajectory.short_eval(evaluate.get_preset("quick")).epochs == 100


def test_saved_set_keeps_its_trajectory(tiny, tracker, tmp_path: Path) -> None:  # noqa: F811
    sets = D.distill(tiny, replace(TINY, iterations=3), ["vanilla"], tracker=tracker)
    D.save_synthetic(sets, tmp_path)
    back = D.load_synthetic(tmp_path / "vanilla")
    assert back.trajectory == sets["vanilla"].trajectory
    assert torch.equal(back.snapshots, sets["vanilla"].snapshots)
    assert "trajectory" not in back.meta


def test_plan_resolves_and_keys_tracking() -> None:
    base = pipeline.Request("colored-digits", 0.05, methods=("vanilla",), preset="tiny", ipc=1)
    p = pipeline.plan(base)
    assert p.request.track_every == 1  # tiny: 4 iterations, about 10 points -> every iteration
    assert pipeline.run_key(p, "audit") == pipeline.run_key(pipeline.plan(replace(base, track_every=1)), "audit")
    keys = {json.dumps(pipeline.run_key(pipeline.plan(replace(base, **kw)), "audit"), sort_keys=True)
            for kw in ({}, {"track_every": 2}, {"track_every": 0}, {"track_eval": True})}
    assert len(keys) == 4
    off = pipeline.run_key(pipeline.plan(replace(base, track_every=0)), "distill")
    assert "evaluate" not in off and off["track"] == {"every": 0, "eval": False}
    with pytest.raises(InvalidArgument, match="--track-eval needs tracking"):
        pipeline.plan(replace(base, track_every=0, track_eval=True))


def test_audit_results_carry_the_trajectory(tmp_path: Path) -> None:
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, methods=("vanilla", "fairdd"), preset="tiny", ipc=1,
                                       track_every=2, track_eval=True, baseline=False))
    res = audit.run_audit(p, tmp_path)
    assert res["track"] == {"every": 2, "eval": True}
    for m in ("vanilla", "fairdd"):
        traj = res["trajectory"][m]
        assert [x["iteration"] for x in traj] == [0, 2, 4]
        # the end point's share is the audit's own measure of the final set
        assert traj[-1]["aligned_share"] == pytest.approx(res["methods"][m]["synthetic_aligned_share"])
        assert set(ACCURACIES) <= set(traj[1])
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["trajectory"] == res["trajectory"]
    assert (tmp_path / "vanilla" / D.sets.TRAJECTORY_FILE).is_file()


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "DDAUDIT_HOME": str(home), "DDAUDIT_DEVICE": "cpu",
                               "PYTHONPATH": str(ROOT)}, timeout=300)


def test_cli_track_flags(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _cli("distill", "--conflict-ratio", "0.05", "--methods", "vanilla", "--preset", "tiny", "--ipc", "1",
             "--track-every", "3", "--out", str(out), "--json", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    metrics = json.loads((tmp_path / "home" / "runs" / run_id / "metrics.json").read_text(encoding="utf-8"))
    assert [x["iteration"] for x in metrics["trajectory"]["vanilla"]] == [0, 3, 4]
    bad = _cli("distill", "--conflict-ratio", "0.05", "--preset", "tiny", "--track-every", "often", "--out",
               str(out), home=tmp_path / "home")
    assert bad.returncode == 2 and "--track-every 'often' is not an integer" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow  # a real SupCon encoder and a real UMAP map
def test_real_images_placed_on_the_map_land_on_their_own_points(tiny, tracker) -> None:  # noqa: F811
    from engine import embed, projection
    train = load_split("colored-digits", 0.05, "train", seed=0)
    encoder = embed.get_encoder(train, "tiny", seed=0)
    z = embed.embed_images(encoder, train.images)
    rows, coords = projection.umap_map(z, train.targets, train.aligned, max_points=400, seed=0)
    picked = rows[[0, 57, 123, 399]]
    mean, std = D.channel_stats(train.images)
    real = D.SyntheticSet("real", to_float(train.images[picked], mean, std), train.targets[picked], mean, std, 0.0, 0.0)
    placed = trajectory.map_positions(encoder, z[rows], coords, {"real": real})["real"]
    spread = float(np.linalg.norm(coords - coords.mean(0), axis=1).mean())
    own = coords[[0, 57, 123, 399]]
    assert np.linalg.norm(placed["final"] - own, axis=1).max() < 0.01 * spread
    assert placed["distance"].max() < 1e-3 and placed["path"] is None
    # a distilled set with snapshots: one path point per track point, per image
    s = D.distill(train, replace(TINY, iterations=2, ipc=1), ["vanilla"], tracker=replace(
        tracker, probe=attribute_probe.train_probe(train, "tiny"), aligned_attribute=train.aligned_attribute))["vanilla"]
    on_map = trajectory.map_positions(encoder, z[rows], coords, {"vanilla": s})["vanilla"]
    assert on_map["path"].shape == (2, 10, 2) and on_map["iterations"] == [0, 2]
    np.testing.assert_allclose(on_map["path"][-1], on_map["final"], atol=0.05 * spread)
