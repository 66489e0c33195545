"""The hostile probe's failures, one class per test: damaged stored bytes, OS errors a user can act on,
malformed data files. Each failed on the code before these fixes."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine import cache, data
from tests.fakes import _write_idx, make_bffhq, make_idx_dir
from tests.test_cli_inputs import run_cli

DISTILL = ["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods", "vanilla,fairdd",
           "--ipc", "1", "--preset", "tiny", "--json"]


def _flip_in_header(path: Path, needle: bytes, keep_json: bool) -> None:
    """Change one byte of the safetensors JSON header near `needle` (a digit for a digit: valid JSON)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    at = raw.index(needle, 8, 8 + n) + len(needle)
    while keep_json and not chr(raw[at]).isdigit():
        at += 1
    raw[at] = (ord("7") if raw[at] != ord("7") else ord("3")) if keep_json else ord("{")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("keep_json", [True, False], ids=["valid-json", "broken-json"])
def test_damaged_metadata_is_reported_and_never_a_dead_end(fresh_home, tmp_path, keep_json: bool) -> None:
    rc, out, err = run_cli(DISTILL + ["--out", str(tmp_path / "a")])
    assert rc == 0, err
    run_id = json.loads(out)["run_id"]
    target = fresh_home / "runs" / run_id / "vanilla" / "synthetic.safetensors"
    _flip_in_header(target, b"final_loss", keep_json)
    rc, out, err = run_cli(["runs", "show", run_id, "--json"])
    assert rc == 2 and "damaged" in err and "vanilla/synthetic.safetensors" in err and "Traceback" not in err, err
    rc, out, err = run_cli(DISTILL + ["--out", str(tmp_path / "b")])  # a rerun recomputes the damaged run
    assert rc == 0 and "computed" in err, err
    _flip_in_header(target, b"final_loss", keep_json)
    rc, _, err = run_cli(DISTILL + ["--out", str(tmp_path / "c"), "--force"])
    assert rc == 0 and "computed" in err, err
    _flip_in_header(target, b"final_loss", keep_json)
    rc, _, err = run_cli(["runs", "rm", run_id, "--yes"])
    assert rc == 0 and not (fresh_home / "runs" / run_id).exists(), err


def test_damaged_dataset_cache_metadata_is_rebuilt(fresh_home) -> None:
    first = data.load_split("colored-digits", 0.05, "train", seed=3)
    f = next((fresh_home / "cache" / "datasets").glob("colored-digits-train-*.safetensors"))
    _flip_in_header(f, b"seed", keep_json=True)
    again = data.load_split("colored-digits", 0.05, "train", seed=3)
    assert np.array_equal(first.images.numpy(), again.images.numpy())
    cache.load_tensors(f)  # rebuilt and intact again


def test_force_recomputes_past_a_corrupt_checkpoint(fresh_home, tmp_path) -> None:
    from engine import pipeline, stored
    from engine.errors import Cancelled
    req = pipeline.Request("colored-digits", 0.05, methods=("vanilla",), ipc=1, preset="tiny", track_every=0,
                           distill_overrides={"iterations": 4, "checkpoint_every": 1})  # no probe: stops in the loop
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        stored.distill_stored(req, should_stop=lambda: next(calls) >= 2)
    ckpt = next((fresh_home / "runs").glob("distill-*/checkpoints/*/checkpoint.safetensors"))
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # damaged beyond reading
    argv = ["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods", "vanilla", "--ipc",
            "1", "--preset", "tiny", "--iterations", "4", "--track-every", "0", "--out", str(tmp_path / "o")]
    rc, _, err = run_cli(argv)
    assert rc == 2 and "corrupt" in err and "fix:" in err, err  # resuming would read it: said clearly
    rc, _, err = run_cli(argv + ["--force"])
    assert rc == 0 and "computed" in err, err  # from scratch, as RUNS.md says


def test_full_disk_is_one_clear_error_and_nothing_half_written(fresh_home, tmp_path, monkeypatch) -> None:
    real = cache.atomic_write_bytes

    def full(path, payload):
        if str(path).endswith("synthetic.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, payload)
    monkeypatch.setattr(cache, "atomic_write_bytes", full)
    rc, _, err = run_cli(DISTILL + ["--out", str(tmp_path / "o")])
    assert rc == 2 and "disk is full" in err and "free some disk space" in err and "internal error" not in err, err
    assert not list((fresh_home / "runs").rglob("synthetic.safetensors"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["home", "runs", "cache"])
def test_a_file_where_a_folder_should_be(tmp_path, monkeypatch, where: str) -> None:
    home = tmp_path / "home"
    if where == "home":
        home.write_text("not a folder", encoding="utf-8")
    else:
        (home / "cache").mkdir(parents=True) if where == "cache" else home.mkdir()
        (home / ("runs" if where == "runs" else "cache/datasets")).write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("DDAUDIT_HOME", str(home))
    rc, _, err = run_cli(DISTILL + ["--out", str(tmp_path / "o")])
    assert rc == 2 and "not a folder" in err and "fix:" in err and "internal error" not in err, err


def _summary(root: Path, dataset: str, ratio: str = "0.1") -> tuple[int, str]:
    rc, _, err = run_cli(["summary", "--dataset", dataset, "--conflict-ratio", ratio, "--data-root", str(root),
                          "--json"], limit_s=60)
    return rc, err


@pytest.mark.parametrize("damage", ["text-as-png", "fifo-as-png"])
def test_bad_files_in_an_image_folder(tmp_path, damage: str, fresh_home) -> None:
    root = make_bffhq(tmp_path / "d")
    bad = root / "bffhq" / "20pct" / "align" / "999_0_0.png"
    if damage == "fifo-as-png":
        os.mkfifo(bad)
    else:
        bad.write_text("this is not a png", encoding="utf-8")
    rc, err = _summary(root, "bffhq", "0.2")
    assert rc == 2 and "999_0_0.png" in err and "fix:" in err and "internal error" not in err, err


@pytest.mark.parametrize("damage", ["label-out-of-range", "count-mismatch"])
def test_malformed_idx_files(tmp_path, damage: str, fresh_home) -> None:
    raw = make_idx_dir(tmp_path / "d" / "MNIST" / "raw", gz=False)
    labels = np.repeat(np.arange(10), 30)
    if damage == "label-out-of-range":
        labels[5] = 12
    else:
        labels = labels[:-3]
    (raw / "train-labels-idx1-ubyte").unlink()
    _write_idx(raw / "train-labels-idx1-ubyte", labels, gz=False)
    rc, err = _summary(tmp_path / "d", "cmnist")
    assert rc == 2 and ("label 12" in err or "labels" in err) and "re-download" in err, err

