"""The benchmarks stay runnable: their row counting and timing code at the smallest size."""
from __future__ import annotations

import pytest

from engine import data
from engine import distill as D


def test_bench_distill_counts_real_rows_of_every_method() -> None:
    from bench import bench_distill as B
    train = data.load_split("colored-digits", 0.05, "train", 0)
    cfg = D.config_for("quick", "dm", 10)
    vanilla = B._real_rows(train, cfg, ("vanilla",))
    assert vanilla == 10 * cfg.batch_real
    together = B._real_rows(train, cfg, ("vanilla", "kde", "fairdd"))
    # + FairDD top-up rows for absent groups + the KDE draws not already in the batch (some are)
    assert vanilla < together < vanilla + 10 * cfg.kde_batch + 10 * 2 * cfg.group_min
    # cobra's warm-started net embeds the uniform + top-up rows a second time; with K = 0 it shares them
    from dataclasses import replace
    assert B._real_rows(train, cfg, ("vanilla", "fairdd", "cobra")) > B._real_rows(train, cfg, ("vanilla", "fairdd"))
    assert B._real_rows(train, replace(cfg, cobra_warmup=0), ("fairdd", "cobra")) == B._real_rows(train, cfg, ("fairdd",))


def test_bench_distill_runs_end_to_end_at_one_iteration() -> None:
    from bench import bench_distill as B
    rows = B.run("colored-digits", "quick", 1, "cpu", True)
    assert {r["what"] for r in rows} >= {"vanilla", "vanilla+kde+fairdd", "+".join(D.METHODS) + " (cobra K=0)"}
    timed = [r for r in rows if not r.get("derived")]
    for r in timed:
        assert r["s_per_it"] > 0 and r["real_img_per_s"] > 0
    # the derived floor: vanilla alone + cobra alone (K = 10) - their shared batch preparation
    (floor,) = [r for r in rows if r.get("derived")]
    alone = {r["what"]: r["s_per_it"] for r in timed}
    assert 0 < floor["shared_prep_s"] < alone["vanilla"]
    assert floor["s_per_it"] == alone["vanilla"] + alone["cobra (K=10)"] - floor["shared_prep_s"]
    assert floor["ratio"] == floor["s_per_it"] / alone["vanilla"]
    five = alone["+".join(D.METHODS) + " (cobra K=10)"]
    assert floor["five_way_over_floor"] == five / floor["s_per_it"]
    separate = sum(alone[m] for m in ("vanilla", "kde", "fairdd", "cobra (K=10)", "balanced"))
    assert floor["separate_s"] == separate and floor["separate_over_five_way"] == separate / five
    engine_rows = [r for r in rows if "preset_run_s" in r]
    assert len(engine_rows) == 9  # 6 side-by-side cases + kde, fairdd, balanced alone
    for r in engine_rows:  # the whole quick run, extrapolated from the measured iteration time
        assert r["preset_run_s"] == r["s_per_it"] * D.default_config("quick", "dm").iterations


def test_starts_script_evaluates_every_method_start(monkeypatch, fresh_home) -> None:
    """bench.starts at tiny presets: one row per method with the audit's keys, shares in [0, 100]."""
    from dataclasses import replace

    from bench import starts
    from engine import attribute_probe, embed, evaluate
    monkeypatch.setitem(evaluate.PRESETS, "quick", replace(evaluate.PRESETS["quick"], epochs=2, width=8))
    monkeypatch.setitem(attribute_probe.PRESETS, "quick", replace(attribute_probe.PRESETS["quick"], steps=2, width=8,
                                                                  batch=16))
    monkeypatch.setitem(embed.PRESETS, "quick", replace(embed.PRESETS["quick"], steps=2, width=8, max_train=200,
                                                        batch_size=32, hidden_dim=16, dim=8))
    out = starts.main(["--dataset", "colored-digits", "--ipc", "2", "--eval-seeds", "1"])
    assert set(out) == set(D.METHODS)
    for row in out.values():
        assert 0 <= row["synthetic_aligned_share"] <= 100 and 0 <= row["conflicting_accuracy"] <= 100


