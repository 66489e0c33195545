"""`python -m engine distill`: tiny end-to-end run, and bad input -> one message + fix, exit 2, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import cli
from engine import distill as D

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import density

    seen = {}

    def fake_weights(train, **kwargs):  # the KDE model itself is tested in test_density.py
        seen.update(kwargs)
        w = torch.rand(len(train), generator=torch.Generator().manual_seed(0)) + 0.5
        w = w / torch.zeros(train.num_classes).index_add_(0, train.targets, w)[train.targets]
        return density.WeightResult(w, torch.zeros(len(train)), 1.0, 1.0)

    monkeypatch.setattr(density, "training_weights", fake_weights)
    out = tmp_path / "syn"
    code, stdout, err = _run(["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05",
                              "--methods", "vanilla,kde,fairdd", "--algorithm", "dm", "--ipc", "2",
                              "--preset", "quick", "--iterations", "3", "--kernel-variance", "0.5",
                              "--device", "cpu", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["iterations"] == 3 and res["out"] == str(out) and res["seconds"] > 0
    assert set(res["methods"]) == {"vanilla", "kde", "fairdd"}
    assert seen["kernel_variance"] == 0.5
    for m, info in res["methods"].items():
        assert info["final_loss"] > 0 and info["seconds"] > 0
        s = D.load_synthetic(out / m)
        assert s.images.shape == (20, 3, 32, 32) and (out / m / "grid.png").exists()
    assert "computed" in err
    # an identical request is served from the run store; --force recomputes
    code, stdout2, err = _run(["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05",
                               "--methods", "vanilla,kde,fairdd", "--algorithm", "dm", "--ipc", "2",
                               "--preset", "quick", "--iterations", "3", "--kernel-variance", "0.5",
                               "--device", "cpu", "--out", str(tmp_path / "again"), "--json"], capsys)
    assert code == 0 and "reused" in err and json.loads(stdout2)["run_id"] == res["run_id"]
    assert torch.equal(D.load_synthetic(tmp_path / "again" / "kde").images, D.load_synthetic(out / "kde").images)


@pytest.mark.parametrize("bad", [
    ["--methods", "vanilla,magic"],
    ["--ipc", "0"],
    ["--ipc", "5000"],
    ["--ipc", "two"],
    ["--iterations", "0"],
    ["--iterations", "-3"],
    ["--algorithm", "gm"],
    ["--preset", "slow"],
    ["--conflict-ratio", "1.5"],
    ["--dataset", "nope"],
    ["--kernel-variance", "-1"],
])
def test_bad_input_exit_2_and_nothing_written(bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = {"--dataset": "colored-digits", "--conflict-ratio": "0.05", "--methods": "vanilla", "--ipc": "1",
            "--preset": "quick", "--iterations": "1", "--out": str(tmp_path / "out")}
    args.update(dict(zip(bad[::2], bad[1::2])))
    code, _, err = _run(["distill"] + [x for kv in args.items() for x in kv], capsys)
    assert code == 2
    assert err.startswith("error: ") and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_subprocess_bad_input_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "engine", "distill", "--conflict-ratio", "0.05", "--ipc", "-1",
                           "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr
