"""Image-folder datasets on small generated files: the DFA release (cmnist, cifar10c, bffhq), UTKFace, CelebA."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli, data, distill, nets, pipeline
from engine.errors import DataUnavailable, InvalidArgument
from tests.fakes import make_celeba, make_dfa, make_utkface

pytestmark = pytest.mark.usefixtures("fresh_home")


# --------------------------------------------------------------------------- DFA release

@pytest.mark.parametrize("class_dirs", [True, False])
def test_dfa_ratio_picks_the_folder_and_keeps_its_files(tmp_path: Path, class_dirs: bool) -> None:
    root = make_dfa(tmp_path, "cmnist", 10, 10, 28, {"1pct": 1, "5pct": 3}, class_dirs=class_dirs)
    one, five = (data.load_split("cmnist-dfa", r, "train", data_root=root) for r in (0.01, 0.05))
    assert len(one) == len(five) == 100  # every file of the folder, none subsampled
    assert int((~one.aligned).sum()) == 10 and int((~five.aligned).sum()) == 30
    # 28x28 is padded to 32x32 on black (FairDD), and the bias comes from the file name: red = 10 + 20 * bias
    assert five.images.shape[1:] == (3, 32, 32) and int(five.images[:, :, :2].max()) == 0
    assert torch.equal(five.images[:, 0, 16, 16].long(), 10 + 20 * five.attributes)
    test = data.load_split("cmnist-dfa", 0.05, "test", data_root=root)
    assert len(test) == 40 and test.summary()["n_conflicting"] == 30  # the release's test set, as named


def test_dfa_ratio_without_a_folder_lists_the_folders(tmp_path: Path) -> None:
    root = make_dfa(tmp_path, "cifar10c", 10, 10, 32, {"0.5pct": 1, "2pct": 1})
    with pytest.raises(DataUnavailable) as err:
        data.load_split("cifar10c-dfa", 0.05, "train", data_root=root)
    assert "on disk: 0.5pct (--conflict-ratio 0.005), 2pct (--conflict-ratio 0.02)" in err.value.problem
    assert data.dataset_status("cifar10c-dfa", root)["conflict_ratios"] == [0.005, 0.02]


def _dfa(tmp_path: Path) -> Path:
    return make_dfa(tmp_path, "cmnist", 10, 10, 28, {"5pct": 2})


@pytest.mark.parametrize("damage, message", [
    ("misnamed", "misnamed"), ("wrong-class-folder", "class folder 3"), ("aligned-in-conflict", "conflict/"),
    ("conflicting-in-align", "align/"), ("bias-out-of-range", "bias 12"), ("unreadable", "not a readable image"),
    ("no-test", "no test set"), ("empty-test", "no PNG files"),
])
def test_dfa_malformed_folders_get_one_clear_error(tmp_path: Path, damage: str, message: str) -> None:
    root = _dfa(tmp_path)
    base = root / "cmnist"
    align3 = base / "5pct" / "align" / "3"
    example = next(align3.iterdir())
    if damage == "misnamed":
        example.rename(align3 / "photo.png")
    elif damage == "wrong-class-folder":
        example.rename(align3 / "999_5_5.png")
    elif damage == "aligned-in-conflict":
        example.rename(base / "5pct" / "conflict" / "3" / "999_3_3.png")
    elif damage == "conflicting-in-align":
        example.rename(align3 / "999_3_4.png")
    elif damage == "bias-out-of-range":
        example.rename(base / "5pct" / "conflict" / "3" / "999_3_12.png")
    elif damage == "unreadable":
        example.write_bytes(b"not a png")
    elif damage == "no-test":
        os.rename(base / "test", base / "elsewhere")
    else:
        for p in (base / "test").rglob("*.png"):
            p.unlink()
    with pytest.raises(DataUnavailable) as err:
        data.load_pair("cmnist-dfa", 0.05, data_root=root)
    assert message in err.value.problem and err.value.fix, err.value.problem


def test_dfa_status_reports_a_missing_test_set_without_raising(tmp_path: Path) -> None:
    root = _dfa(tmp_path)
    os.rename(root / "cmnist" / "test", root / "cmnist" / "elsewhere")
    status = data.dataset_status("cmnist-dfa", root)
    assert not status["available"] and "no test set" in status["source"]


# --------------------------------------------------------------------------- UTKFace

def test_utkface_age_buckets_race_and_a_balanced_fixed_test(tmp_path: Path) -> None:
    root = make_utkface(tmp_path, per_group=10)
    tr, te = data.load_pair("utkface", 0.2, seed=0, data_root=root)
    assert tr.class_names == ("age 0-19", "age 20-39", "age 40+") and tr.num_attributes == 4  # race 4 dropped
    assert tr.aligned_attribute == (0, 0, 0)  # race 0 is each bucket's most frequent (3x the others)
    assert (te.counts() == te.counts()[0, 0]).all() and te.counts()[0, 0] == 2  # 20% of 10, balanced
    # the race is read from the name: the generated red channel is 20 + 40 * race (give or take JPEG)
    assert torch.equal(torch.bucketize(tr.images[:, 0].float().mean((1, 2)), torch.tensor([40.0, 80, 120])), tr.attributes)
    for c in range(3):
        n = int((tr.targets == c).sum())
        assert int(((tr.targets == c) & ~tr.aligned).sum()) == data.conflict_count(n, 0.2)
    other_seed = data.load_split("utkface", 0.2, "test", seed=5, data_root=root)
    assert torch.equal(other_seed.images, te.images)  # the test split does not depend on the seed


def test_utkface_a_few_misnamed_files_are_skipped_many_are_an_error(tmp_path: Path) -> None:
    root = make_utkface(tmp_path, per_group=10)
    files = sorted((root / "UTKFace").iterdir())
    files[0].rename(files[0].with_name("39_1_20170116174525125.jpg.chip.jpg"))  # the release's known kind of slip
    assert len(data.load_split("utkface", 0.2, "train", data_root=root, use_cache=False)) > 0
    for p in files[1:40]:
        p.rename(p.with_name("face-" + p.name))
    with pytest.raises(DataUnavailable, match="misnamed"):
        data.load_split("utkface", 0.2, "train", data_root=root, use_cache=False)


# --------------------------------------------------------------------------- CelebA

def test_celeba_default_and_variants(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    tr = data.load_split("celeba", 0.2, "train", data_root=root)
    assert tr.class_names == ("not Attractive", "Attractive") and tr.attribute_names == ("not Male", "Male")
    assert tr.aligned_attribute == (0, 1)  # the fake makes attractive faces mostly male, the others female
    assert torch.equal((tr.images[:, 0].float().mean((1, 2)) > 110).long(), tr.attributes)  # Male is the red channel
    te = data.load_split("celeba", 0.2, "test", data_root=root)
    counts = te.counts()
    assert (counts[:, 0] == counts[:, 1]).all() and counts.sum() > 0  # balanced within each class
    spec = data.get_spec("celeba:size=32,attribute=Male,target=Smiling")
    assert spec.name == "celeba:size=32,target=Smiling" and spec.image_shape == (3, 32, 32)  # canonical, defaults out
    assert data.get_spec("celeba:target=Attractive").name == "celeba"
    small = data.load_split("celeba:target=Smiling,size=32", 0.2, "train", data_root=root)
    assert small.images.shape[1:] == (3, 32, 32) and small.class_names[1] == "Smiling"


@pytest.mark.parametrize("name, message", [
    ("celeba:target=Handsome", "no attribute 'Handsome'"), ("celeba:target=Male", "both 'Male'"),
    ("celeba:size=48", "size '48'"), ("celeba:colour=red", "bad option"), ("celeba:size", "bad option"),
    ("bffhq:size=32", "has no options"), ("utkface:size=32,size=64", "each once"), ("nope:size=1", "unknown dataset"),
])
def test_bad_variant_names(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        data.get_spec(name)


def test_celeba_malformed_attribute_file(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    path = root / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace("-1", "0", 1)
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataUnavailable, match="line 6 is malformed"):
        data.load_split("celeba", 0.2, "train", data_root=root)


def test_aligned_attribute_is_the_most_frequent_ties_lowest() -> None:
    from engine.data.folders import most_frequent_attribute
    targets, attrs = np.array([0, 0, 0, 1, 1, 2, 2]), np.array([2, 2, 1, 3, 1, 0, 2])
    assert most_frequent_attribute(targets, attrs, 3, 4) == (2, 1, 0)


# --------------------------------------------------------------------------- 64x64 through the pipeline

def test_a_64x64_convnet_has_one_more_block() -> None:
    assert nets.ConvNetConfig(image_size=32).blocks() == 3 and nets.ConvNetConfig(image_size=64).blocks() == 4
    net = nets.ConvNet(nets.ConvNetConfig(image_size=64, width=8))
    assert net.feature_dim == 8 * 4 * 4 and net(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("dataset, make, ratio", [
    ("utkface", lambda r: make_utkface(r), "0.2"), ("celeba", lambda r: make_celeba(r), "0.2"),
    ("bffhq", lambda r: make_dfa(r, "bffhq", 2, 2, 40, {"0.5pct": 2}, class_dirs=False), "0.005"),
])
def test_faces_audit_end_to_end(dataset, make, ratio, tiny_presets, tmp_path: Path, capsys, one_thread) -> None:
    """SupCon, KDE, distillation, evaluation and the audit files at 64x64, through the real CLI."""
    root = make(tmp_path / "raw")
    out = tmp_path / "run"
    rc = cli.main(["audit", "--dataset", dataset, "--conflict-ratio", ratio, "--data-root", str(root), "--ipc", "2",
                   "--methods", "vanilla,kde,fairdd", "--eval-seeds", "1", "--out", str(out), "--json"])
    printed, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(printed)
    assert set(res["methods"]) == {"vanilla", "kde", "fairdd", "random"} and res["dataset"] == dataset
    for method in ("vanilla", "kde", "fairdd"):
        assert distill.load_synthetic(out / method).images.shape[1:] == (3, 64, 64)
        assert 0 <= res["methods"][method]["conflicting_accuracy"] <= 100


def test_a_variant_is_one_run_whatever_its_spelling() -> None:
    a = pipeline.plan(pipeline.Request("celeba:size=32,target=Smiling", 0.2))
    b = pipeline.plan(pipeline.Request("celeba:target=Smiling,attribute=Male,size=32", 0.2))
    assert a.request.dataset == b.request.dataset == "celeba:size=32,target=Smiling"
    assert pipeline.run_key(a, "audit") == pipeline.run_key(b, "audit")