def test_bench_layout_times_every_layout() -> None:
    from bench import bench_layout as B
    for grad in (False, True):
        rows = B.run(8, 40, grad, 1)
        assert [r["layout"].split(",")[0] for r in rows] == ["channels_last", "contiguous", "contiguous"]
        assert all(r["best_s"] > 0 and r["median_s"] >= r["best_s"] for r in rows)


def test_bench_slider_times_both_paths_and_they_agree() -> None:
    """The slider benchmark at a tiny size; and the reused log-density gives the very weights a full KDE does."""
    import torch

    from bench import bench_kde, bench_slider
    from engine import density
    out = bench_slider.main(["--n", "300", "--dim", "8", "--repeats", "1"])
    assert len(out) == 2 and all(v > 0 for v in out.values())
    z, labels = bench_kde.make_embeddings(300, 8, 3)
    log_f = density.kde_log_density(z, labels, 0.1)
    for t in (0.5, 1.0, 3.0):
        assert torch.equal(density.weights_from_log_density(log_f, labels, t), density.kde_weights(z, labels, 0.1, t))


def test_gpu_check_script_runs_every_step_in_smoke_mode(tmp_path, fresh_home) -> None:
    """bench/gpu_check on the CPU at tiny sizes: every step runs, the JSON has each one, cuda tests skip."""
    import json

    from bench import gpu_check
    out = tmp_path / "gpu.json"
    report = gpu_check.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text(encoding="utf-8"))["steps"].keys() == report["steps"].keys() == {
        "pytest_cuda", "eval_batched", "dm_paper", "idc_dc_paper", "dream_idc_paper", "cafe_dm_paper", "supcon_paper", "kde_60000x128", "audit_bg_fmnist_paper",
        "mtt_paper", "reproduce_paper_row"}
    assert all(s["ok"] for s in report["steps"].values()), {k: s.get("error") for k, s in report["steps"].items()}
    rp = report["steps"]["reproduce_paper_row"]  # smoke: C-MNIST (FG)'s rows (on their stand-in without MNIST)
    from engine import data
    here = data.dataset_status("cmnist")["available"]
    assert rp["computed"] == 1 and [r["method"] for r in rp["rows"]] == ["vanilla", "fairdd"] * (1 if here else 2)
    measured = rp["rows"] if here else rp["rows"][2:]
    assert [r["stand_in"] for r in measured] == [None if here else "colored-digits"] * 2
    assert all(isinstance(r["accuracy"], float) for r in measured) and rp["paper_audit_minutes_projected"] > 0
    assert "skipped" in report["steps"]["pytest_cuda"]["summary"] or "passed" in report["steps"]["pytest_cuda"]["summary"]
    dm = report["steps"]["dm_paper"]
    assert set(dm["s_per_it"]) == {"vanilla", "all", "all_cobra_k0", "cobra_alone", "floor_all", "reference_loop"}
    assert dm["all_vs_vanilla"] > 0
    t = dm["s_per_it"]  # the floor: vanilla + cobra alone less a shared batch that costs something
    assert t["floor_all"] < t["vanilla"] + t["cobra_alone"] and dm["floor_all_vs_vanilla"] == t["floor_all"] / t["vanilla"]
    idc = report["steps"]["idc_dc_paper"]
    assert idc["idc_vs_dc"] == idc["s_per_it_all_five"]["idc"] / idc["s_per_it_all_five"]["dc"] > 0
    ev = report["steps"]["eval_batched"]
    assert ev["rows"]["all_batched"]["mode"] == "batched-eager" and ev["rows"]["all_eager"]["trainings"] == 3
    assert ev["batched_speedup"] == ev["rows"]["all_eager"]["timed_s"] / ev["rows"]["all_batched"]["timed_s"] > 0
    mtt = report["steps"]["mtt_paper"]
    assert set(mtt["s_per_expert_epoch"]) == set(D.METHODS) and all(v > 0 for v in mtt["s_per_expert_epoch"].values())
    assert mtt["loop"]["vanilla"]["s_per_it"] > 0 and mtt["loop"]["vanilla"]["peak_mb"] > 0
    assert mtt["paper_run_all_five_minutes_projected"] > 0


