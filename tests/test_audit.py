"""The end-to-end audit: the CLI at tiny size, the JSON it promises, and input validation."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine import audit, cli, distill, embed, evaluate, pipeline, results
from engine.errors import InvalidArgument

ISSUE_KEYS = {"dataset", "conflict_ratio", "ipc", "preset", "real_aligned_share", "methods", "probe_accuracy",
              "seconds"}
METHOD_KEYS = {"accuracy", "accuracy_std", "aligned_accuracy", "conflicting_accuracy", "worst_group_accuracy",
               "deo_m", "deo_a", "synthetic_aligned_share", "group_accuracy"}


def key(req: pipeline.Request) -> dict:
    return pipeline.run_key(pipeline.plan(req), "audit")


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_audit_cli_end_to_end_tiny(tiny_presets, tmp_path, capsys):
    out_dir = tmp_path / "run"
    rc, out, err = _run(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods",
                         "vanilla,kde,fairdd", "--ipc", "2", "--preset", "quick", "--eval-seeds", "2",
                         "--seed", "1", "--out", str(out_dir), "--json"], capsys)
    assert rc == 0, err
    printed = json.loads(out)
    written = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    assert printed == written
    assert ISSUE_KEYS <= set(written)
    assert set(written["methods"]) == {"vanilla", "kde", "fairdd", "random"}
    for name, m in written["methods"].items():
        assert METHOD_KEYS <= set(m), name
        assert 0.0 <= m["accuracy"] <= 100.0 and 0.0 <= m["synthetic_aligned_share"] <= 100.0
        assert len(m["group_accuracy"]) == 10 and all(len(row) == 10 for row in m["group_accuracy"])
        assert m["deo_m"] >= m["deo_a"] >= 0.0
    assert written["eval_seeds"] == [1000, 1001]
    # colored-digits at 5%: 70 of 1,442 training images conflict
    assert written["real_aligned_share"] == pytest.approx(100 * (1 - 70 / 1442))
    assert written["weights"]["kernel_variance"] > 0
    for m in ("vanilla", "kde", "fairdd"):
        assert (out_dir / m / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert distill.load_synthetic(out_dir / m).images.shape == (20, 3, 32, 32)


def test_audit_without_kde_skips_weights(tiny_presets, tmp_path):
    res = audit.run_audit(pipeline.plan(pipeline.Request("colored-digits", 0.05, methods="vanilla", ipc=1,
                                                         eval_seeds=1)), tmp_path / "r")
    assert set(res["methods"]) == {"vanilla", "random"} and res["weights"] is None
    assert "weights" not in res["timings"]
    # the same OUT with other methods: a fresh distillation, not the old run's checkpoint
    again = audit.run_audit(pipeline.plan(pipeline.Request("colored-digits", 0.05, methods="fairdd,vanilla",
                                                           ipc=1, eval_seeds=1)), tmp_path / "r")
    assert set(again["methods"]) == {"vanilla", "fairdd", "random"}
    assert again["methods"]["random"]["accuracy"] == res["methods"]["random"]["accuracy"]
    # the random baseline of the same split was read back from the evaluation cache, not trained again;
    # vanilla's set is the same set, so it is too, while fairdd's is new
    assert again["methods"]["random"]["eval_cached"] and again["methods"]["vanilla"]["eval_cached"]
    assert not again["methods"]["fairdd"]["eval_cached"]
    assert again["methods"]["random"]["group_accuracy"] == res["methods"]["random"]["group_accuracy"]


def test_probe_settings_do_not_invalidate_the_evaluation_cache(tiny_presets, tmp_path):
    """The probe has its own preset: another probe is another run, but the sets' evaluations are reused."""
    req = pipeline.Request("colored-digits", 0.05, methods="vanilla", ipc=1, eval_seeds=1)
    other = replace(req, probe_overrides={"steps": 3})
    assert key(req) != key(other) and key(req)["evaluate"]["probe_steps"] == 2
    first = audit.run_audit(pipeline.plan(req), tmp_path / "a")
    second = audit.run_audit(pipeline.plan(other), tmp_path / "b")
    assert second["methods"]["vanilla"]["eval_cached"] and second["methods"]["random"]["eval_cached"]
    assert second["methods"]["vanilla"]["accuracy"] == first["methods"]["vanilla"]["accuracy"]


