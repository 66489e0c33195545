"""Dataset layer: exact conflict counts, determinism, balance, pixel-level rendering, sources, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cache, data
from engine.cli import main as cli
from engine.corruptions import CORRUPTIONS
from engine.errors import DataUnavailable, InvalidArgument
from tests.conftest import require_fashion
from tests.fakes import _png, _strokes, _write_idx, make_bffhq, make_cifar_bin, make_idx_dir  # noqa: F401


# --------------------------------------------------------------------------- fixtures: small real-format files

@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    make_idx_dir(tmp_path / "data" / "MNIST" / "raw", gz=True)
    return tmp_path / "data"


# --------------------------------------------------------------------------- rules

@pytest.mark.parametrize("ratio", [0.005, 0.01, 0.05, 0.3, 0.9])
def test_exact_conflict_counts_colored_digits(ratio: float) -> None:
    train = data.load_split("colored-digits", ratio, "train", seed=1)
    counts = train.counts()
    for c in range(10):
        n_c = counts[c].sum()
        expected = data.conflict_count(int(n_c), ratio)
        assert counts[c].sum() - counts[c, c] == expected, (c, counts[c])
        others = np.delete(counts[c], c)
        assert others.max() - others.min() <= 1  # spread evenly over the other attributes
    assert int((~train.aligned).sum()) == sum(data.conflict_count(int(n), ratio) for n in counts.sum(1))


def test_conflict_count_rounding() -> None:
    assert data.conflict_count(144, 0.01) == 1      # 1.44 -> 1
    assert data.conflict_count(150, 0.01) == 2      # 1.5 rounds half up
    assert data.conflict_count(6000, 0.005) == 30
    assert data.conflict_count(50, 0.001) == 1      # never zero conflicting in a class
    assert data.conflict_count(50, 0.999) == 49     # never zero aligned


def test_aligned_mask_matches_attributes() -> None:
    train = data.load_split("colored-digits", 0.1, "train")
    assert torch.equal(train.aligned, train.attributes == train.targets)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)


def test_deterministic_from_seed() -> None:
    a = data.load_split("colored-digits", 0.05, "train", seed=3, use_cache=False)
    b = data.load_split("colored-digits", 0.05, "train", seed=3, use_cache=False)
    c = data.load_split("colored-digits", 0.05, "train", seed=4, use_cache=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.attributes, b.attributes)
    assert not torch.equal(a.attributes, c.attributes)


def test_colored_digits_test_split_has_every_image_in_every_attribute() -> None:
    test = data.load_split("colored-digits", 0.05, "test")
    counts = test.counts()
    assert (counts == counts[:, :1]).all()  # per class, every attribute equally often
    assert len(test) == 10 * len(data.DIGITS_SOURCE.load().test_labels)
    # every test image appears once per colour: the 10 renderings share one gray silhouette
    imgs = test.images.view(-1, 10, 3, 32, 32)
    lit = imgs.amax(dim=2) > 0
    assert (lit == lit[:, :1]).all()


def test_test_split_independent_of_ratio() -> None:
    a = data.load_split("colored-digits", 0.01, "test")
    b = data.load_split("colored-digits", 0.2, "test")
    assert torch.equal(a.images, b.images)


# --------------------------------------------------------------------------- pixel-level rendering

def test_foreground_colour_threshold(mnist_root: Path) -> None:
    src = data.MNIST.load(mnist_root, download=False)
    train = data.load_split("cmnist", 0.1, "train", data_root=mnist_root)
    gray = torch.nn.functional.pad(torch.from_numpy(src.train_images), (2, 2, 2, 2))
    for i in range(0, len(train), 37):
        colour = torch.tensor(data.PALETTE[int(train.attributes[i])], dtype=torch.uint8)
        img = train.images[i]
        fg = gray[i] >= 128
        assert (img[:, fg] == colour[:, None]).all()
        assert (img[:, ~fg] == 0).all()  # including the 90-valued pixel below threshold


def test_background_colour(mnist_root: Path) -> None:
    src = data.MNIST.load(mnist_root, download=False)
    train = data.load_split("cmnist-bg", 0.1, "train", data_root=mnist_root)
    gray = torch.nn.functional.pad(torch.from_numpy(src.train_images), (2, 2, 2, 2))
    for i in range(0, len(train), 41):
        colour = torch.tensor(data.PALETTE[int(train.attributes[i])], dtype=torch.uint8)
        img = train.images[i]
        assert (img[:, gray[i] == 0] == colour[:, None]).all()   # background takes the colour
        assert (img[:, gray[i] == 255] == 0).all() if (gray[i] == 255).any() else True
        assert img[:, gray[i] >= 200].float().mean() < 60          # the digit stays dark


def test_bg_fmnist_object_keeps_gray_tones(tmp_path: Path) -> None:
    root = tmp_path / "fm"
    make_idx_dir(root, gz=False)
    train = data.load_split("bg-fmnist", 0.1, "train", data_root=root)
    src = data.FASHION_MNIST.load(root, download=False)
    gray = torch.nn.functional.pad(torch.from_numpy(src.train_images), (2, 2, 2, 2))
    i = 0
    colour = torch.tensor(data.PALETTE[int(train.attributes[i])], dtype=torch.uint8)
    assert (train.images[i][:, gray[i] == 0] == colour[:, None]).all()
    # the object is drawn in its own gray tones over the colour, weighted by its intensity
    alpha = gray.float()[:, None] / 255
    colours = torch.tensor(data.PALETTE, dtype=torch.float32)[train.attributes][:, :, None, None]
    expected = (alpha * gray.float()[:, None] + (1 - alpha) * colours).round()
    assert torch.equal(train.images.float(), expected)
    white = gray[i] == 255
    if white.any():
        assert (train.images[i][:, white] == 255).all()


def test_fg_fmnist_blend(tmp_path: Path) -> None:
    root = tmp_path / "fm"
    make_idx_dir(root, gz=True)
    train = data.load_split("fg-fmnist", 0.1, "train", data_root=root)
    src = data.FASHION_MNIST.load(root, download=False)
    gray = torch.nn.functional.pad(torch.from_numpy(src.train_images), (2, 2, 2, 2)).float()
    colour = torch.tensor(data.PALETTE, dtype=torch.float32)[train.attributes][:, :, None, None]
    expected = (gray[:, None] / 255 * colour).round()
    assert torch.equal(train.images.float(), expected)


def test_cifar10s_grayscale_where_it_should_be(tmp_path: Path) -> None:
    root = tmp_path / "c"
    make_cifar_bin(root / "cifar-10-batches-bin")
    train = data.load_split("cifar10-s", 0.1, "train", data_root=root)
    img = train.images.float()
    gray = (img[:, 0] == img[:, 1]).flatten(1).all(1) & (img[:, 1] == img[:, 2]).flatten(1).all(1)
    assert torch.equal(gray, train.attributes == 0)
    # classes 0-4 mostly grayscale, 5-9 mostly colour
    counts = train.counts()
    assert (counts[:5, 0] > counts[:5, 1]).all() and (counts[5:, 1] > counts[5:, 0]).all()
    test = data.load_split("cifar10-s", 0.1, "test", data_root=root)
    assert len(test) == 2 * 40 and (test.counts() == 4).all()


def test_corrupted_cifar10_each_corruption_applied_and_distinct(tmp_path: Path) -> None:
    root = tmp_path / "c"
    make_cifar_bin(root)
    src = data.CIFAR10.load(root, download=False)
    train = data.load_split("corrupted-cifar10", 0.3, "train", data_root=root)
    orig = torch.from_numpy(src.train_images).float()
    diff = (train.images.float() - orig).abs().mean(dim=(1, 2, 3))
    assert (diff > 1.0).all()  # every image visibly changed
    # apply every corruption to the same images: pairwise clearly different from each other
    from engine.corruptions import corrupt
    x = torch.from_numpy(src.train_images[:16])
    outs = [corrupt(x, k, torch.Generator().manual_seed(0)).float() for k in range(len(CORRUPTIONS))]
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            assert (outs[a] - outs[b]).abs().mean() > 2.0, (CORRUPTIONS[a], CORRUPTIONS[b])


# --------------------------------------------------------------------------- sources

@pytest.mark.parametrize("layout,gz", [("torchvision", True), ("torchvision", False), ("flat", True), ("flat", False)])
def test_idx_layouts(tmp_path: Path, layout: str, gz: bool) -> None:
    root = tmp_path / "d"
    make_idx_dir(root / "MNIST" / "raw" if layout == "torchvision" else root, gz=gz)
    train = data.load_split("cmnist", 0.1, "train", data_root=root)
    assert len(train) == 300 and int((~train.aligned).sum()) == 10 * data.conflict_count(30, 0.1)


def test_idx_from_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_dir(tmp_path / "env" / "MNIST" / "raw", gz=True)
    monkeypatch.setenv("DDAUDIT_DATA", str(tmp_path / "env"))
    assert len(data.load_split("cmnist", 0.1, "test")) == 100


def test_truncated_idx_is_reported(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "t", gz=False)
    p = root / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataUnavailable, match="truncated"):
        data.load_split("cmnist", 0.1, "train", data_root=root)


def test_missing_data_lists_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable) as err:
        data.load_split("cmnist", 0.1, "train", data_root=tmp_path)
    assert str(tmp_path) in err.value.problem and "tried" in err.value.problem
    assert "--data-root" in err.value.fix


def test_bffhq_from_generated_pngs(tmp_path: Path) -> None:
    """BFFHQ's ratio folder is its training split as released: every file, its own conflicting ones."""
    root = make_bffhq(tmp_path, n_align=20, n_conflict=4, pct="0.5pct")
    train = data.load_split("bffhq", 0.005, "train", data_root=root)
    assert train.images.shape[1:] == (3, 64, 64) and len(train) == 24 and int((~train.aligned).sum()) == 4
    # the gender attribute is read from the file name: the generated pixel value encodes it
    assert torch.equal((train.images[:, 0, 0, 0] > 100).long(), train.attributes)
    test = data.load_split("bffhq", 0.005, "test", data_root=root)
    assert (test.counts() == 2).all()


