"""Sweeps on a real Ray: a local one started by the sweep, and a head started here in a subprocess."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine import cli, sweep
from engine.sweep import ray_run
from engine.errors import Cancelled
from engine.store import RunStore

from .procs import descendants, is_loopback, listeners

pytestmark = pytest.mark.usefixtures("fresh_home")
TINY = ["--dataset", "colored-digits", "--conflict-ratio", "0.05", "--preset", "tiny", "--ipc", "2"]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("flag, value, message", [
    ("--conflict-ratio", "", "list of conflict ratios is empty"), ("--conflict-ratio", "0.05,1.5", "outside (0, 1)"),
    ("--methods", "vanilla,nope", "unknown method"), ("--kernel-variance", "0.1,-1", "kernel variance"),
    ("--seeds", "0,x", "not an integer"), ("--ipc", "0", "not a positive integer"),
    ("--dataset", "imagenet", "unknown dataset"), ("--preset", "huge", "unknown preset"),
])
def test_bad_grids_fail_before_anything_starts(flag, value, message, tmp_path, capsys) -> None:
    argv = ["sweep", *TINY, "--out", str(tmp_path / "o")]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and message in err and "fix:" in err and err.count("error:") == 1, err
    assert "cells on" not in err and RunStore().list() == []  # no Ray, no run


def test_unweighted_methods_are_one_cell_per_ratio_ipc_and_seed() -> None:
    grid = sweep.make_grid("colored-digits", "0.01,0.05", "0.1,1,suggested", "vanilla,kde,fairdd", "10", "0,1")
    cells = sweep.cells(grid)
    assert len(cells) == 2 * 2 * (1 + 3)  # ratios x seeds x (shared + one per kernel variance)
    shared = [c for c in cells if c.kernel_variance is None]
    assert all(c.plan.methods == ("vanilla", "fairdd") and c.plan.request.baseline for c in shared)
    weighted = [c for c in cells if c.kernel_variance is not None]
    assert all(c.plan.methods == ("kde",) and not c.plan.request.baseline for c in weighted)
    assert {c.plan.request.kernel_variance for c in weighted} == {0.1, 1.0, None}
    assert len({c.run_id for c in cells}) == len(cells)



def test_summary_rows_follow_the_requests_method_order_however_the_results_were_read() -> None:
    """A cell computed in this process lists vanilla, kde, then random; one read back from the store has its keys
    sorted (random first). The summary's rows, and so sweep.csv, are the same either way (a resumed sweep whose
    cell finished before its driver died gave random's row first)."""
    from engine.sweep.summary import rows_of
    cell = sweep.cells(sweep.make_grid("colored-digits", "0.05", "0.1", "vanilla,kde", "10", "0"))[0]
    entry = {"accuracy": 50.0, "synthetic_aligned_share": 90.0}
    made = {"dataset": "colored-digits", "real_aligned_share": 95.0, "weights": {},
            "methods": {m: dict(entry) for m in ("vanilla", "kde", "random")}}
    read_back = {**made, "methods": dict(sorted(made["methods"].items()))}
    assert list(read_back["methods"]) == ["kde", "random", "vanilla"]
    assert [r["method"] for r in rows_of([cell], {cell.run_id: made})] == ["vanilla", "kde", "random"]
    assert rows_of([cell], {cell.run_id: read_back}) == rows_of([cell], {cell.run_id: made})

def test_weighted_only_grid_evaluates_the_random_baseline_once_per_ratio_ipc_and_seed() -> None:
    cells = sweep.cells(sweep.make_grid("colored-digits", "0.01,0.05", "0.1,1,suggested", "kde", "10", "0,1"))
    assert len(cells) == 2 * 2 * 3 and all(c.kernel_variance is not None for c in cells)
    with_baseline = [c for c in cells if c.plan.request.baseline]
    assert len(with_baseline) == 2 * 2 and {c.kernel_variance for c in with_baseline} == {0.1}
    assert {(c.ratio, c.seed) for c in with_baseline} == {(r, s) for r in (0.01, 0.05) for s in (0, 1)}


