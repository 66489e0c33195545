"""`python -m engine weights` end to end on colored-digits: exact JSON keys, the CSV, errors."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli, data, embed

TINY = embed.EmbedPreset(width=8, hidden_dim=32, dim=16, steps=6, batch_size=32, max_train=300, embed_batch=512)
ROOT = Path(__file__).resolve().parents[1]
BASE = ["weights", "--dataset", "colored-digits", "--conflict-ratio", "0.05"]


@pytest.fixture
def small_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick preset, made tiny so the CLI runs in seconds."""
    monkeypatch.setitem(embed.PRESETS, "quick", TINY)


def _run(capsys, *extra: str) -> dict:
    assert cli.main(BASE + list(extra) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_keys_and_values(small_quick, capsys) -> None:
    out = _run(capsys)
    assert list(out) == ["kernel_variance", "temperature", "conflict_fraction", "conflict_weight_mass",
                         "effective_sample_size", "per_class"]
    train = data.load_split("colored-digits", 0.05, "train", 0)
    assert out["conflict_fraction"] == pytest.approx(float((~train.aligned).float().mean()))
    assert out["kernel_variance"] > 0 and out["temperature"] == 1.0
    assert 0 < out["effective_sample_size"] <= len(train)
    assert [c["class"] for c in out["per_class"]] == list(range(10))
    assert all(set(c) == {"class", "conflict_fraction", "conflict_weight_mass"} for c in out["per_class"])
    fixed = _run(capsys, "--kernel-variance", "0.05", "--temperature", "2")
    assert fixed["kernel_variance"] == 0.05 and fixed["temperature"] == 2.0
    assert fixed["effective_sample_size"] != out["effective_sample_size"]


@pytest.mark.slow  # UMAP compiles with numba on first use
def test_csv_rows(small_quick, capsys, tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    _run(capsys, "--csv", str(path))
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    train = data.load_split("colored-digits", 0.05, "train", 0)
    assert list(rows[0]) == ["index", "class", "attribute", "aligned", "density", "weight", "umap_x", "umap_y"]
    assert len(rows) == len(train) and [int(r["index"]) for r in rows] == list(range(len(train)))
    assert [int(r["aligned"]) for r in rows] == train.aligned.int().tolist()
    assert [int(r["attribute"]) for r in rows] == train.attributes.tolist()
    sums = {}
    for r in rows:
        sums[r["class"]] = sums.get(r["class"], 0.0) + float(r["weight"])
        assert 0 < float(r["density"]) <= 1 and r["umap_x"] and r["umap_y"]  # 1,442 rows < the 5,000 cap
    assert all(abs(s - 1) < 1e-5 for s in sums.values())


@pytest.mark.parametrize("extra, words", [
    (["--kernel-variance", "-1"], "kernel variance"),
    (["--kernel-variance", "nan"], "kernel variance"),
    (["--temperature", "0"], "temperature"),
    (["--preset", "huge"], "preset"),
    (["--csv", "/nonexistent-folder/x.csv"], "does not exist"),
    (["--map-points", "1"], "map-points"),
    (["--device", "tpu"], "device"),
])
def test_bad_input_is_one_message(capsys, extra: list[str], words: str) -> None:
    assert cli.main(BASE + extra + ["--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "fix:" in err and "Traceback" not in err


def test_exit_code_in_a_real_process(tmp_path: Path) -> None:
    env = dict(os.environ, DDAUDIT_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "engine", *BASE, "--temperature", "-1", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "temperature" in proc.stderr and "Traceback" not in proc.stderr