def test_bench_mtt_times_experts_and_the_loop(fresh_home) -> None:
    """bench.bench_mtt at the tiny preset: an expert epoch per remedy, the loop alone and side by side, > 0."""
    from bench import bench_mtt
    report = bench_mtt.main(["--presets", "tiny", "--iters", "1"])
    (experts,) = report["experts"]
    assert set(experts["s_per_expert_epoch"]) == set(D.METHODS) and experts["distinct_objectives"] == 5
    assert [r["methods"] for r in report["loop"]] == ["vanilla", "+".join(D.METHODS)]
    assert all(r["s_per_it"] > 0 and r["peak_mb"] > 0 for r in report["loop"]) and report["audits"] is None


def test_mtt_experts_reports_each_objectives_expert_and_its_reach(fresh_home) -> None:
    """bench.mtt_experts at the tiny preset: the audit's own experts (trained once, then read back), one row
    per epoch, every expert from the same initialisation, and the student's distance to cover."""
    from bench import mtt_experts
    from engine.distill import experts as X
    argv = ["--preset", "tiny", "--methods", "vanilla,fairdd"]
    out = mtt_experts.main(argv)
    o = D.config_for("tiny", "mtt", 10).options
    assert set(out) == {"vanilla", "fairdd"}
    for row in out.values():
        assert len(row["epochs"]) == o.expert_train_epochs + 1 and len(row["moves"]) == o.max_start_epoch + 1
        assert all(x > 0 for x in row["moves"])
        assert all(0 <= r[k] <= 100 for r in row["epochs"] for k in r)
    assert out["vanilla"]["epochs"][0] == out["fairdd"]["epochs"][0]  # expert 0's init is shared (EXPERT_SEED)
    assert out["vanilla"]["epochs"][-1] != out["fairdd"]["epochs"][-1]  # ...the objectives then differ
    folders = sorted(p.name for p in X.cache.cache_dir("experts").iterdir())
    assert len(folders) == 2 and mtt_experts.main(argv) == out  # the second call reads the same experts back
    assert sorted(p.name for p in X.cache.cache_dir("experts").iterdir()) == folders