def test_local_sweep_end_to_end_then_a_rerun_reuses_everything(tmp_path, capsys) -> None:
    out = tmp_path / "o"
    rc, printed, err = _cli(["sweep", *TINY, "--methods", "vanilla,kde", "--kernel-variance", "0.1", "--out", str(out),
                             "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(printed)
    assert summary == json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text(encoding="utf-8"))))
    assert sorted(r["method"] for r in rows) == ["kde", "random", "vanilla"] and summary["cells"] == 2
    for r in rows:
        assert float(r["amplification"]) == pytest.approx(float(r["synthetic_aligned_share"]) - float(r["real_aligned_share"]))
    kde = next(r for r in rows if r["method"] == "kde")
    assert kde["kernel_variance"] == "0.1" and float(kde["kernel_variance_used"]) == pytest.approx(0.1)
    assert 0 < float(kde["weights_conflict_weight_mass"]) < 1
    assert summary["best_kernel_variance"][0]["best_by_conflicting_accuracy"] == "0.1"
    assert set(summary["amplification"]) == {"vanilla", "random", "kde@0.1"}
    store = RunStore()
    sweep_row = store.list(kind="sweep")[0]
    assert sweep_row["status"] == "finished" and sweep_row["id"] == summary["run_id"]
    linked = store.get(summary["run_id"])["metrics"]["cell_runs"]
    assert sorted(linked) == sorted({r["run_id"] for r in rows})
    assert all(store.get(i)["status"] == "finished" for i in linked)
    rc, printed, err = _cli(["sweep", *TINY, "--methods", "vanilla,kde", "--kernel-variance", "0.1", "--out",
                             str(out), "--json"], capsys)
    again = json.loads(printed)
    assert rc == 0 and again["reused_cells"] == 2 and again["rows"] == summary["rows"]