def test_audit_without_baseline_evaluates_only_the_sets(tiny_presets, tmp_path, capsys):
    cfg = pipeline.Request("colored-digits", 0.05, methods="vanilla", ipc=1, eval_seeds=1, baseline=False)
    res = audit.run_audit(pipeline.plan(cfg), tmp_path / "r")
    assert set(res["methods"]) == {"vanilla"} and "evaluate random" not in res["timings"]
    # a stored run with the baseline is a different run, not a reuse of this one
    assert key(cfg) != key(replace(cfg, baseline=True))
    rc, _, _ = _run(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods", "vanilla",
                     "--ipc", "1", "--eval-seeds", "1", "--no-baseline", "--out", str(tmp_path / "cli"), "--json"], capsys)
    assert rc == 0
    assert set(json.loads((tmp_path / "cli" / "results.json").read_text(encoding="utf-8"))["methods"]) == {"vanilla"}


@pytest.mark.parametrize("args, words", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--conflict-ratio", "1.5"], "outside (0, 1)"),
    (["--methods", "vanilla,magic"], "unknown method"),
    (["--methods", "vanilla,vanilla"], "twice"),
    (["--algorithm", "gm"], "unknown algorithm"),
    (["--ipc", "ten"], "IPC"),
    (["--ipc", "-1"], "IPC"),
    (["--ipc", "5000"], "exceeds the smallest class"),
    (["--ipc", "100000"], "above the limit"),
    (["--preset", "slow"], "unknown preset"),
    (["--kernel-variance", "-1"], "kernel"),
    (["--kernel-variance", "abc"], "not a number"),
    (["--eval-seeds", "0"], "evaluation seeds"),
    (["--seed", "x"], "seed"),
])
def test_bad_input_exits_2_and_writes_nothing(args, words, tmp_path, capsys):
    base = {"--dataset": "colored-digits", "--conflict-ratio": "0.05", "--out": str(tmp_path / "never")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["audit"] + [x for kv in base.items() for x in kv]
    rc, out, err = _run(argv, capsys)
    assert rc == 2
    assert err.startswith("error: ") and words.lower() in err.lower() and "fix:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x", encoding="utf-8")
    rc, _, err = _run(["audit", "--conflict-ratio", "0.05", "--out", str(f)], capsys)
    assert rc == 2 and "not a folder" in err


def test_plan_rejects_unknown_overrides(tmp_path):
    with pytest.raises(InvalidArgument):
        pipeline.plan(pipeline.Request("colored-digits", 0.05, eval_overrides={"epochz": 1}))
    with pytest.raises(InvalidArgument):
        pipeline.plan(pipeline.Request("colored-digits", 0.05, distill_overrides={"iters": 1}))
    with pytest.raises(InvalidArgument):
        pipeline.plan(pipeline.Request("colored-digits", 0.05, embed_overrides={"stepz": 1}))


def test_tables_render_every_method_and_missing_values():
    import torch
    t = torch.tensor([0, 1, 1])
    agg = evaluate.aggregate([evaluate.group_metrics(t, t, torch.tensor([0, 0, 1]), t == 0, 2, 2)])
    entry = results.method_entry({**agg, "seconds": 1.0}, 42.0)
    entry["conflicting_accuracy"] = None
    res = {"dataset": "d", "conflict_ratio": 0.05, "ipc": 1, "preset": "quick", "seconds": 3.0,
           "real_aligned_share": 95.0, "probe_accuracy": 99.0, "methods": {"vanilla": entry, "random": entry}}
    text = audit.table(res)
    assert text.index("random") < text.index("vanilla") and "42.0" in text and " -" in text
    md = audit.markdown_table(res, {"vanilla": "25.0 / 100 / 99.96"}).splitlines()
    assert len(md) == 4 and md[3].startswith("| vanilla") and md[3].endswith("25.0 / 100 / 99.96 |")
    assert all(line.count("|") == md[0].count("|") for line in md)


