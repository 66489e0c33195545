"""Faults a lab meets on shared machines, with real processes: a Ray worker SIGKILLed mid-cell, the sweep's
driver SIGKILLed, and a disk that fills up during a cell. Each ends in the results of an undisturbed sweep
(sweep.csv byte for byte) or in one clear error that leaves no corrupted run behind."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import sweep
from engine.store import RunStore
from engine.store.records import pid_alive

from .procs import descendants

ROOT = Path(__file__).resolve().parents[1]
# one cell, long enough (300 tiny DM iterations, a checkpoint every 20) to be killed between checkpoints
GRID = dict(dataset="colored-digits", ratios="0.05", kernel_variances="0.1", methods="vanilla", ipcs="2", seeds="0",
            preset="tiny", overrides={"distill": {"iterations": 300, "checkpoint_every": 20}})
SWEEP = f"""
import sys
from engine import sweep
summary = sweep.run_sweep(sweep.make_grid(**{GRID!r}))
sys.stdout.write(sweep.to_csv(summary["rows"]))
"""


def _grid() -> sweep.Grid:
    return sweep.make_grid(**GRID)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> str:
    """sweep.csv of the grid run once without any fault, in a home of its own."""
    home = tmp_path_factory.mktemp("undisturbed")
    done = subprocess.run([sys.executable, "-c", SWEEP], cwd=ROOT, env={**os.environ, "DDAUDIT_HOME": str(home)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _first_checkpoint(home: Path, timeout: float = 180) -> None:
    t0 = time.time()
    while not glob.glob(str(home / "runs" / "audit-*" / "checkpoints" / "*" / "checkpoint.safetensors")):
        assert time.time() - t0 < timeout, "no checkpoint written"
        time.sleep(0.1)


def _workers() -> list[int]:
    """Pids of this test's Ray workers running a cell (processes under this one named ray::_run_cell)."""
    return [pid for pid, name in descendants(os.getpid()).items() if name == "ray::_run_cell"]


def _cell_log(home: Path) -> str:
    return next((home / "runs").glob("audit-*/log.txt")).read_text(encoding="utf-8")


def test_a_killed_ray_worker_mid_cell_is_retried_and_resumes(fresh_home, undisturbed) -> None:
    outcome: dict = {}
    t = threading.Thread(target=lambda: outcome.update(summary=sweep.run_sweep(_grid())))
    t.start()
    _first_checkpoint(fresh_home)
    workers = _workers()
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    t.join(600)
    assert "summary" in outcome, "the sweep did not finish after its worker was killed"
    assert sweep.to_csv(outcome["summary"]["rows"]) == undisturbed
    log = _cell_log(fresh_home)
    assert "resuming: found" in log and "(attempt 2)" in log, log  # retried by Ray, resumed from the checkpoint
    cell = RunStore().list(kind="audit")[0]
    assert cell["status"] == "finished" and not RunStore().problems(cell["id"])


def test_a_killed_sweep_driver_resumes_on_rerun(fresh_home, undisturbed) -> None:
    env = {**os.environ, "DDAUDIT_HOME": str(fresh_home)}
    driver = subprocess.Popen([sys.executable, "-c", SWEEP], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    _first_checkpoint(fresh_home)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    cell = RunStore().index.get_row(RunStore().list(kind="audit")[0]["id"])  # its worker's pid, host, start
    # the local Ray's raylet dies with its driver and takes the cell's worker along within seconds
    t0 = time.time()
    while pid_alive(cell["pid"], cell["host"], cell["pid_start"]):
        assert time.time() - t0 < 60, "the killed driver's worker is still computing"
        time.sleep(0.2)
    rerun = subprocess.run([sys.executable, "-c", SWEEP], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout == undisturbed
    log = _cell_log(fresh_home)
    assert "interrupted: process" in log and "resuming: found" in log, log
    assert [r["status"] for r in RunStore().list(kind="sweep")] == ["finished"]


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs a mount namespace (unshare -rm) for a small tmpfs")
def test_a_full_disk_during_a_cell_is_one_clear_error_and_no_corrupted_run(fresh_home, tmp_path, undisturbed) -> None:
    """The store's folder is a real 150 KB tmpfs: the cell's first checkpoint does not fit. One message names
    the problem and the fix; every file left is whole; with room again the same sweep finishes as if undisturbed."""
    runs = fresh_home / "runs"
    runs.mkdir(parents=True)
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP, encoding="utf-8")
    cli = (f"{sys.executable} -m engine sweep --dataset colored-digits --conflict-ratio 0.05 --methods vanilla "
           f"--ipc 2 --preset tiny --out {tmp_path / 'o'}")
    shell = (f"mount -t tmpfs -o size=150k tmpfs {runs} && {cli} 2> {tmp_path / 'err'}; echo $? > {tmp_path / 'rc'}; "
             f"{sys.executable} -c 'from engine.store import RunStore; s = RunStore(); "
             f"print([(r[\"kind\"], r[\"status\"], s.problems(r[\"id\"])) for r in s.list()])' > {tmp_path / 'after'}; "
             f"mount -o remount,size=20m {runs} && {sys.executable} {script} > {tmp_path / 'csv'}")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", shell], cwd=ROOT,
                          env={**os.environ, "DDAUDIT_HOME": str(fresh_home), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    err = (tmp_path / "err").read_text(encoding="utf-8")
    assert (tmp_path / "rc").read_text(encoding="utf-8").strip() == "2", err
    assert "error: the disk is full (writing" in err and "free some disk space" in err, err
    assert "Traceback" not in err and "internal error" not in err
    after = (tmp_path / "after").read_text(encoding="utf-8")
    assert "('audit', 'failed', [])" in after and "('sweep', 'failed', [])" in after, after  # marked, nothing torn
    assert (tmp_path / "csv").read_text(encoding="utf-8") == undisturbed  # and it resumes once there is room
