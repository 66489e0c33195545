"""export-split: each format read back by the code that would read it (torchvision's ImageFolder, safetensors,
torch.load(weights_only=True), ddaudit's own DFA reader), earlier exports replaced, bad input refused before
anything is written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli, data, export
from engine.data.folders import DfaSource

DATASET, RATIO, SEED = "colored-digits", 0.05, 1


@pytest.fixture(scope="module")
def splits() -> tuple[data.BiasedSplit, data.BiasedSplit]:
    return data.load_split(DATASET, RATIO, "train", SEED), data.load_split(DATASET, RATIO, "test", SEED)


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _argv(fmt: str, out: Path, ratio: float = RATIO) -> list[str]:
    return ["export-split", "--dataset", DATASET, "--conflict-ratio", str(ratio), "--seed", str(SEED),
            "--format", fmt, "--out", str(out), "--json"]


def _export(fmt: str, out: Path, capsys: pytest.CaptureFixture, ratio: float = RATIO) -> dict:
    rc, stdout, err = _run(_argv(fmt, out, ratio), capsys)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert {"out", "format", "files", "bytes", "seconds"} <= set(summary) and summary["format"] == fmt
    files = [p for p in out.rglob("*") if p.is_file()]
    assert summary["files"] == len(files) and summary["bytes"] == sum(p.stat().st_size for p in files)
    assert not (out / export.STAGING).exists()
    return summary


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def _check_meta(out: Path, fmt: str, train: data.BiasedSplit, test: data.BiasedSplit) -> dict:
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["ddaudit_export"]["format"] == fmt
    assert (meta["dataset"], meta["conflict_ratio"], meta["seed"]) == (DATASET, RATIO, SEED)
    assert meta["class_names"] == list(train.class_names) and meta["attribute_names"] == list(train.attribute_names)
    assert meta["aligned_attribute"] == list(train.aligned_attribute)
    assert meta["image_shape"] == list(train.images.shape[1:])
    assert meta["splits"]["train"] == train.summary() and meta["splits"]["test"] == test.summary()
    from engine.distill import channel_stats
    mean, std = channel_stats(train.images)
    assert meta["normalization"]["mean"] == [float(v) for v in mean]
    assert meta["normalization"]["std"] == [float(v) for v in std] and "Normalize" in meta["normalization"]["note"]
    return meta


def test_imagefolder_reads_back_with_torchvision(splits, tmp_path: Path, capsys) -> None:
    from torchvision.datasets import ImageFolder
    train, test = splits
    out = tmp_path / "folder"
    summary = _export("imagefolder", out, capsys)
    assert summary["files"] == len(train) + len(test) + 2  # the PNGs, manifest.csv, meta.json
    meta = _check_meta(out, "imagefolder", train, test)
    folders = export.class_folders(train.class_names)
    assert meta["files"]["class_folders"] == folders
    manifest = list(csv.DictReader((out / "manifest.csv").read_text(encoding="utf-8").splitlines()))
    assert list(manifest[0]) == list(export.MANIFEST_COLUMNS) and len(manifest) == len(train) + len(test)
    for split in (train, test):
        ds = ImageFolder(str(out / split.split))
        assert ds.class_to_idx == {f: i for i, f in enumerate(folders)}
        order = np.argsort(split.targets.numpy(), kind="stable")  # ImageFolder: class folders, then file names
        assert ds.targets == split.targets[order].tolist()
        pixels = np.stack([np.asarray(ds.loader(path)) for path, _ in ds.samples])
        assert np.array_equal(pixels, _hwc(split.images)[order])
        rows = [r for r in manifest if r["split"] == split.split]  # in the split's own row order
        assert [int(r["class"]) for r in rows] == split.targets.tolist()
        assert [int(r["attribute"]) for r in rows] == split.attributes.tolist()
        assert [bool(int(r["aligned"])) for r in rows] == split.aligned.tolist()
        position = np.empty_like(order)
        position[order] = np.arange(len(order))  # row i of the split is ImageFolder's sample position[i]
        assert [str(out / r["file"]) for r in rows] == [ds.samples[k][0] for k in position]


def test_tensors_read_back_with_safetensors_and_torch_load(splits, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file
    train, test = splits
    out = tmp_path / "tensors"
    _export("tensors", out, capsys)
    _check_meta(out, "tensors", train, test)
    for loaded in (load_file(str(out / "split.safetensors")), torch.load(out / "split.pt", weights_only=True)):
        assert set(loaded) == {f"{s}_{k}" for s in ("train", "test") for k in ("images", "targets", "attributes",
                                                                              "aligned")}
        for s in (train, test):
            for key, want, dtype in (("images", s.images, torch.uint8), ("targets", s.targets, torch.int64),
                                     ("attributes", s.attributes, torch.int64), ("aligned", s.aligned, torch.bool)):
                got = loaded[f"{s.split}_{key}"]
                assert got.dtype == dtype and torch.equal(got, want), key


def _dfa_order(split: data.BiasedSplit, by_kind: bool) -> np.ndarray:
    """The order ddaudit's DFA reader lists an export in: align/ then conflict/ (training), class folders by
    name, files by (zero-padded) index."""
    keys = [((0 if al else 1) if by_kind else 0, str(t), i)
            for i, (t, al) in enumerate(zip(split.targets.tolist(), split.aligned.tolist()))]
    return np.asarray([k[2] for k in sorted(keys)])


def test_dfa_round_trip_through_ddaudits_reader(splits, tmp_path: Path, capsys) -> None:
    train, test = splits
    out = tmp_path / "dfa"
    _export("dfa", out, capsys)
    _check_meta(out, "dfa", train, test)
    assert data.ratio_folders(out) == {"5pct": RATIO}
    c, h = train.images.shape[1], train.images.shape[2]
    source = DfaSource("export", "export", "exported split", h, "resize", train.num_classes, train.num_attributes,
                       train.aligned_attribute)
    found, _ = source.locate(str(out))
    assert found is not None and Path(found.where) == out
    got = found.read(ratio=RATIO, split="train")
    order = _dfa_order(train, True)
    assert c == 3 and np.array_equal(got.train_images, train.images.numpy()[order])
    assert np.array_equal(got.train_labels, train.targets.numpy()[order])
    assert np.array_equal(got.train_attributes, train.attributes.numpy()[order])
    got = found.read(ratio=RATIO, split="test")
    order = _dfa_order(test, False)
    assert np.array_equal(got.test_images, test.images.numpy()[order])
    assert np.array_equal(got.test_labels, test.targets.numpy()[order])
    assert np.array_equal(got.test_attributes, test.attributes.numpy()[order])
    # an export of another ratio replaces this one: its <pct> folder goes, a user's file beside it stays
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    _run(_argv("dfa", out, 0.1), capsys)
    assert data.ratio_folders(out) == {"10pct": 0.1} and (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_pct_folder_names_parse_back() -> None:
    for ratio in (0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1e-7, 0.123456789):
        name = export.pct_folder(ratio)
        assert "e" not in name and abs(float(name[:-3]) / 100 - ratio) <= 1e-9 * ratio, name
    assert [export.pct_folder(r) for r in (0.005, 0.01, 0.05)] == ["0.5pct", "1pct", "5pct"]


def test_class_folders_sort_in_class_order() -> None:
    names = tuple(f"class {i}/x" for i in range(12))
    folders = export.class_folders(names)
    assert sorted(folders) == folders and folders[0] == "00_class-0-x" and folders[11] == "11_class-11-x"
    assert export.class_folders(("age 0-19", "..", "")) == ["00_age-0-19", "01_class", "02_class"]


def test_a_failed_export_leaves_the_earlier_one_intact(splits, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "t"
    plan = export.plan_export(DATASET, RATIO, SEED, None, "tensors")
    events: list = []
    export.export_split(plan, out, progress=events.append)
    assert events[-1].step == events[-1].total and events[-1].stage == "export tensors"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        (args[3] / "split.pt").write_bytes(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setitem(export.WRITERS, "tensors", broken)
    with pytest.raises(OSError):
        export.export_split(plan, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "new" / "deeper"
    with pytest.raises(OSError):
        export.export_split(plan, fresh)
    assert not (tmp_path / "new").exists()


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case, words", [
    ("format", "unknown export format"),
    ("store", "run store"),
    ("foreign", "holds no ddaudit export"),
    ("other-format", "holds a ddaudit tensors export"),
    ("dataset", "no-such-dataset"),
    ("ratio", "ratio"),
    ("seed", "seed"),
])
def test_bad_input_exits_2_and_writes_nothing(case: str, words: str, tmp_path: Path, fresh_home: Path,
                                              capsys) -> None:
    out = tmp_path / "out"
    argv = _argv("imagefolder", out)
    if case == "format":
        argv[argv.index("imagefolder")] = "zip"
    elif case == "store":
        out = fresh_home / "runs" / "x"
        argv[argv.index("--out") + 1] = str(out)
    elif case == "foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work", encoding="utf-8")
    elif case == "other-format":
        out.mkdir()
        (out / "split.pt").write_bytes(b"x")
        (out / "meta.json").write_text(json.dumps({"ddaudit_export": {"format": "tensors"}}), encoding="utf-8")
    else:
        flag = {"dataset": "--dataset", "ratio": "--conflict-ratio", "seed": "--seed"}[case]
        argv[argv.index(flag) + 1] = {"dataset": "no-such-dataset", "ratio": "1.5", "seed": "-1"}[case]
    before = _listing(tmp_path), _listing(fresh_home) if fresh_home.exists() else {}
    rc, stdout, err = _run(argv, capsys)
    assert rc == 2 and stdout == ""
    assert err.startswith("error: ") and words.lower() in err.lower() and "\n  fix: " in err, err
    assert "Traceback" not in err
    assert (_listing(tmp_path), _listing(fresh_home) if fresh_home.exists() else {}) == before
    if case in ("format", "dataset", "ratio", "seed"):
        assert not out.exists()


def test_bench_export_runs_at_the_smallest_size(tmp_path: Path) -> None:
    from bench import bench_export as B
    rows = B.run(DATASET, RATIO, ("tensors",), tmp=str(tmp_path))
    assert [r["what"] for r in rows] == ["load split", "tensors"]
    assert rows[1]["files"] == 3 and rows[1]["mb"] > 0 and rows[1]["met"] in (True, False)
    assert list(tmp_path.iterdir()) == []  # its temp folder is removed