def test_audit_is_a_stored_run_reused_unless_forced(tiny_presets, fresh_home, tmp_path, capsys):
    argv = ["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods", "vanilla,fairdd",
            "--ipc", "1", "--eval-seeds", "1", "--seed", "3", "--json"]
    rc, out, err = _run(argv + ["--out", str(tmp_path / "a")], capsys)
    assert rc == 0 and "computed" in err, err
    first = json.loads(out)
    rc, out, err = _run(argv + ["--out", str(tmp_path / "b")], capsys)  # identical request, other OUT
    assert rc == 0 and "reused" in err, err
    assert json.loads(out) == first and (tmp_path / "b" / "fairdd" / "grid.png").is_file()
    rc, out, err = _run(["runs", "list", "--kind", "audit", "--json"], capsys)
    runs = json.loads(out)
    assert rc == 0 and len(runs) == 1 and runs[0]["status"] == "finished"
    rc, out, err = _run(argv + ["--out", str(tmp_path / "c"), "--force"], capsys)
    assert rc == 0 and "computed" in err, err
    rc, out, err = _run(argv[:-1] + ["--seed", "4", "--json", "--out", str(tmp_path / "d")], capsys)
    assert rc == 0 and "computed" in err  # another seed is another run
    rc, out, _ = _run(["runs", "list", "--kind", "audit", "--json"], capsys)
    assert len(json.loads(out)) == 2


def test_store_key_follows_the_resolved_presets(tmp_path, monkeypatch):
    """A changed preset value (same request) is another run: the key holds the resolved stage settings."""
    cfg = pipeline.Request(dataset="colored-digits", conflict_ratio=0.05)
    before = key(cfg)
    assert before == key(cfg)
    dm = distill.BACKBONES["dm"].presets
    monkeypatch.setitem(dm, "quick", replace(dm["quick"], iterations=dm["quick"].iterations + 1))
    assert key(cfg) != before
    monkeypatch.undo()
    monkeypatch.setitem(evaluate.PRESETS, "quick", replace(evaluate.PRESETS["quick"], epochs=1))
    assert key(cfg) != before
    monkeypatch.undo()
    monkeypatch.setitem(embed.PRESETS, "quick", replace(embed.PRESETS["quick"], steps=1))
    assert key(cfg) != before
    monkeypatch.undo()
    assert key(cfg) == before


def test_a_stored_audit_resolves_the_device_once(tiny_presets, fresh_home, monkeypatch):
    """plan() picks the device and hands it down: no stage resolves it again (it did ~8 times per audit)."""
    from engine import attribute_probe, device, embed, evaluate, stored
    from engine.distill import loop
    calls = []
    real = device.pick_device

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    for module in (device, pipeline, attribute_probe, embed, evaluate, loop):  # each name bound at import
        monkeypatch.setattr(module, "pick_device", counting)
    res, _ = stored.audit_stored(pipeline.Request("colored-digits", 0.05, methods="vanilla,kde", ipc=1,
                                                  eval_seeds=1, seed=4))
    assert set(res["methods"]) == {"vanilla", "kde", "random"}
    assert len(calls) == 1, calls


def test_the_probe_follows_the_evaluation_nets_depth_and_norm_unless_told():
    """As when the probe shared EvalPreset: an evaluation depth override deepens the probe too, and the
    run key names it as before (no separate probe depth), so stored runs keep their ids."""
    deep = pipeline.plan(pipeline.Request("colored-digits", 0.05, eval_overrides={"depth": 4}))
    assert deep.probe_cfg.depth == 4 and deep.probe_cfg.norm == deep.eval_cfg.norm
    assert "probe_depth" not in pipeline.run_key(deep, "audit")["evaluate"]
    own = pipeline.plan(pipeline.Request("colored-digits", 0.05, eval_overrides={"depth": 4},
                                         probe_overrides={"depth": 2}))
    assert own.probe_cfg.depth == 2 and pipeline.run_key(own, "audit")["evaluate"]["probe_depth"] == 2