def test_bffhq_misnamed_files_are_refused(tmp_path: Path) -> None:
    root = make_bffhq(tmp_path, pct="0.5pct")
    _png(root / "bffhq" / "0.5pct" / "align" / "photo.png", 0)
    with pytest.raises(DataUnavailable, match="misnamed"):
        data.load_split("bffhq", 0.005, "train", data_root=root)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, float("nan"), "abc", None])
def test_bad_ratio(ratio) -> None:
    with pytest.raises(InvalidArgument):
        data.load_split("colored-digits", ratio)


@pytest.mark.parametrize("seed", [1.5, "x", True, -1, None])
def test_bad_seed(seed) -> None:
    with pytest.raises(InvalidArgument):
        data.load_split("colored-digits", 0.1, seed=seed)


def test_unknown_dataset() -> None:
    with pytest.raises(InvalidArgument, match="colored-digits"):
        data.load_split("imagenet", 0.1)


def test_data_root_that_is_a_file_or_missing(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(DataUnavailable, match="not a folder"):
        data.load_split("cmnist", 0.1, data_root=f)
    with pytest.raises(DataUnavailable, match="does not exist"):
        data.load_split("cmnist", 0.1, data_root=tmp_path / "nowhere")


# --------------------------------------------------------------------------- cache

def test_cache_hit_and_corrupt_rebuild(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = data.load_split("colored-digits", 0.05, "train", seed=7)
    files = list((fresh_home / "cache" / "datasets").glob("colored-digits-train-*.safetensors"))
    assert len(files) == 1
    calls = []
    from engine.data import build
    real_build = build._build
    monkeypatch.setattr(build, "_build", lambda *a, **k: calls.append(1) or real_build(*a, **k))
    again = data.load_split("colored-digits", 0.05, "train", seed=7)
    assert calls == [] and torch.equal(first.images, again.images)  # served from disk
    raw = bytearray(files[0].read_bytes())
    raw[-50] ^= 0xFF  # flip a byte inside the image data
    files[0].write_bytes(bytes(raw))
    rebuilt = data.load_split("colored-digits", 0.05, "train", seed=7)
    assert calls == [1] and torch.equal(first.images, rebuilt.images)
    files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated
    data.load_split("colored-digits", 0.05, "train", seed=7)
    assert calls == [1, 1]
    data.load_split("colored-digits", 0.06, "train", seed=7)  # another ratio -> another key
    assert len(list((fresh_home / "cache" / "datasets").glob("colored-digits-train-*"))) == 2


def test_cache_file_has_no_pickle(fresh_home: Path) -> None:
    data.load_split("colored-digits", 0.05, "test")
    f = next((fresh_home / "cache" / "datasets").glob("*.safetensors"))
    tensors, meta = cache.load_tensors(f)
    assert set(tensors) == {"images", "targets", "attributes", "aligned_attribute"} and meta["split"] == "test"


# --------------------------------------------------------------------------- CLI

def test_cli_datasets_json(capsys: pytest.CaptureFixture) -> None:
    assert cli(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(data.REGISTRY)
    for r in rows:
        assert set(r) == {"name", "available", "source", "image_shape", "num_classes", "num_attributes"}
    assert next(r for r in rows if r["name"] == "colored-digits")["available"] is True


def test_cli_summary_json(capsys: pytest.CaptureFixture) -> None:
    assert cli(["summary", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "colored-digits" and out["seed"] == 2 and out["conflict_ratio"] == 0.05
    train = data.load_split("colored-digits", 0.05, "train", seed=2)
    assert out["train"]["counts"] == train.counts().tolist()
    assert out["train"]["n_conflicting"] == int((~train.aligned).sum())
    assert out["test"]["n"] == sum(map(sum, out["test"]["counts"]))


@pytest.mark.parametrize("argv,needle", [
    (["summary", "--dataset", "nope", "--conflict-ratio", "0.1"], "unknown dataset"),
    (["summary", "--conflict-ratio", "1"], "outside (0, 1)"),
    (["summary", "--conflict-ratio", "0.1", "--seed", "1.5"], "not an integer"),
])
def test_cli_errors_exit_2(argv, needle, capsys: pytest.CaptureFixture) -> None:
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err and "fix:" in err


def test_cli_missing_data_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["summary", "--dataset", "cmnist", "--conflict-ratio", "0.1", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "MNIST not found" in err and "tried" in err


# --------------------------------------------------------------------------- real data

def test_real_bg_fmnist_from_debian_files() -> None:
    require_fashion()
    train = data.load_split("bg-fmnist", 0.01, "train")
    test = data.load_split("bg-fmnist", 0.01, "test")
    assert len(train) == 60000 and len(test) == 10000
    assert int((~train.aligned).sum()) == 10 * data.conflict_count(6000, 0.01) == 600
    tc = test.counts()
    assert tc.max() - tc.min() <= 1  # balanced over attributes (1,000 per class -> 100 per cell)
    # the corner pixel is background: it carries the attribute colour
    corner = train.images[:, :, 0, 0]
    palette = torch.tensor(data.PALETTE, dtype=torch.uint8)
    assert torch.equal(corner, palette[train.attributes])


def test_bad_data_root_refused_even_for_bundled_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataUnavailable, match="does not exist"):
        data.load_split("colored-digits", 0.1, data_root=tmp_path / "missing")
    assert cli(["datasets", "--data-root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