def test_cancel_keeps_finished_cells_and_a_rerun_skips_them() -> None:
    grid = sweep.make_grid("colored-digits", "0.05", "0.1,1", "vanilla,kde", "2", "0", preset="tiny")
    seen: list[dict] = []
    stop = lambda: any(ev.step >= 1 and ev.eta is not None for ev in seen)  # noqa: E731
    with pytest.raises(Cancelled):  # 2 CPUs per cell on this 2-core machine: cells run one at a time
        sweep.run_sweep(grid, cpus_per_cell=os.cpu_count() or 1, progress=seen.append, should_stop=stop)
    store = RunStore()
    statuses = {r["id"]: r["status"] for r in store.list(kind="audit")}
    finished = [c for c in sweep.cells(grid) if statuses.get(c.run_id) == "finished"]
    assert 1 <= len(finished) < 3
    assert store.list(kind="sweep")[0]["status"] == "cancelled"
    summary = sweep.run_sweep(grid, cpus_per_cell=os.cpu_count() or 1)
    assert summary["reused_cells"] == len(finished) and summary["cells"] == 3
    assert store.list(kind="sweep")[0]["status"] == "finished"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_joins_a_ray_head_and_brings_the_cells_home(tmp_path, monkeypatch, capsys) -> None:
    """A head in another process, with its own DDAUDIT_HOME: cells run there and are imported here."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port, worker_home = _free_port(), tmp_path / "worker-home"
    token = "5f0c" * 8
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)  # a local ray.init earlier in this process sets RAY_AUTH_MODE
    env = {**os.environ, "DDAUDIT_HOME": str(worker_home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    # --block with its own temp dir: terminating this process stops exactly this head (`ray stop` would stop
    # every Ray on the machine, a user's included)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--temp-dir", temp, "--include-dashboard=false", "--disable-usage-stats"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert head.poll() is None, "ray start --head exited"
        time.sleep(3)  # the GCS listens before the head's raylet has registered
        # the head authenticates by token; a wrong token here is one clear error (Ray retries 2 s, not 20)
        # (in another process: Ray keeps the first token it loads for the life of the process)
        argv = ["sweep", *TINY, "--methods", "vanilla,kde", "--kernel-variance", "0.1", "--address",
                f"127.0.0.1:{port}", "--out", str(tmp_path / "o"), "--json"]
        wrong = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=Path(__file__).resolve().parents[1],
                               env={**os.environ, "RAY_NUM_REDIS_GET_RETRIES": "2", "RAY_AUTH_TOKEN": "0" * 32},
                               capture_output=True, text=True, timeout=120)
        err = wrong.stderr
        assert wrong.returncode != 0 and "the token found here is not the cluster's" in err, err
        assert "copy the head's ~/.ray/auth_token" in err and "Traceback" not in err
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)  # the right token, and no RAY_AUTH_MODE: used by itself
        rc, printed, err = _cli(argv, capsys)
        assert rc == 0, err
        assert "joining with token authentication, token from the RAY_AUTH_TOKEN variable" in err
        summary = json.loads(printed)
        ids = {r["run_id"] for r in summary["rows"]}
        assert all((worker_home / "runs" / i / "results.json").is_file() for i in ids)  # computed on the head
        store = RunStore()
        for i in ids:  # and stored here, files included
            assert store.get(i)["status"] == "finished"
            here = json.loads((store.root / i / "results.json").read_text(encoding="utf-8"))
            there = json.loads((worker_home / "runs" / i / "results.json").read_text(encoding="utf-8"))
            assert here == there and any((store.root / i).glob("*/synthetic.safetensors"))
    finally:
        head.terminate()
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_cells_own_error_comes_back_as_it_is(monkeypatch, tmp_path) -> None:
    """The driver's data check skipped: the worker's DataUnavailable reaches the caller, not a Ray traceback."""
    from engine.errors import DataUnavailable
    grid = sweep.make_grid("cmnist", "0.05", "suggested", "vanilla", "2", "0", preset="tiny",
                           data_root=str(tmp_path))  # an empty folder: no MNIST in it
    monkeypatch.setattr(ray_run, "prepare", lambda g, *a, **k: sweep.cells(g))  # run_sweep's own lookup
    with pytest.raises(DataUnavailable, match="MNIST not found"):
        sweep.run_sweep(grid)
    assert RunStore().list(kind="sweep") == []  # refused before any work was saved: no run left behind


# --------------------------------------------------------------------------- who can reach a local sweep

def test_a_local_sweep_listens_on_loopback_only() -> None:
    """Every TCP listener of the local Ray (GCS, raylet, workers, agents) is on 127.0.0.1 while cells run:
    a laptop on a shared network exposes nothing."""
    import threading
    grid = sweep.make_grid("colored-digits", "0.05", "0.1", "vanilla,kde", "2", "0", preset="tiny")
    outcome: dict = {}
    t = threading.Thread(target=lambda: outcome.update(summary=sweep.run_sweep(grid)))
    t.start()
    seen: set[tuple[str, str, int]] = set()
    while t.is_alive():
        seen.update(listeners(descendants(os.getpid())))
        time.sleep(0.2)
    t.join()
    assert outcome.get("summary", {}).get("cells") == 2
    commands = {cmd for cmd, _, _ in seen}
    assert {"gcs_server", "raylet"} <= commands, seen  # the check saw Ray's listeners, so it could fail
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_a_token_found_here_is_used_to_join_by_itself(monkeypatch, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef", encoding="utf-8")
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ray_run, "TOKEN_FILE", tmp_path / "none")
    assert sweep.auth_token_source() is None and sweep.use_token("10.0.0.1:6379") is None
    assert "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert sweep.use_token(None) is None  # a local Ray needs nothing
    note = sweep.use_token("10.0.0.1:6379")
    assert note and str(token) in note and os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's own choice stays
    assert sweep.use_token("10.0.0.1:6379") is None and os.environ["RAY_AUTH_MODE"] == "disabled"


def test_two_sweeps_of_one_process_take_turns_with_its_ray() -> None:
    """Ray is one per process: two dashboard sessions' sweeps must not share (and shut down) each other's."""
    import threading
    grids = [sweep.make_grid("colored-digits", "0.05", "0.1", "vanilla", "2", str(seed), preset="tiny")
             for seed in (0, 1)]
    out: dict = {}

    def go(i: int) -> None:
        try:
            out[i] = sweep.run_sweep(grids[i])
        except Exception as exc:  # reported below
            out[i] = exc
    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert all(isinstance(out.get(i), dict) and out[i]["cells"] == 1 for i in range(2)), out
    assert {r["status"] for r in RunStore().list(kind="sweep")} == {"finished"}
