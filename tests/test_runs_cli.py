"""`python -m engine runs ...`: list, show, compare, rm, clean, cancel; bad ids exit 2 with nothing written."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import cli
from engine.store import RunStore

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """engine.cli.main in-process: (exit code, stdout, stderr); argparse's SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2, exactly one line starting with `error:`, no traceback, the message names the problem."""
    assert code == 2, err
    assert err.startswith("error:") and sum(line.startswith("error:") for line in err.splitlines()) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def populated(fresh_home: Path) -> dict[str, str]:
    """Three runs in DDAUDIT_HOME/runs: finished audit, finished distill, failed audit."""
    store = RunStore()
    ids = {}
    with store.run("audit", {"dataset": "colored-digits", "ipc": 10}) as run:
        run.save_tensors("vanilla/synthetic.safetensors", {"x": torch.zeros(2, 3)})
        run.finish({"methods": {"vanilla": {"accuracy": 80.0}, "fairdd": {"accuracy": 90.0}}})
    ids["audit"] = run.id
    with store.run("distill", {"dataset": "colored-digits", "ipc": 1}) as run:
        run.finish({"seconds": 1.5})
    ids["distill"] = run.id
    with pytest.raises(RuntimeError):
        with store.run("audit", {"dataset": "colored-digits", "ipc": 50}) as run:
            raise RuntimeError("boom")
    ids["failed"] = run.id
    return ids


def test_list_json_empty_store_writes_nothing(fresh_home: Path) -> None:
    code, out, err = run_cli("runs", "list", "--json")
    assert (code, json.loads(out)) == (0, []), err
    assert not (fresh_home / "runs").exists()


def test_list_show_and_filter(populated: dict[str, str]) -> None:
    code, out, _ = run_cli("runs", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == set(populated.values())
    assert rows[populated["audit"]]["metrics"] == {"methods.vanilla.accuracy": 80.0, "methods.fairdd.accuracy": 90.0}
    assert rows[populated["failed"]]["status"] == "failed" and rows[populated["failed"]]["error"] == "RuntimeError: boom"

    code, out, _ = run_cli("runs", "list", "--kind", "distill", "--json")
    assert [r["id"] for r in json.loads(out)] == [populated["distill"]]
    code, out, _ = run_cli("runs", "list")  # the readable table
    assert code == 0 and all(i in out for i in populated.values())

    code, out, _ = run_cli("runs", "show", populated["audit"], "--json")
    info = json.loads(out)
    assert code == 0 and info["status"] == "finished" and info["problems"] == []
    assert "vanilla/synthetic.safetensors" in info["files"] and info["metrics"]["methods"]["fairdd"]["accuracy"] == 90


def test_show_reports_damaged_files_with_exit_2(populated: dict[str, str], fresh_home: Path) -> None:
    path = fresh_home / "runs" / populated["audit"] / "vanilla" / "synthetic.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    code, out, err = run_cli("runs", "show", populated["audit"], "--json")
    assert_user_error(code, err, "damaged", "synthetic.safetensors")
    assert json.loads(out)["problems"]  # the details are still printed


def test_compare(populated: dict[str, str]) -> None:
    code, out, err = run_cli("runs", "compare", populated["audit"], populated["failed"], "--json")
    cmp = json.loads(out)
    assert code == 0, err
    assert cmp["config_diff"] == {"ipc": {populated["audit"]: 10, populated["failed"]: 50}}
    assert cmp["metrics"]["methods.vanilla.accuracy"] == {populated["audit"]: 80.0, populated["failed"]: None}


def test_rm_and_clean(populated: dict[str, str], fresh_home: Path) -> None:
    code, out, _ = run_cli("runs", "rm", populated["distill"], "--yes")
    assert code == 0 and not (fresh_home / "runs" / populated["distill"]).exists()
    assert_user_error(*run_cli("runs", "rm", populated["distill"], "--yes")[::2], "no run named")

    code, out, _ = run_cli("runs", "clean", "--status", "failed", "--yes")
    assert code == 0 and populated["failed"] in out
    code, out, _ = run_cli("runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [populated["audit"]]


def test_cancel_only_running_runs(populated: dict[str, str], fresh_home: Path) -> None:
    assert_user_error(*run_cli("runs", "cancel", populated["audit"])[::2], "not running")
    run, _ = RunStore().start("audit", {"dataset": "colored-digits", "ipc": 2})
    code, out, err = run_cli("runs", "cancel", run.id)
    assert code == 0 and run.should_stop(), err


@pytest.mark.parametrize("argv", [
    ("runs", "show", "../x"), ("runs", "show", "../../etc/passwd", "--json"), ("runs", "rm", "../x", "--yes"),
    ("runs", "rm", "a/b"), ("runs", "cancel", ".."), ("runs", "compare", "ok-id", "../x"),
    ("runs", "list", "--kind", "../x"), ("runs", "list", "--status", "bogus"), ("runs", "clean", "--status", "running"),
    ("runs", "show", "no-such-run"), ("runs",),
])
def test_bad_arguments_exit_2_and_write_nothing(fresh_home: Path, argv: tuple[str, ...]) -> None:
    code, out, err = run_cli(*argv)
    assert_user_error(code, err)
    assert not (fresh_home / "runs").exists()


def test_bad_run_id_in_a_real_process(tmp_path: Path) -> None:
    """End to end through `python -m engine`: no traceback, exit 2, DDAUDIT_HOME/runs untouched."""
    home = tmp_path / "home"
    env = {**os.environ, "DDAUDIT_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "engine", "runs", "show", "../x", "--json"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, "not a safe name")
    assert proc.stdout == "" and not (home / "runs").exists()
