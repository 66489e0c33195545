"""Run store: ids, statuses, reuse, resume after SIGKILL, two processes at once, corrupt files."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import cache
from engine.errors import Cancelled, CorruptArtifact, DDAuditError, InvalidArgument
from engine.store import RunStore, headline, run_id_for

REPO = Path(__file__).resolve().parents[1]
CFG = {"dataset": "colored-digits", "conflict_ratio": 0.05, "ipc": 10, "methods": ["vanilla", "kde"]}

# Child processes for the crash and concurrency tests (kept in the test file: nothing to install).
HELPER = r'''
import sys, time
from pathlib import Path
import torch
from engine import cache
from engine.errors import DDAuditError
from engine.store import RunStore

mode, root = sys.argv[1], Path(sys.argv[2])
store = RunStore(root)

def wait_for_go():
    print("WAITING", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.005)

if mode == "kill-me":
    with store.run("test", {"dataset": "colored-digits", "steps": 10}) as run:
        run.log("step 5 of 10")
        cache.save_tensors(run.checkpoint_dir / "step-000005.safetensors", {"w": torch.arange(5.0)}, {"step": 5})
        print("READY", run.id, flush=True)
        time.sleep(300)
elif mode == "many":
    wait_for_go()
    for i in range(6):
        with store.run("test", {"who": sys.argv[4], "i": i}) as run:
            run.write_json("partial.json", {"i": i})
            run.finish({"score": i})
    print("DONE", flush=True)
elif mode == "same":
    wait_for_go()
    try:
        with store.run("test", {"shared": True}) as run:
            if not run.reused:
                run.log("computing")
                time.sleep(1.0)
                run.finish({"score": 1})
    except DDAuditError as exc:
        print("BUSY", exc.problem, flush=True)
        sys.exit(3)
    print("REUSED" if run.reused else "COMPUTED", flush=True)
'''


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def helper(tmp_path: Path) -> Path:
    path = tmp_path / "helper.py"
    path.write_text(HELPER, encoding="utf-8")
    return path


def _spawn(helper: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DDAUDIT_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, str(helper), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def _expect_line(proc: subprocess.Popen, prefix: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"child never printed {prefix!r}; stderr:\n{proc.stderr.read()}")


def _index_rows(store: RunStore) -> dict[str, str]:
    """id -> status straight from the SQLite file (no reconciling)."""
    con = sqlite3.connect(store.index_path)
    try:
        return dict(con.execute("SELECT id, status FROM runs").fetchall())
    finally:
        con.close()


def _disk_status(store: RunStore, run_id: str) -> str:
    return json.loads((store.root / run_id / "status.json").read_text(encoding="utf-8"))["status"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- ids

def test_run_id_is_deterministic_readable_and_safe() -> None:
    a = run_id_for("audit", CFG)
    assert a == run_id_for("audit", dict(reversed(list(CFG.items()))))  # key order does not matter
    assert a == run_id_for("audit", {**CFG, "methods": ("vanilla", "kde")})  # tuple == list, as in JSON
    assert a.startswith("audit-colored-digits-") and cache.safe_name(a) == a
    assert a != run_id_for("audit", {**CFG, "ipc": 50})
    assert a != run_id_for("distill", CFG)
    assert run_id_for("audit", {"dataset": "../../etc"}).startswith("audit-etc-")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", ".hidden", "x" * 200])
def test_bad_run_ids_and_kinds_refused_without_writing(store: RunStore, bad: str) -> None:
    for call in (lambda: store.get(bad), lambda: store.remove(bad), lambda: store.open(bad),
                 lambda: store.request_cancel(bad), lambda: store.start(bad, CFG), lambda: store.compare([bad])):
        with pytest.raises(InvalidArgument):
            call()
    assert not store.root.exists()


def test_reading_an_empty_store_writes_nothing(store: RunStore) -> None:
    assert store.list() == [] and store.reconcile() == []
    with pytest.raises(InvalidArgument, match="no run named"):
        store.get("audit-none")
    assert not store.root.exists()


# --------------------------------------------------------------------------- lifecycle

def test_finish_then_identical_request_is_reused_and_force_recomputes(store: RunStore) -> None:
    run, reused = store.start("audit", CFG)
    assert not reused and run.status == "running" and run.dir == store.root / run.id
    assert json.loads((run.dir / "config.json").read_text(encoding="utf-8")) == CFG
    run.save_tensors("vanilla/synthetic.safetensors", {"x": torch.ones(2, 3)}, {"method": "vanilla"})
    run.finish({"methods": {"vanilla": {"accuracy": 91.5, "group_accuracy": [[1.0, None]]}}, "seconds": 2})
    assert run.status == "finished" and _index_rows(store)[run.id] == "finished"

    [row] = store.list()
    assert row["id"] == run.id and row["kind"] == "audit" and row["config"] == CFG
    assert row["metrics"] == {"methods.vanilla.accuracy": 91.5, "seconds": 2}  # matrices stay in metrics.json
    assert store.get(run.id)["metrics"]["methods"]["vanilla"]["group_accuracy"] == [[1.0, None]]

    again, reused = store.start("audit", CFG)
    assert reused and again.reused and again.id == run.id and again.status == "finished"
    assert again.load_tensors("vanilla/synthetic.safetensors")[1] == {"method": "vanilla"}

    forced, reused = store.start("audit", CFG, force=True)
    assert not reused and forced.status == "running"
    assert not (forced.dir / "vanilla").exists() and not (forced.dir / "metrics.json").exists()
    assert store.get(run.id)["attempts"] == 2


def test_context_manager_marks_finished_failed_and_cancelled(store: RunStore) -> None:
    with store.run("audit", {"n": 1}) as run:
        run.write_json("metrics.json", {"acc": 1.0})  # finish() without arguments keeps these
    assert run.status == "finished" and store.get(run.id)["metrics"] == {"acc": 1.0}

    with pytest.raises(ValueError):
        with store.run("audit", {"n": 2}) as run:
            raise ValueError("boom")
    info = store.get(run.id)
    assert info["status"] == "failed" and info["error"] == "ValueError: boom" and _disk_status(store, run.id) == "failed"

    with pytest.raises(Cancelled):
        with store.run("audit", {"n": 3}) as run:
            raise Cancelled("stopped at step 4")
    assert store.get(run.id)["status"] == "cancelled" and _disk_status(store, run.id) == "cancelled"
    assert {r["status"] for r in store.list()} == {"finished", "failed", "cancelled"}
    assert [r["status"] for r in store.list(kind="audit", status="failed")] == ["failed"]


def test_request_refused_inside_a_new_run_leaves_no_run(store: RunStore) -> None:
    with pytest.raises(InvalidArgument):
        with store.run("audit", CFG):
            raise InvalidArgument("IPC 500 exceeds the smallest class", "use --ipc between 1 and 174")
    assert store.list() == [] and [p.name for p in store.root.iterdir() if not p.name.startswith(("index", "."))] == []
    with pytest.raises(RuntimeError):  # not a user error: kept as failed
        with store.run("audit", CFG):
            raise RuntimeError("bug")
    with pytest.raises(InvalidArgument):  # second attempt of an existing run: kept, marked failed
        with store.run("audit", CFG):
            raise InvalidArgument("bad", "fix")
    assert [(r["status"], r["error"]) for r in store.list()] == [("failed", "bad")]


def test_failed_run_is_restarted_and_resumes_from_its_checkpoint(store: RunStore) -> None:
    with pytest.raises(RuntimeError):
        with store.run("distill", {"n": 1}) as run:
            cache.save_tensors(run.checkpoint_dir / "it-3.safetensors", {"s": torch.zeros(2)}, {"iteration": 3})
            raise RuntimeError("out of memory")
    run2, reused = store.start("distill", {"n": 1})
    assert not reused and run2.resumed and run2.id == run.id
    assert [p.name for p in run2.checkpoints()] == ["it-3.safetensors"]
    assert "resuming: found 1 checkpoint" in (run2.dir / "log.txt").read_text(encoding="utf-8")
    assert store.get(run.id)["attempts"] == 2


def test_a_live_running_run_is_never_stolen_or_removed(store: RunStore) -> None:
    run, _ = store.start("audit", CFG)  # held by this (alive) process
    assert store.reconcile() == []
    with pytest.raises(DDAuditError, match="already running"):
        store.start("audit", CFG)
    with pytest.raises(DDAuditError, match="still running"):
        store.remove(run.id)
    assert run.status == "running"


def test_request_cancel_reaches_should_stop(store: RunStore) -> None:
    run, _ = store.start("audit", CFG)
    assert not run.should_stop()
    RunStore(store.root).request_cancel(run.id)  # e.g. another tab, another process
    assert run.should_stop()


def test_remove_clean_and_compare(store: RunStore) -> None:
    ids = []
    for ipc, acc in ((1, 50.0), (10, 80.0)):
        with store.run("audit", {**CFG, "ipc": ipc}) as run:
            run.finish({"accuracy": acc})
        ids.append(run.id)
    with pytest.raises(KeyError):
        with store.run("audit", {**CFG, "ipc": 99}) as bad:
            raise KeyError("x")
    cmp = store.compare(ids)
    assert cmp["config_diff"] == {"ipc": {ids[0]: 1, ids[1]: 10}}
    assert cmp["config_same"]["methods"] == ["vanilla", "kde"]
    assert cmp["metrics"]["accuracy"] == {ids[0]: 50.0, ids[1]: 80.0}

    assert store.clean("failed") == [bad.id] and not bad.dir.exists()
    store.remove(ids[0])
    assert [r["id"] for r in store.list()] == [ids[1]] and not (store.root / ids[0]).exists()
    with pytest.raises(InvalidArgument, match="no run named"):
        store.remove(ids[0])


def test_headline_keeps_scalars_and_drops_nan() -> None:
    h = headline({"a": {"b": 1.5, "nan": float("nan"), "m": [[1, 2]], "flat": [1, 2]}, "ok": True})
    assert h == {"a.b": 1.5, "a.nan": None, "a.flat": [1, 2], "ok": True}


# --------------------------------------------------------------------------- crashes

def test_sigkill_mid_run_leaves_store_consistent_and_restart_resumes(store: RunStore, helper: Path) -> None:
    proc = _spawn(helper, "kill-me", str(store.root))
    run_id = _expect_line(proc, "READY").split()[1]
    assert _disk_status(store, run_id) == "running"
    proc.send_signal(signal.SIGKILL)
    # not reaped yet: a zombie must already count as dead
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{proc.pid}/stat").read_text(encoding="utf-8")
        if stat[stat.rindex(")") + 2] == "Z":
            break
        time.sleep(0.01)
    assert store.reconcile() == [run_id]
    proc.wait()

    info = store.get(run_id)
    assert info["status"] == "failed" and info["error"].startswith("interrupted")
    assert _disk_status(store, run_id) == "failed" and _index_rows(store)[run_id] == "failed"
    assert info["problems"] == []  # every file that exists loads completely
    con = sqlite3.connect(store.index_path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()

    with store.run("test", {"dataset": "colored-digits", "steps": 10}) as run:
        assert run.id == run_id and run.resumed
        tensors, meta = cache.load_tensors(run.checkpoints()[-1])
        assert meta == {"step": 5} and torch.equal(tensors["w"], torch.arange(5.0))
        run.finish({"steps_done": 10})
    log_text = (run.dir / "log.txt").read_text(encoding="utf-8")
    assert "interrupted" in log_text and "resuming: found 1 checkpoint file(s), latest step-000005" in log_text
    assert store.get(run_id)["status"] == "finished"


def test_dead_process_found_on_start_without_reconcile(store: RunStore) -> None:
    run, _ = store.start("audit", CFG)
    row = json.loads((run.dir / "status.json").read_text(encoding="utf-8"))
    con = sqlite3.connect(store.index_path)
    con.execute("UPDATE runs SET pid = ? WHERE id = ?", (_dead_pid(), run.id))
    con.commit()
    con.close()
    cache.atomic_write_json(run.dir / "status.json", {**row, "pid": _dead_pid()})
    again, reused = RunStore(store.root).start("audit", CFG)
    assert not reused and again.status == "running" and store.get(run.id)["attempts"] == 2


def test_reused_pid_is_not_mistaken_for_the_runs_process(store: RunStore) -> None:
    run, _ = store.start("audit", CFG)
    con = sqlite3.connect(store.index_path)  # same pid, different start time: the pid was recycled
    con.execute("UPDATE runs SET pid_start = '1' WHERE id = ?", (run.id,))
    con.commit()
    con.close()
    assert store.reconcile() == [run.id]


def test_crash_between_status_file_and_index_trusts_the_folder(store: RunStore) -> None:
    run, _ = store.start("audit", CFG)
    cache.atomic_write_json(run.dir / "metrics.json", {"accuracy": 77.0})
    status = json.loads((run.dir / "status.json").read_text(encoding="utf-8"))
    cache.atomic_write_json(run.dir / "status.json", {**status, "status": "finished", "pid": _dead_pid()})
    con = sqlite3.connect(store.index_path)
    con.execute("UPDATE runs SET pid = ? WHERE id = ?", (_dead_pid(), run.id))
    con.commit()
    con.close()
    assert _index_rows(store)[run.id] == "running"
    assert store.reconcile() == []  # finished on disk: not 'interrupted'
    [row] = store.list()
    assert row["status"] == "finished" and row["metrics"] == {"accuracy": 77.0}


# --------------------------------------------------------------------------- two processes

def test_two_processes_starting_different_runs_both_finish_and_are_listed(store: RunStore, helper: Path,
                                                                          tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [_spawn(helper, "many", str(store.root), str(go), who) for who in ("a", "b")]
    for p in procs:
        _expect_line(p, "WAITING")
    go.touch()
    for p in procs:
        _expect_line(p, "DONE")
        assert p.wait(timeout=120) == 0, p.stderr.read()
    rows = store.list()
    assert len(rows) == 12 and {r["status"] for r in rows} == {"finished"}
    assert sorted((r["config"]["who"], r["config"]["i"]) for r in rows) == [(w, i) for w in "ab" for i in range(6)]
    assert len(_index_rows(store)) == 12
    assert all(store.get(r["id"])["problems"] == [] for r in rows)


def test_two_processes_asking_for_the_same_run_compute_it_once(store: RunStore, helper: Path,
                                                               tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [_spawn(helper, "same", str(store.root), str(go)) for _ in range(2)]
    for p in procs:
        _expect_line(p, "WAITING")
    go.touch()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode in (0, 3), err
        outcomes.append(out.split()[0])
    assert outcomes.count("COMPUTED") == 1, outcomes
    assert set(outcomes) <= {"COMPUTED", "REUSED", "BUSY"}
    [row] = store.list()
    assert row["status"] == "finished"
    assert (store.root / row["id"] / "log.txt").read_text(encoding="utf-8").count("computing") == 1


# --------------------------------------------------------------------------- corrupt files

def _two_finished_runs(store: RunStore) -> list[str]:
    ids = []
    for n in (1, 2):
        with store.run("audit", {"n": n}) as run:
            run.save_tensors("synthetic.safetensors", {"x": torch.arange(6.0).reshape(2, 3)})
            run.finish({"accuracy": float(n)})
        ids.append(run.id)
    return ids  # runs {"n": 1} and {"n": 2}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "emptied", "deleted"])
def test_damaged_index_is_detected_and_rebuilt_from_the_folders(store: RunStore, damage: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    ids = sorted(_two_finished_runs(store))
    raw = store.index_path.read_bytes()
    if damage == "garbage":
        store.index_path.write_bytes(b"this is not sqlite" * 100)
    elif damage == "truncated":
        store.index_path.write_bytes(raw[: len(raw) // 2])
    elif damage == "emptied":
        store.index_path.write_bytes(b"")
    else:
        store.index_path.unlink()
    fresh = RunStore(store.root)  # a new process opening the damaged store
    rows = fresh.list()
    assert sorted(r["id"] for r in rows) == ids
    assert {r["status"] for r in rows} == {"finished"}
    assert sorted(r["metrics"]["accuracy"] for r in rows) == [1.0, 2.0]
    if damage in ("garbage", "truncated"):
        assert list(store.root.glob("index.sqlite.corrupt-*")), "the corrupt index is kept aside for inspection"
        assert "rebuilt" in caplog.text
    con = sqlite3.connect(store.index_path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


def test_index_corrupted_while_open_is_rebuilt_on_next_query(store: RunStore) -> None:
    ids = sorted(_two_finished_runs(store))
    store.list()  # store is now 'ready': no quick_check on the next call
    store.index_path.write_bytes(b"\0garbage" * 512)
    assert sorted(r["id"] for r in store.list()) == ids


@pytest.mark.parametrize("name", ["status.json", "metrics.json", "config.json", "synthetic.safetensors"])
def test_damaged_run_file_is_reported_and_never_reused(store: RunStore, name: str) -> None:
    a, b = _two_finished_runs(store)
    path = store.root / a / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])  # truncated mid-write

    problems = store.get(a)["problems"]
    assert len(problems) == 1 and name in problems[0] and store.get(b)["problems"] == []
    if name.endswith(".safetensors"):
        with pytest.raises(CorruptArtifact):
            store.open(a).load_tensors(name)
    else:
        with pytest.raises(CorruptArtifact):
            cache.read_json(path)

    run, reused = store.start("audit", {"n": 1})  # the id comes from the request, not the damaged file
    assert not reused and run.id == a and run.status == "running"
    assert not (run.dir / "synthetic.safetensors").exists()  # recomputed from scratch
    run.finish({"accuracy": 1.0})
    assert store.get(a)["problems"] == []


def test_rebuild_marks_runs_with_unreadable_records_failed(store: RunStore) -> None:
    a, b = _two_finished_runs(store)
    (store.root / a / "metrics.json").write_text('{"accuracy": 1', encoding="utf-8")
    (store.root / b / "status.json").write_text("", encoding="utf-8")
    assert store.rebuild_index() == 2
    rows = {r["id"]: r for r in store.list()}
    assert rows[a]["status"] == "failed" and "metrics.json" in rows[a]["error"]
    assert rows[b]["status"] == "failed" and "status.json" in rows[b]["error"]
    assert _disk_status(store, a) == "failed" and _disk_status(store, b) == "failed"  # folder agrees again


def test_remove_that_crashed_half_way_is_finished_by_reconcile(store: RunStore) -> None:
    a, b = _two_finished_runs(store)
    trash = store.root / f".trash-{a}-deadbeef"
    os.replace(store.root / a, trash)  # remove() renames first, then deletes; crash in between
    assert store.reconcile() == [] and not trash.exists()
    assert [r["id"] for r in store.list()] == [b]


# --------------------------------------------------------------------------- reading a run (the pages' way)

def _fake_set(method: str):
    from engine.distill import SyntheticSet
    g = torch.Generator().manual_seed(len(method))
    return SyntheticSet(method, torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 0, 1, 1]), torch.full((3,), 0.5),
                        torch.full((3,), 0.25), 0.1, 1.0)


def test_a_run_is_read_through_its_handle_never_by_path(store: RunStore, tmp_path: Path) -> None:
    """results / methods / sets / grids / report_path, finished(kind, **where), a plain copy, and the
    files a sweep ships between stores: everything the pages, the sweep and the report read."""
    from engine.distill import save_synthetic
    with store.run("audit", CFG) as run:
        save_synthetic({m: _fake_set(m) for m in ("fairdd", "random", "vanilla")}, run.dir)
        run.write_json("results.json", {"methods": {"vanilla": {"accuracy": 50.0}}})
        (run.checkpoint_dir / "k").mkdir(parents=True)
        (run.checkpoint_dir / "k" / "checkpoint.safetensors").write_bytes(b"x")
        run.finish({"methods": {"vanilla": {"accuracy": 50.0}}})
    (found,) = store.finished("audit", dataset="colored-digits", conflict_ratio=0.05)
    assert store.finished("audit", dataset="bg-fmnist") == [] and store.finished("distill") == []
    assert found.id == run.id and found.results() == {"methods": {"vanilla": {"accuracy": 50.0}}}
    assert found.methods() == ["random", "vanilla", "fairdd"]  # results.ORDER, not the folder's order
    assert list(found.grids()) == ["random", "vanilla", "fairdd"] and all(p.is_file() for p in found.grids().values())
    assert list(found.sets(["fairdd", "vanilla", "kde"])) == ["fairdd", "vanilla"]  # the order asked for
    assert torch.equal(found.sets()["vanilla"].images, _fake_set("vanilla").images)
    assert found.report_path.name == "report.html" and not found.report_path.exists()
    shipped = found.export_files()
    assert "results.json" in shipped and "vanilla/synthetic.safetensors" in shipped
    assert not any(k.startswith("checkpoints") or k in ("status.json", "log.txt") for k in shipped)
    found.copy_to(tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        sorted(shipped)
    other = RunStore(tmp_path / "elsewhere")
    with other.run("audit", CFG) as copy:
        copy.import_files({**shipped, "../escape.json": b"{}", "config.json": b"{}"})
        copy.finish(found.metrics)
    assert copy.results() == found.results() and list(copy.sets()) == ["random", "vanilla", "fairdd"]
    assert not (tmp_path / "escape.json").exists() and copy.config == found.config


def test_the_store_stamp_moves_on_writes_not_on_reads(store: RunStore) -> None:
    """The dashboard caches listings by RunStore.stamp(): a read must not invalidate it, a write must."""
    with store.run("audit", CFG):
        pass
    before = store.stamp()
    store.list()
    store.get(store.list()[0]["id"])
    assert store.stamp() == before
    with store.run("distill", {**CFG, "ipc": 1}) as run:
        pass
    after = store.stamp()
    assert after != before
    store.remove(run.id)
    assert store.stamp() != after
