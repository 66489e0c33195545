"""The CI entry point's disk check: a low-space machine gets a warning naming the fix, not a failure."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISK_CHECK = ROOT / ".ci" / "disk_check"


def run_with_fake_df(tmp_path: Path, free_kb: int) -> subprocess.CompletedProcess:
    """Run .ci/disk_check with a `df` on PATH that reports `free_kb` available."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_df = bin_dir / "df"
    fake_df.write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/fake 100000000 1 {free_kb} 1% /fake-mount'\n"
    , encoding="utf-8")
    fake_df.chmod(fake_df.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(DISK_CHECK), str(tmp_path), "10"], env=env,
                          capture_output=True, text=True, timeout=30)


def test_low_disk_warns_with_the_fix(tmp_path: Path) -> None:
    result = run_with_fake_df(tmp_path, free_kb=3 * 1048576)
    assert result.returncode == 0
    assert "only 3 GB free on /fake-mount" in result.stderr
    assert "No space left on device" in result.stderr


def test_enough_disk_is_silent(tmp_path: Path) -> None:
    result = run_with_fake_df(tmp_path, free_kb=40 * 1048576)
    assert result.returncode == 0
    assert result.stderr == ""


def test_real_df_runs(tmp_path: Path) -> None:
    """Against the real `df`, the script parses its output without error (whatever the free space)."""
    result = subprocess.run(["bash", str(DISK_CHECK), str(tmp_path), "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("line", ["export PIP_NO_CACHE_DIR=1", "bash .ci/disk_check . 10"])
def test_ci_run_uses_the_space_saving_steps(line: str) -> None:
    assert line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
