"""The backbone registry: a toy backbone defined only here registers and runs through distill, audit, its own
CLI flag (refused under the others), the Distill form, the estimate and the report, with no other file
changed; and the registry's own rules (names, presets, flags, the run key's shape)."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
import torch

from engine import cli, distill as D, estimate, pipeline, report
from engine.distill import Backbone, DistillConfig, Option, backbones
from engine.distill.methods import REGISTRY
from engine.distill.toolkit import Gens, Run
from engine.errors import InvalidArgument

from .test_app import ok, open_page, wait_jobs
from .test_distill import _random_weights, tiny  # noqa: F401  (fixture)


@dataclass(frozen=True)
class ToyOptions:
    """The toy's own setting: matching steps per iteration."""

    toy_steps: int = 1


class Toy(Backbone):
    """Distribution matching in pixel space: each method's registry DM target on the raw (augmented) pixels,
    toy_steps image updates per iteration. No network at all: the simplest backbone there is."""

    name = "toy"
    label = "TOY"
    summary = "pixel-space mean matching (a test's backbone)"
    options = (Option("toy_steps", "matching steps per iteration", flag="toy-steps", low=1, high=10,
                      label="Toy steps per iteration"),)
    options_type = ToyOptions
    cost_key = "dm"  # no costs of its own measured: DM's row stands in
    presets = {name: replace(D.default_config(name, "dm"), algorithm="toy", options=ToyOptions())
               for name in ("tiny", "quick", "paper")}

    def step(self, run: Run, state, gens: Gens) -> dict[str, torch.Tensor]:
        params = run.class_params(gens)
        b = run.real_batch(gens, params)
        real = b.x.flatten(1)
        losses = {}
        for _ in range(run.cfg.options.toy_steps):
            for m in run.methods:
                syn = state.syn[m] if params is None else run.dsa.apply(state.syn[m], params.take(run.syn_labels))
                mu = syn.flatten(1).view(run.ctx.num_classes, -1, real.shape[1]).mean(1)
                losses[m] = REGISTRY[m].dm_loss(real, b, mu, run.ctx)
                state.opts[m].zero_grad(set_to_none=True)
                losses[m].backward()
                state.opts[m].step()
        return {m: v.detach() for m, v in losses.items()}


@pytest.fixture
def toy(monkeypatch):
    """The toy backbone registered for one test (and gone after it)."""
    backbone = backbones.register(Toy())
    yield backbone
    backbones.unregister("toy")


TINY_AUDIT = ["--dataset", "colored-digits", "--conflict-ratio", "0.05", "--preset", "tiny", "--ipc", "2",
              "--methods", "vanilla,fairdd"]


def test_a_toy_backbone_distills_every_method(toy, tiny) -> None:  # noqa: F811
    assert "toy" in D.algorithms()
    cfg = D.config_for("tiny", "toy", 2, iterations=3)
    w = _random_weights(tiny)
    starts = D.initial_sets(tiny, cfg, *D.channel_stats(tiny.images), D.METHODS, w)
    sets = D.distill(tiny, cfg, D.METHODS, weights=w)
    for m, s in sets.items():
        assert s.meta["algorithm"] == "toy" and s.meta["config"]["toy_steps"] == 1
        assert not torch.equal(s.images, starts[m]), f"{m}: the toy's step never reached the images"
    more = D.distill(tiny, cfg.replace(toy_steps=3), ("vanilla",))
    assert not torch.equal(more["vanilla"].images, sets["vanilla"].images)  # its own option matters


