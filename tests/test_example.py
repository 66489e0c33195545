"""The bundled example (engine/example.py, assets/example): current, small, installed read-only."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from engine import example
from engine.store import RunStore
from tests.test_runs_cli import run_cli


def test_bundle_matches_the_current_versions_and_run_keys() -> None:
    """Fails when a version bump or a changed request key makes the bundle stale, naming the fix."""
    problems = example.stale()
    assert not problems, f"the bundled example is stale ({'; '.join(problems)}): rebuild it with `{example.BUILD_COMMAND}`"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    """The bundle installed into a home of its own (unpacked: what the app reads)."""
    old = os.environ.get("DDAUDIT_HOME")
    os.environ["DDAUDIT_HOME"] = str(tmp_path_factory.mktemp("example-home"))
    try:
        store = example.install()
    finally:
        os.environ["DDAUDIT_HOME"] = old or ""
    assert store is not None
    return store


def test_bundle_is_small_and_has_each_role(installed: RunStore) -> None:
    files = [p for p in example.ASSET_DIR.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert size <= example.MAX_BYTES, f"assets/example is {size / 2 ** 20:.1f} MB"
    m = example.read_manifest()
    assert set(m["roles"]) == {"audit", "demo", "sweep"} and m["command"] == "make assets"
    assert not [p for p in files if "checkpoints" in p.parts], "checkpoints do not belong in the bundle"
    assert not list(installed.root.rglob("*.gz")), "install unpacks every gzipped file"
    store = installed
    run = store.open(m["roles"]["audit"])
    audit = run.results()
    assert set(audit["methods"]) == {"vanilla", "kde", "fairdd", "cobra", "balanced", "random"}
    assert run.report_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert all(audit["trajectory"][k] for k in ("vanilla", "kde", "fairdd", "cobra", "balanced"))
    assert set(run.sets()) >= {"vanilla", "kde", "fairdd", "cobra", "balanced"}  # the sets load (unpacked intact)
    assert not installed.problems(m["roles"]["audit"]) and not installed.problems(m["roles"]["demo"])


def test_stale_names_what_changed() -> None:
    m = copy.deepcopy(example.read_manifest())
    m["ddaudit"] = "0.0.0-old"
    m["runs"][0]["config"] = {**m["runs"][0]["config"], "seed": 12345}
    found = " ".join(example.stale(m))
    assert "ddaudit version '0.0.0-old'" in found and "run key changed" in found


def test_install_is_read_only_and_restored(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = example.install()
    m = example.read_manifest()
    assert store is not None and store.root == fresh_home / "example"
    listed = {r["id"]: r["status"] for r in store.list()}
    assert listed == {r["id"]: "finished" for r in m["runs"]}
    audit_id = m["roles"]["audit"]
    assert store.open(audit_id).results()["methods"]["fairdd"]["accuracy"] > 0
    # the user's store does not hold it: a user's identical request computes its own run
    assert RunStore().index.get_row(audit_id) is None
    # `runs rm` refuses with the problem and the fix; nothing is removed
    code, _, err = run_cli("runs", "rm", audit_id, "--yes")
    assert code == 2 and "bundled example" in err and "read-only" in err and "DDAUDIT_EXAMPLE=0" in err, err
    assert (store.root / audit_id / "results.json").is_file()
    # a folder removed by hand comes back on the next start
    import shutil
    shutil.rmtree(store.root / audit_id)
    again = example.install()
    assert (again.root / audit_id / "results.json").is_file()
    assert again.get(audit_id)["status"] == "finished"
    # switched off: not installed, and an installed copy goes
    monkeypatch.setenv(example.SWITCH, "0")
    assert example.install() is None and not (fresh_home / "example").exists()


def test_sweep_cells_keep_what_the_sweep_plots_read(installed: RunStore) -> None:
    m = example.read_manifest()
    sweep_dir = installed.root / m["roles"]["sweep"]
    summary = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert len(summary["rows"]) >= 8 and (sweep_dir / "sweep.csv").is_file()
    cells = [r["id"] for r in m["runs"] if r["id"] not in m["roles"].values()]
    assert set(cells) == set(installed.get(m["roles"]["sweep"])["metrics"]["cell_runs"])
    store = installed
    assert all(store.open(c).results() for c in cells)
    assert not any(any((installed.root / c).rglob("synthetic.safetensors")) for c in cells)


def test_enabled_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, on in (("0", False), ("off", False), ("1", True), ("", True)):
        monkeypatch.setenv(example.SWITCH, value)
        assert example.enabled() is on
    monkeypatch.delenv(example.SWITCH)
    assert example.enabled() and os.environ.get(example.SWITCH) is None


def test_install_seeds_the_example_splits_embeddings_and_probe(fresh_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A first own run on the example's split (the dashboard's default) reads the bundled SupCon embeddings and
    attribute probe instead of training them; a file already in the cache is left as it is."""
    from engine import attribute_probe, data, embed, pipeline
    m = example.read_manifest()
    assert sorted(Path(r).parts[-2] for r in m["caches"]) == ["embeddings", "probes"]
    assert example.install() is not None
    req = example.audit_request()
    p = pipeline.plan(req)
    train, test = data.load_pair(req.dataset, req.conflict_ratio, req.seed)
    emb = embed._paths(train, p.embed, req.seed)[1]
    probe_path = attribute_probe._probe_path(train, p.probe_cfg, req.seed)
    assert emb.is_file() and probe_path.is_file()  # the keys of this code's split and presets match the bundle's

    def no_training(*a, **k):
        raise AssertionError("trained although the bundle holds it")
    monkeypatch.setattr(embed, "train_supcon", no_training)
    monkeypatch.setattr(attribute_probe.torch.optim, "SGD", no_training)
    assert embed.get_embeddings(train, p.embed, req.seed).shape[0] == len(train)
    probe = attribute_probe.train_probe(train, p.probe_cfg, seed=req.seed, device="cpu")
    store = example.RunStore(example.installed_root())
    audit = store.open(m["roles"]["audit"]).results()
    assert attribute_probe.probe_accuracy(probe, test) == pytest.approx(audit["probe_accuracy"])  # the same probe
    emb.write_bytes(b"mine")
    assert example.seed_caches() == [] and emb.read_bytes() == b"mine"
