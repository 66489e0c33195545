"""The time estimate shown before Start (engine/estimate.py): its arithmetic on hand-made costs, and what a
cache or a stored run removes from it."""
from __future__ import annotations

from dataclasses import replace

import pytest

from engine import distill, estimate, pipeline

COSTS = {"pixels": 3072, "eval_image_epoch": 0.001, "supcon_step": 0.1, "probe_step": 0.05,
         "distill": {a: {"vanilla": 0.1, "kde": 0.2, "fairdd": 0.3, "cobra": 1.0, "balanced": 0.3,
                         "vanilla+kde+fairdd+cobra+balanced": 1.5} for a in distill.algorithms()}}


def plan(**kw) -> pipeline.Plan:
    base = dict(dataset="colored-digits", conflict_ratio=0.05, methods=("vanilla", "kde", "fairdd"), ipc=5,
                eval_seeds=1, baseline=False)
    return pipeline.plan(pipeline.Request(**{**base, **kw}))


def test_distill_seconds_combine_methods_with_the_measured_overlap() -> None:
    # overlap = (1.5 - 1.0) / (1.9 - 1.0) = 5/9 of the other methods' alone cost
    p = plan()
    per_it = 0.3 + (0.1 + 0.2) * 5 / 9
    assert estimate.distill_seconds(p, 3072, COSTS) == pytest.approx(p.distill_cfg.iterations * per_it)
    alone = plan(methods=("cobra",))
    assert estimate.distill_seconds(alone, 3072, COSTS) == pytest.approx(alone.distill_cfg.iterations * 1.0)
    # every method: the five-method measurement itself
    five = plan(methods=distill.METHODS)
    assert estimate.distill_seconds(five, 3072, COSTS) == pytest.approx(five.distill_cfg.iterations * 1.5)
    # a quarter of the pixels: a quarter of the time
    assert estimate.distill_seconds(p, 768, COSTS) == pytest.approx(p.distill_cfg.iterations * per_it / 4)


def test_a_backbone_without_a_measured_row_is_refused_with_the_command_that_measures_it() -> None:
    from engine.errors import InvalidArgument
    costs = {**COSTS, "distill": {k: v for k, v in COSTS["distill"].items() if k != "cafe"}}
    with pytest.raises(InvalidArgument, match="no measured cost for CAFE") as err:
        estimate.distill_seconds(plan(algorithm="cafe"), 3072, costs)
    assert "bench.bench_costs --only cafe" in err.value.fix


def test_evaluate_seconds_count_sets_trainings_epochs_and_images() -> None:
    from engine.data import load_split
    train = load_split("colored-digits", 0.05, "train", 0)
    p = plan(eval_seeds=3)
    epochs = p.eval_cfg.epochs
    assert estimate.evaluate_seconds(p, train, baseline=True, costs=COSTS) == pytest.approx(
        4 * 3 * epochs * 50 * 0.001)


def test_the_paper_presets_whole_set_evaluation_is_counted(monkeypatch) -> None:
    """The paper preset also trains on the whole biased training set ("full"): trainings x epochs x images."""
    from engine.data import load_split
    monkeypatch.setattr(estimate, "load_costs", lambda: COSTS)
    train = load_split("colored-digits", 0.05, "train", 0)
    p = plan(preset="paper", eval_seeds=2)
    e = p.eval_cfg
    assert e.full_set_epochs > 0
    full = 2 * e.full_set_epochs * len(train) * 0.001 * (e.width / 32) ** 2
    assert estimate.full_set_seconds(p, train, COSTS) == pytest.approx(full)
    assert estimate.estimate(p, train, "audit", baseline=False).parts["evaluate full"] == pytest.approx(full, abs=0.1)
    assert "evaluate full" not in estimate.estimate(plan(preset="quick"), train, "audit", baseline=False).parts