def test_fidelity_study_tables_and_svg_from_tracked_audits(tmp_path, fresh_home, capsys) -> None:
    import xml.etree.ElementTree as ET

    from bench import fidelity
    from engine import cli
    for init in ("real", "method"):
        rc = cli.main(["audit", "--conflict-ratio", "0.05", "--methods", "vanilla,fairdd", "--preset", "tiny", "--ipc",
                       "1", "--init", init, "--track-every", "2", "--track-eval", "--no-baseline",
                       "--out", str(tmp_path / init)])
        assert rc == 0
    capsys.readouterr()
    assert fidelity.main([str(tmp_path / "real"), str(tmp_path / "method"), "--svg", str(tmp_path / "f.svg")]) == 0
    out = capsys.readouterr().out
    assert "| method | start | it 0 | it 2 | it 4 | final audit |" in out
    assert out.count("| vanilla | shared random real |") == 2 and out.count("| fairdd | own (init=method) |") == 2
    svg = ET.parse(tmp_path / "f.svg").getroot()
    lines = [e for e in svg.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 2 * 2 * 2  # 2 metrics x 2 starts x 2 methods
    assert {e.get("stroke-dasharray") for e in lines} == {"", fidelity.DASH["method"]}
    assert fidelity.main([str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("pair", ["dc:idc", "idc:dream", "dm:cafe"])
def test_bench_backbones_times_a_backbone_beside_its_base(monkeypatch, pair: str) -> None:
    """bench.bench_backbones at shrunk quick presets: both times for vanilla and all five, > 0, and their ratio."""
    from bench import bench_backbones
    base, other = pair.split(":")
    for alg in (base, other):
        presets = D.BACKBONES[alg].presets
        own = {k: 8 for k in ("idc_net_data",) if k in presets["quick"].names()}
        monkeypatch.setitem(presets, "quick", presets["quick"].replace(batch_real=4, width=8, outer_loop=2,
                                                                       inner_loop=1, iterations=2, **own))
    rows = bench_backbones.main(["--datasets", "colored-digits", "--presets", "quick", "--quick-iters", "1",
                                 "--pairs", pair])
    assert [r["methods"] for r in rows] == ["vanilla", "+".join(D.METHODS)]
    for r in rows:
        assert r[base] > 0 and r[other] > 0 and r[f"{other}_over_{base}"] == r[other] / r[base]
        assert r[f"{other}_run_s"] == r[other] * D.default_config("quick", other).iterations


def test_bench_dream_splits_an_iteration_into_clustering_and_the_rest(monkeypatch) -> None:
    from bench import bench_dream
    presets = D.BACKBONES["dream"].presets
    monkeypatch.setitem(presets, "quick", presets["quick"].replace(batch_real=4, width=8, outer_loop=2, pool=32,
                                                                   idc_net_data=8))
    rows = bench_dream.main(["--iterations", "1"])
    assert [r["methods"] for r in rows] == ["vanilla", "+".join(D.METHODS)]
    for r in rows:
        assert 0 < r["clustering_s_per_it"] < r["s_per_it"] and 0 < r["clustering_share"] < 1
        assert r["dream_over_idc"] == pytest.approx(r["s_per_it"] / (r["s_per_it"] - r["clustering_s_per_it"]))


def test_soak_slope_is_least_squares_per_switch() -> None:
    from bench.bench_soak import slope
    assert slope([5.0, 7.0, 9.0, 11.0]) == 2.0
    assert slope([3.0, 1.0, 3.0, 1.0]) == -0.4
    assert slope([4.0]) == 0.0


def test_classroom_bench_reads_turns_from_the_rounds_runs_began_in() -> None:
    """bench_classroom's "served in turn": the rounds (each session's k-th run is in round k) of the runs in the
    order they began computing never go down; first come, first served of one session's three runs does."""
    from bench.bench_classroom import in_turn, pct
    assert in_turn([0, 0, 0, 1, 2]) and in_turn([0])
    assert not in_turn([0, 1, 2, 0, 0])  # A1 A2 A3 then B1 C1: arrival order, not turns
    assert pct([3.0, 1.0, 2.0], 0.5) == 2.0 and pct([], 0.5) is None

def test_bench_eval_grid_counts_flops_and_projects_each_mode() -> None:
    """bench.bench_eval at the tiny preset without compiling: a row per IPC x trainings x mode, FLOPs > 0, the
    projection to the preset's epochs, the share of the matrix product."""
    from bench import bench_eval
    from engine import evaluate
    out = bench_eval.main(["--preset", "tiny", "--ipc", "1", "--trainings", "1,2", "--modes", "eager,batched",
                           "--epochs", "2", "--no-compile"])
    assert [(r["trainings"], r["mode"]) for r in out["grid"]] == [(1, "eager"), (1, "batched-eager"), (2, "eager"),
                                                                  (2, "batched-eager")]
    epochs = evaluate.get_preset("tiny").epochs
    for r in out["grid"]:
        assert r["gflops"] > 0 and r["peak_mb"] > 0 and 0 < r["share_of_matmul"]
        assert r["s_per_training_projected"] == pytest.approx(r["timed_s"] / 2 * epochs / r["trainings"], abs=0.01)
    assert out["matmul_gflops"] > 0