def test_a_toy_backbone_audits_through_the_cli_with_its_own_flag(toy, fresh_home, tmp_path, capsys) -> None:
    rc = cli.main(["audit", *TINY_AUDIT, "--algorithm", "toy", "--toy-steps", "2", "--out", str(tmp_path / "a"),
                   "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["algorithm"] == "toy" and set(res["methods"]) >= {"vanilla", "fairdd"}
    key = json.loads((tmp_path / "a" / "config.json").read_text(encoding="utf-8"))  # the stored run's key, copied to --out
    assert key["distill"]["algorithm"] == "toy" and key["distill"]["toy_steps"] == 2
    cmd = report.command({"config": key}, res)
    assert "--algorithm toy" in cmd and "--toy-steps 2" in cmd  # the report reproduces the toy's own flag
    rc = cli.main(["audit", *TINY_AUDIT, "--algorithm", "dm", "--toy-steps", "2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "--toy-steps is a setting of TOY" in err and "add --algorithm toy" in err
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_a_toy_backbone_has_an_estimate_and_a_report_command(toy) -> None:
    from engine import data
    train = data.load_split("colored-digits", 0.05, "train", 0)
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, ("vanilla",), "toy", ipc=2, preset="quick",
                                       distill_overrides={"toy_steps": 3}))
    e = estimate.estimate(p, train, "distill", False)
    assert e.parts["distill"] > 0 and "about" in e.text()
    res = {"dataset": "colored-digits", "conflict_ratio": 0.05, "algorithm": "toy", "ipc": 2, "preset": "quick",
           "seed": 0, "eval_seeds": p.seeds}
    assert "--toy-steps 3" in report.command({"config": pipeline.run_key(p, "audit")}, res)
    plain = pipeline.plan(replace(p.request, distill_overrides={}))
    assert "--toy-steps" not in report.command({"config": pipeline.run_key(plain, "audit")}, res)


def test_a_toy_backbone_is_a_choice_on_the_distill_form(toy, fresh_home, monkeypatch) -> None:
    monkeypatch.setenv("DDAUDIT_TINY", "1")
    monkeypatch.setenv("DDAUDIT_EXAMPLE", "0")
    at = open_page("distill")
    ok(at)
    assert "TOY" in at.selectbox(key="dst_algorithm").options  # shown by its label
    at.selectbox(key="dst_algorithm").set_value("toy").run()
    steps = at.number_input(key="dst_toy_toy_steps")
    assert steps.value == 1 and steps.label == "Toy steps per iteration"
    steps.set_value(2)
    at.multiselect(key="dst_methods").set_value(["vanilla"])
    at.number_input(key="dst_ipc").set_value(2)
    at.checkbox(key="dst_evaluate").set_value(False)
    at.button(key="dst_start").click()
    at.run()
    ok(at)
    wait_jobs()
    at.run()
    ok(at)
    from engine.store import RunStore
    (run,) = RunStore().finished("distill")
    assert run.config["distill"]["algorithm"] == "toy" and run.config["distill"]["toy_steps"] == 2


# --------------------------------------------------------------------------- the registry's rules

def test_the_registry_refuses_a_clash() -> None:
    with pytest.raises(ValueError, match="taken"):
        backbones.register(backbones.get("dm"))

    class Shadow(Toy):
        name = "shadow"
        options = (Option("ipc", "a shared setting", flag="shadow-ipc"),)

    with pytest.raises(ValueError, match="shadow shared settings"):
        backbones.register(Shadow())

    class Thief(Toy):
        name = "thief"
        options = (Option("other", "another setting", flag="factor"),)

    with pytest.raises(ValueError, match="--factor already sets factor"):
        backbones.register(Thief())
    assert "shadow" not in D.algorithms() and "thief" not in D.algorithms()


@pytest.mark.parametrize("algorithm", backbones.names())
def test_every_backbone_is_complete(algorithm: str) -> None:
    b = backbones.get(algorithm)
    assert b.name == algorithm and b.label and b.summary
    for preset in ("tiny", "quick", "paper"):
        cfg = D.config_for(preset, algorithm, 10)
        assert cfg.algorithm == algorithm and isinstance(cfg, DistillConfig)
        assert (cfg.options is None) == (b.options_type is None)
        assert {o.name for o in b.options} <= set(cfg.key())  # its own options enter the run key, flat
        for other in backbones.names():
            if other != algorithm:
                assert not {o.name for o in backbones.get(other).options} - {o.name for o in b.options} & \
                    set(cfg.key()), "another backbone's options in this key"


def test_own_options_are_refused_under_another_backbone() -> None:
    with pytest.raises(InvalidArgument, match="unknown distillation setting"):
        D.config_for("quick", "dm", 10, factor=2)
    assert D.config_for("quick", "idc", 10, factor=2).options.factor == 2


# run ids recorded before the backbones had modules (commit 2e3489c): every stored run of DM, DC, IDC and MTT is
# reused as it is (change only with a version bump, said in the commit and docs)
IDS_BEFORE = {
    "dm": ({}, "distill-colored-digits-9b93fe593676a78b"),
    "dc": ({"methods": ("vanilla", "kde", "cobra")}, "distill-colored-digits-4ec66c4c7a9d01d8"),
    "idc": ({"preset": "paper"}, "distill-colored-digits-ae973663f791b551"),
    "idc-factor-4": ({"distill_overrides": {"factor": 4, "idc_net_data": 64}}, "distill-colored-digits-ee6fd536bf45f2b5"),
    "mtt": ({}, "distill-colored-digits-4832e4504c47d2f2"),
    "mtt-own": ({"distill_overrides": {"num_experts": 3, "syn_steps": 5, "lr_teacher": 0.02}},
                "distill-colored-digits-d5fc7f50e999c9a0"),
}


@pytest.mark.parametrize("case", list(IDS_BEFORE))
def test_run_ids_are_the_ones_from_before_backbones_were_modules(case: str) -> None:
    from engine.store import run_id_for
    over, before = IDS_BEFORE[case]
    req = pipeline.Request("colored-digits", 0.05, **{"methods": D.METHODS, "preset": "quick", **over},
                           algorithm=case.split("-")[0], ipc=10, track_every=0)
    assert run_id_for("distill", pipeline.run_key(pipeline.plan(req), "distill")) == before


def test_random_streams_are_claimed_by_name_once() -> None:
    """The streams from before names keep their numbers (results unchanged); a method beyond the first five gets
    a stream of its own name, never another's number (the 14th method would have drawn KDE's 16); a second user
    of a stream name is refused."""
    from engine.distill import streams
    numbered = {n: streams.stream_id(n) for n in ("main", "groups", "init", "kde", "balanced", "real-net", "expert",
                                                   "mtt")}
    inner = {m: streams.stream_id(streams.inner(m)) for m in D.METHODS}
    assert numbered == {"main": 0, "groups": 1, "init": 2, "kde": 16, "balanced": 17, "real-net": 18, "expert": 19,
                        "mtt": 20}
    assert list(inner.values()) == [3, 4, 5, 6, 7]
    fourteenth = streams.stream_id(streams.inner("method14"))
    assert fourteenth == "inner:method14" and fourteenth not in list(numbered.values()) + list(inner.values())
    seeds = {str(streams.stream_id(n)) for n in list(numbered) + [streams.inner(m) for m in D.METHODS]}
    assert len(seeds) == len(numbered) + len(D.METHODS)  # no two names hash alike
    g = lambda name: torch.randint(1 << 30, (4,), generator=streams.rng(0, 5, name)).tolist()  # noqa: E731
    assert g(streams.inner("method14")) != g("kde")
    with pytest.raises(ValueError, match="already drawn by"):
        streams.claim("kde", "tests.someone_else")
    with pytest.raises(ValueError, match="never claimed"):
        streams.rng(0, 0, "unclaimed-stream")
    assert streams.claim("kde", "engine.distill.toolkit") == "kde"  # its own claim again is fine