def test_evaluate_seconds_price_the_mode_the_cpu_will_run_and_its_compile(monkeypatch, fresh_home) -> None:
    """Per image-epoch of the chosen mode (DDAUDIT_EVAL_MODE forces one here), plus the compile when the mode
    compiles: a cold one while no kernel is on disk, a warm one after."""
    from engine import cache, eval_train
    from engine.data import load_split
    train = load_split("colored-digits", 0.05, "train", 0)
    costs = {**COSTS, "eval_image_epoch": {"eager": 0.002, "fused": 0.001, "batched": 0.0005},
             "eval_compile_cold": 30.0, "eval_compile_warm": 4.0}
    p = plan(eval_seeds=3)
    work = 4 * 3 * p.eval_cfg.epochs * 50
    monkeypatch.setitem(eval_train._compile_state, "ok", True)
    monkeypatch.setenv(eval_train.MODE_ENV, "eager")
    assert estimate.evaluate_seconds(p, train, True, costs) == pytest.approx(work * 0.002)
    monkeypatch.setenv(eval_train.MODE_ENV, "fused")
    assert estimate.evaluate_seconds(p, train, True, costs) == pytest.approx(work * 0.001 + 30.0)
    (cache.cache_dir("kernels") / "compiled").mkdir()
    assert estimate.evaluate_seconds(p, train, True, costs) == pytest.approx(work * 0.001 + 4.0)
    monkeypatch.setenv(eval_train.MODE_ENV, "batched")
    assert estimate.evaluate_seconds(p, train, True, costs) == pytest.approx(work * 0.0005 + 4.0)


def test_estimate_drops_cached_stages_and_says_when_a_run_is_stored(monkeypatch, fresh_home) -> None:
    from engine import embed, attribute_probe, stored
    from engine.data import load_split
    monkeypatch.setattr(estimate, "load_costs", lambda: COSTS)
    train = load_split("colored-digits", 0.05, "train", 0)
    p = plan(preset="tiny")
    cold = estimate.estimate(p, train, "audit", baseline=False)
    assert {"distill", "SupCon", "probe", "evaluate"} <= set(cold.parts) and not cold.stored
    assert cold.seconds == pytest.approx(estimate.OVERHEAD_S + sum(cold.parts.values()), abs=0.3)
    assert cold.text().startswith("about ") and "2 CPU cores" in cold.text()
    stored.audit_stored(p)  # computes and caches the SupCon model, the probe and the run itself
    assert embed._paths(train, p.embed, 0)[1].exists() and attribute_probe._probe_path(train, p.probe_cfg, 0).exists()
    again = estimate.estimate(p, train, "audit", baseline=False)
    assert again.stored and again.text() == "already stored: shown at once"
    other = estimate.estimate(plan(preset="tiny", ipc=3), train, "audit", baseline=False)
    assert "SupCon" not in other.parts and "probe" not in other.parts and not other.stored


def test_duration_words() -> None:
    assert [estimate.duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]


def test_measured_costs_file_is_complete() -> None:
    c = estimate.load_costs()
    assert c["command"].startswith("python -m bench.bench_costs")
    for algorithm in distill.algorithms():
        assert set(c["distill"][algorithm]) >= set(distill.METHODS) | {"+".join(distill.METHODS)}
    assert set(c["eval_image_epoch"]) == {"eager", "fused", "batched"} and min(c["eval_image_epoch"].values()) > 0
    assert c["eval_compile_cold"] >= c["eval_compile_warm"] >= 0
    assert c["supcon_step"] > 0 and c["probe_step"] > 0


def test_mtt_adds_its_missing_experts_and_scales_with_the_unroll(fresh_home) -> None:
    """MTT: experts not on disk are counted (kde's always: its weights come later), those on disk are not;
    the loop's time scales with student steps x images per step."""
    from engine import data
    from engine.distill import experts
    train = data.load_split("colored-digits", 0.05, "train", 0)
    costs = {**COSTS, "ipc": 10, "expert_image_epoch": 1e-4}
    p = plan(algorithm="mtt", preset="tiny", methods=("vanilla", "kde"))
    cfg, o = p.distill_cfg, p.distill_cfg.options
    quick = distill.default_config("quick", "mtt")
    one_set = o.num_experts * o.expert_train_epochs * len(train) * 1e-4 * cfg.width / quick.width

    def experts_seconds() -> float:
        return distill.BACKBONES["mtt"].extra_seconds(cfg, p.methods, train, 3072, costs)["experts"]

    assert experts_seconds() == pytest.approx(2 * one_set)
    distill.distill(train, replace(cfg, iterations=1), ("vanilla",))   # vanilla's experts now on disk
    assert experts.objectives_to_train(train, cfg, ("vanilla", "kde")) == 1
    assert experts_seconds() == pytest.approx(one_set)
    base = estimate.distill_seconds(p, 3072, costs)
    twice = plan(algorithm="mtt", preset="tiny", methods=("vanilla", "kde"),
                 distill_overrides={"syn_steps": 2 * o.syn_steps})
    assert estimate.distill_seconds(twice, 3072, costs) == pytest.approx(2 * base)
