"""`runs gc` (engine/store/gc.py): by age and by size, never a running, kept or referenced run."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.errors import InvalidArgument
from engine.store import RunStore
from engine.store import gc
from tests.test_runs_cli import run_cli


def finished(store: RunStore, name: str, blob: int = 1000, checkpoint: int = 0, metrics: dict | None = None) -> str:
    run, _ = store.start("audit", {"dataset": "x", "name": name})
    run.path("payload.bin").write_bytes(b"\0" * blob)
    if checkpoint:
        (run.checkpoint_dir / "checkpoint.safetensors").write_bytes(b"\0" * checkpoint)
    run.finish(metrics or {"name": name})
    return run.id


@pytest.fixture
def store(fresh_home) -> RunStore:
    return RunStore()


def test_gc_never_removes_a_running_kept_or_referenced_run(store: RunStore) -> None:
    old = finished(store, "old")
    kept = finished(store, "kept")
    cell = finished(store, "cell")
    sweep, _ = store.start("sweep", {"dataset": "x", "grid": 1})
    sweep.finish({"cells": 1, "cell_runs": [cell]})
    running, _ = store.start("audit", {"dataset": "x", "name": "running"})  # this live process holds it
    gc.set_keep(store, kept)
    later = datetime.now(timezone.utc) + timedelta(days=30)
    plan = gc.plan_gc(store, older_than_days=7, now=later)
    assert [r["id"] for r in plan["runs"]] == sorted([old, sweep.id], key=lambda i: store.get(i)["updated"])
    assert plan["protected"] == {running.id: "running", kept: "kept", cell: "a sweep's cell"}
    assert all(r["reason"] == "older than 7 days" for r in plan["runs"])
    # everything protected stays even under a size limit of zero
    out = gc.run_gc(store, max_bytes=0)
    assert set(out["removed"]) == {old, sweep.id}
    left = {r["id"] for r in store.list()}
    assert left == {kept, cell, running.id}
    running.finish({})


def test_dry_run_removes_nothing_and_size_limit_takes_the_oldest_first(store: RunStore) -> None:
    a = finished(store, "a", blob=300_000)
    b = finished(store, "b", blob=300_000)
    c = finished(store, "c", blob=300_000)
    before = gc.store_bytes(store)
    dry = gc.run_gc(store, max_bytes=before - 400_000, dry_run=True)
    assert dry["dry_run"] and [r["id"] for r in dry["runs"]] == [a, b]  # two runs free the 400 kB asked for
    assert {r["id"] for r in store.list()} == {a, b, c} and gc.store_bytes(store) == before
    gc.run_gc(store, max_bytes=before - 400_000)
    assert {r["id"] for r in store.list()} == {c}
    assert gc.store_bytes(store) <= before - 400_000


def test_gc_drops_finished_runs_checkpoints_only(store: RunStore) -> None:
    done = finished(store, "done", checkpoint=50_000)
    failed, _ = store.start("audit", {"dataset": "x", "name": "failed"})
    (failed.checkpoint_dir / "checkpoint.safetensors").write_bytes(b"\0" * 50_000)
    failed.fail("boom")
    out = gc.run_gc(store)
    assert [c["id"] for c in out["checkpoints"]] == [done] and out["checkpoints"][0]["bytes"] == 50_000
    assert not list((store.root / done / "checkpoints").glob("*"))
    assert (store.root / failed.id / "checkpoints" / "checkpoint.safetensors").is_file()  # it can still resume
    assert {r["id"] for r in store.list()} == {done, failed.id} and not out["removed"]


def test_sizes_and_keep_from_the_cli(store: RunStore) -> None:
    rid = finished(store, "cli", blob=2_000_000)
    assert gc.parse_size("2G") == 2 * 2 ** 30 and gc.parse_size("500m") == 500 * 2 ** 20 and gc.parse_size("10") == 10
    with pytest.raises(InvalidArgument, match="cannot read the size"):
        gc.parse_size("lots")
    code, out, _ = run_cli("runs", "list")
    assert code == 0 and "1 run(s), 1.9 MB in" in out
    assert run_cli("runs", "keep", rid)[0] == 0
    code, out, _ = run_cli("runs", "gc", "--max-size", "0", "--dry-run")
    assert code == 0 and f"kept {rid}  (kept)" in out and "would remove" not in out
    assert run_cli("runs", "keep", rid, "--off")[0] == 0
    code, out, _ = run_cli("runs", "gc", "--max-size", "0", "--dry-run")
    assert f"would remove {rid}" in out and "(dry run)" in out and store.get(rid)["status"] == "finished"
    code, out, _ = run_cli("runs", "gc", "--max-size", "0", "--yes")
    assert code == 0 and f"removed {rid}" in out and not store.list()
    code, _, err = run_cli("runs", "gc", "--max-size", "lots")
    assert code == 2 and "cannot read the size 'lots'" in err


def test_guest_cap_collects_the_oldest_guest_runs_never_the_owners(store: RunStore) -> None:
    """Guest runs over the cap are collected oldest first; the owner's (unmarked) runs, a kept guest run, a
    running one and the run a guest just finished are never collected, whatever their size or age."""
    owner_old = finished(store, "owner-old", blob=500_000)
    g1 = finished(store, "g1", blob=200_000)
    kept = finished(store, "kept", blob=200_000)
    g2 = finished(store, "g2", blob=200_000)
    g3 = finished(store, "g3", blob=200_000)
    running, _ = store.start("audit", {"dataset": "x", "name": "running"})  # this live process holds it
    running.path("payload.bin").write_bytes(b"\0" * 200_000)
    for rid in (g1, kept, g2, g3, running.id):
        gc.mark_guest(store, rid)
    gc.set_keep(store, kept)
    assert not gc.is_guest(store, owner_old) and gc.is_guest(store, g1)
    by_age = sorted([g1, g2, g3], key=lambda i: store.get(i)["updated"])
    plan = gc.plan_guest_cap(store, cap_bytes=650_000)
    assert plan["guest_bytes"] > 1_000_000
    assert [r["id"] for r in plan["runs"]] == by_age[:2]  # two of them bring the guests under 650 kB
    assert gc.collect_guest_runs(store, cap_bytes=0, spare=(by_age[2],)) == by_age[:2]
    assert {r["id"] for r in store.list()} == {owner_old, kept, by_age[2], running.id}
    assert gc.collect_guest_runs(store, cap_bytes=0) == [by_age[2]]
    gc.mark_guest(store, kept, guest=False)  # the owner took it over: no longer a guest's
    assert not gc.is_guest(store, kept)
    assert {r["id"] for r in store.list()} == {owner_old, kept, running.id}
    running.finish({})
