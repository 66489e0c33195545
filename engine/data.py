"""Biased benchmarks: one registry, one split structure, exact conflict counts, cached on disk.

Every dataset yields a `BiasedSplit` for "train" or "test": uint8 images N x C x H x W, target
labels, the bias attribute of each image, an aligned/conflicting mask, class and attribute
names. Rules (see docs/DATASETS.md):

* conflict ratio r in (0, 1): class c with n_c training images gets
  k_c = clamp(floor(r * n_c + 0.5), 1, n_c - 1) bias-conflicting images (round half up, at
  least one conflicting and one aligned image per class). Which images conflict is a seeded
  permutation; their attributes cycle through the other attributes in a seeded order, so
  the counts over the other attributes differ by at most one.
* test split balanced over attributes: small sources put every test image in every
  attribute; large ones assign attributes round-robin within each class.
* deterministic from the seed; built tensors cached as checksummed safetensors under
  $DDAUDIT_HOME/cache/datasets, keyed by everything that determines them.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import cache
from .corruptions import CORRUPTIONS, corrupt
from .errors import DataUnavailable, InvalidArgument

log = logging.getLogger("ddaudit")

BUILD_VERSION = 1  # bump when a builder changes: invalidates every cached split

# FairDD's colour map (REFERENCE.md), attribute i -> RGB.
PALETTE = (
    (255, 0, 0), (255, 128, 0), (255, 255, 0), (255, 255, 128), (0, 255, 0),
    (0, 255, 255), (0, 0, 255), (128, 0, 255), (255, 0, 255), (255, 255, 255),
)
COLOUR_NAMES = ("red", "orange", "yellow", "cream", "green", "cyan", "blue", "violet", "magenta", "white")
DIGITS = tuple(str(i) for i in range(10))
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYSTEM_FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


@dataclass
class BiasedSplit:
    """One split of a biased dataset; every tensor has N rows in the same order."""

    dataset: str
    split: str
    images: torch.Tensor        # uint8 N x C x H x W
    targets: torch.Tensor       # int64 N
    attributes: torch.Tensor    # int64 N, the bias attribute
    aligned: torch.Tensor       # bool N, attributes == aligned_attribute[targets]
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    aligned_attribute: tuple[int, ...]  # a(c): the bias-aligned attribute of each class
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.targets.numel())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    def counts(self) -> np.ndarray:
        """counts[class, attribute] as an integer array."""
        out = np.zeros((self.num_classes, self.num_attributes), dtype=np.int64)
        np.add.at(out, (self.targets.numpy(), self.attributes.numpy()), 1)
        return out

    def summary(self) -> dict:
        """The numbers a user checks first (JSON-ready)."""
        return {"n": len(self), "n_conflicting": int((~self.aligned).sum()),
                "counts": self.counts().tolist()}


# --------------------------------------------------------------------------- validation

def check_ratio(conflict_ratio: float) -> float:
    """A conflict ratio must be a number strictly between 0 and 1."""
    try:
        r = float(conflict_ratio)
    except (TypeError, ValueError):
        raise InvalidArgument(f"conflict ratio {conflict_ratio!r} is not a number",
                              "give a fraction such as 0.01 for 1% conflicting") from None
    if not (0.0 < r < 1.0) or math.isnan(r):
        raise InvalidArgument(f"conflict ratio {conflict_ratio} is outside (0, 1)",
                              "give a fraction strictly between 0 and 1, e.g. 0.01 for 1% conflicting")
    return r


def check_seed(seed: object) -> int:
    """Seeds are non-negative integers; bools, fractions and words are refused."""
    value = None
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        value = int(seed)
    elif isinstance(seed, float) and seed.is_integer():
        value = int(seed)
    elif isinstance(seed, str) and re.fullmatch(r"\s*\d+\s*", seed):
        value = int(seed)
    if value is None:
        raise InvalidArgument(f"seed {seed!r} is not an integer", "give a whole number such as 0")
    if not 0 <= value < 2 ** 63:
        raise InvalidArgument(f"seed {value} is out of range", "give a whole number between 0 and 2**63-1")
    return value


def conflict_count(n_class: int, ratio: float) -> int:
    """Exact number of conflicting images for a class of n_class images (round half up, 1..n-1)."""
    if n_class < 2:
        return 0
    return int(min(n_class - 1, max(1, math.floor(ratio * n_class + 0.5))))


def get_spec(name: str) -> "DatasetSpec":
    """Look a dataset up by name, with the list of valid names in the error."""
    if name not in REGISTRY:
        raise InvalidArgument(f"unknown dataset {name!r}",
                              f"choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- sources

@dataclass
class Source:
    """Raw material of a dataset: images (uint8; N,H,W gray or N,3,H,W colour) and labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str
    train_attributes: np.ndarray | None = None  # only for datasets with natural bias labels
    test_attributes: np.ndarray | None = None


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array; CorruptArtifact-like errors are clear."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataUnavailable(f"cannot read {path} ({exc})", "re-download the file; it may be truncated") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataUnavailable(f"{path} is not an unsigned-byte IDX file", "check the file; re-download it")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataUnavailable(f"{path} is truncated ({len(data) - offset} of {expected} bytes)",
                              "re-download the file")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _find_idx_dir(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder`, gz or not, or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _data_roots(data_root: str | os.PathLike | None) -> list[Path]:
    roots = []
    for r in (data_root, os.environ.get("DDAUDIT_DATA")):
        if r:
            p = Path(r).expanduser()
            if not p.exists():
                raise DataUnavailable(f"data root {p} does not exist", "pass an existing folder with --data-root "
                                      "(or fix DDAUDIT_DATA)")
            if not p.is_dir():
                raise DataUnavailable(f"data root {p} is not a folder", "pass a folder with --data-root")
            if not os.access(p, os.R_OK | os.X_OK):
                raise DataUnavailable(f"data root {p} is not readable", "fix its permissions or pass another --data-root")
            roots.append(p)
    return roots


def check_data_root(data_root: str | os.PathLike | None) -> None:
    """Raise DataUnavailable when --data-root (or $DDAUDIT_DATA) is missing, a file or unreadable."""
    _data_roots(data_root)


def _network_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _locate_idx(folder_name: str, data_root, system_dirs: Sequence[Path]) -> tuple[dict[str, Path] | None, list[str]]:
    tried: list[str] = []
    for root in _data_roots(data_root):
        for cand in (root / folder_name / "raw", root):
            tried.append(str(cand))
            files = _find_idx_dir(cand)
            if files:
                return files, tried
    for cand in system_dirs:
        tried.append(str(cand))
        files = _find_idx_dir(cand)
        if files:
            return files, tried
    downloads = cache.home() / "downloads"
    cand = downloads / folder_name / "raw"
    tried.append(str(cand))
    files = _find_idx_dir(cand)
    return files, tried


def _idx_source(folder_name: str, tv_class: str, data_root, system_dirs: Sequence[Path], how_to: str,
                download: bool = True) -> Source:
    files, tried = _locate_idx(folder_name, data_root, system_dirs)
    if files is None and download:
        tried.append(f"torchvision download of {folder_name}")
        if _network_reachable("ossci-datasets.s3.amazonaws.com"):
            import torchvision.datasets as tvd
            try:
                getattr(tvd, tv_class)(str(cache.home() / "downloads"), train=True, download=True)
                files = _find_idx_dir(cache.home() / "downloads" / folder_name / "raw")
            except Exception as exc:  # network errors of many kinds
                tried[-1] += f" (failed: {exc})"
        else:
            tried[-1] += " (no network)"
    if files is None:
        raise DataUnavailable(f"{folder_name} not found; tried: " + "; ".join(tried), how_to)
    arrays = {k: read_idx(p) for k, p in files.items()}
    return Source(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                  arrays["test_images"], arrays["test_labels"].astype(np.int64),
                  origin=str(files["train_images"].parent))


def mnist_source(data_root=None, download: bool = True) -> Source:
    return _idx_source("MNIST", "MNIST", data_root, (), download=download,
                       how_to="put the four MNIST IDX files under DIR/MNIST/raw (or DIR) and pass --data-root DIR "
                              "or set DDAUDIT_DATA; or run once with network access to download them")


def fashion_source(data_root=None, download: bool = True) -> Source:
    return _idx_source("FashionMNIST", "FashionMNIST", data_root, SYSTEM_FASHION_DIRS, download=download,
                       how_to="apt-get install dataset-fashion-mnist, or put the four IDX files under "
                              "DIR/FashionMNIST/raw (or DIR) and pass --data-root DIR")


def digits_source(data_root=None, download: bool = True) -> Source:
    """scikit-learn's 1,797 8x8 digits, upscaled to 32x32; a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    imgs = x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    labels = d.target.astype(np.int64)
    # every 5th image of each class (in the file's order) is a test image: independent of the seed
    rank = np.zeros_like(labels)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    test = rank % 5 == 4
    return Source(imgs[~test], labels[~test], imgs[test], labels[test], origin="sklearn.datasets.load_digits")


def _cifar_bin(folder: Path) -> Source | None:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    if not all((folder / n).is_file() for n in names) or not (folder / "test_batch.bin").is_file():
        return None

    def read(paths):
        raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
        if raw.size % 3073:
            raise DataUnavailable(f"CIFAR-10 binary files in {folder} are truncated", "re-download them")
        raw = raw.reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

    tr_x, tr_y = read([folder / n for n in names])
    te_x, te_y = read([folder / "test_batch.bin"])
    return Source(tr_x, tr_y, te_x, te_y, origin=str(folder))


def cifar10_source(data_root=None, download: bool = True) -> Source:
    """CIFAR-10 from the binary layout (no pickle), else torchvision's python layout, else download."""
    tried = []
    for root in _data_roots(data_root) + [cache.home() / "downloads"]:
        for cand in (root / "cifar-10-batches-bin", root):
            tried.append(str(cand))
            src = _cifar_bin(cand)
            if src:
                return src
        if (root / "cifar-10-batches-py" / "data_batch_1").is_file():
            tried.append(str(root / "cifar-10-batches-py"))
            return _cifar_torchvision(root, download=False)
    if download:
        tried.append("torchvision download of CIFAR-10")
        if _network_reachable("www.cs.toronto.edu"):
            return _cifar_torchvision(cache.home() / "downloads", download=True)
        tried[-1] += " (no network)"
    raise DataUnavailable("CIFAR-10 not found; tried: " + "; ".join(tried),
                          "put cifar-10-batches-bin (or torchvision's cifar-10-batches-py) under DIR and pass "
                          "--data-root DIR; or run once with network access")


def _cifar_torchvision(root: Path, download: bool) -> Source:
    # torchvision's python layout is pickled by its publisher; it is read only through torchvision.
    import torchvision.datasets as tvd
    tr = tvd.CIFAR10(str(root), train=True, download=download)
    te = tvd.CIFAR10(str(root), train=False, download=False)
    return Source(tr.data.transpose(0, 3, 1, 2).copy(), np.asarray(tr.targets, dtype=np.int64),
                  te.data.transpose(0, 3, 1, 2).copy(), np.asarray(te.targets, dtype=np.int64),
                  origin=str(root / "cifar-10-batches-py"))


_BFFHQ_NAME = re.compile(r"^(\d+)_([01])_([01])\.png$")


def _read_bffhq_folder(folders: Sequence[Path], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from PIL import Image
    files = sorted(p for f in folders if f.is_dir() for p in f.iterdir() if p.suffix.lower() == ".png")
    bad = [p.name for p in files if not _BFFHQ_NAME.match(p.name)]
    if bad:
        raise DataUnavailable(
            f"{len(bad)} BFFHQ file(s) are misnamed, e.g. {bad[0]!r} in {files[0].parent}",
            "BFFHQ files must be named <index>_<age 0|1>_<gender 0|1>.png as published")
    if not files:
        raise DataUnavailable(f"no PNG files in {', '.join(map(str, folders))}", "check the BFFHQ folder layout")
    imgs, ages, genders = [], [], []
    for p in files:
        m = _BFFHQ_NAME.match(p.name)
        with Image.open(p) as im:
            imgs.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1))
        ages.append(int(m.group(2)))
        genders.append(int(m.group(3)))
    return np.stack(imgs), np.asarray(ages, dtype=np.int64), np.asarray(genders, dtype=np.int64)


def bffhq_source(data_root=None, download: bool = True, size: int = 64) -> Source:
    """BFFHQ in the published layout: [0.5pct/]align, [0.5pct/]conflict, test; resized to 64x64."""
    tried = []
    for root in _data_roots(data_root):
        for base in (root / "bffhq", root):
            train_base = base / "0.5pct" if (base / "0.5pct").is_dir() else base
            tried.append(str(base))
            if (train_base / "align").is_dir() and (base / "test").is_dir():
                tr_x, tr_y, tr_b = _read_bffhq_folder([train_base / "align", train_base / "conflict"], size)
                te_x, te_y, te_b = _read_bffhq_folder([base / "test"], size)
                return Source(tr_x, tr_y, te_x, te_y, origin=str(base), train_attributes=tr_b, test_attributes=te_b)
    raise DataUnavailable("BFFHQ not found; tried: " + ("; ".join(tried) or "no --data-root given"),
                          "download BFFHQ (DisEnt release) and pass --data-root DIR where DIR/bffhq/0.5pct/align, "
                          "DIR/bffhq/0.5pct/conflict and DIR/bffhq/test hold the PNG files")


# --------------------------------------------------------------------------- renderers

def _pad32(gray: torch.Tensor) -> torch.Tensor:
    h, w = gray.shape[-2:]
    if (h, w) == (32, 32):
        return gray
    ph, pw = 32 - h, 32 - w
    return F.pad(gray, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _palette(attrs: torch.Tensor) -> torch.Tensor:
    return torch.tensor(PALETTE, dtype=torch.float32)[attrs][:, :, None, None]  # N,3,1,1


def render_fg_threshold(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CMNIST (FairDD): pixels >= 128 take the attribute colour, the rest black."""
    g = _pad32(gray)[:, None]
    return torch.where(g >= 128, _palette(attrs), torch.zeros(())).to(torch.uint8)


def render_fg_blend(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """FG-FMNIST: the object blended from black to the attribute colour by its intensity."""
    alpha = _pad32(gray)[:, None].float() / 255.0
    return (alpha * _palette(attrs)).round().to(torch.uint8)


def render_bg(gray: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator, object_white: bool) -> torch.Tensor:
    """Coloured background; the object black (CMNIST-BG) or in its own gray tones (BG-FMNIST)."""
    g = _pad32(gray)[:, None].float()
    alpha = g / 255.0
    obj = g.expand(-1, 3, -1, -1) if object_white else torch.zeros_like(g).expand(-1, 3, -1, -1)
    return (alpha * obj + (1 - alpha) * _palette(attrs)).round().to(torch.uint8)


def render_grayscale(rgb: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CIFAR10-S: attribute 0 = grayscale (luminance in all 3 channels), 1 = original colour."""
    x = rgb.float()
    lum = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand(-1, 3, -1, -1)
    gray = attrs == 0
    return torch.where(gray[:, None, None, None], lum, x).round().to(torch.uint8)


def render_corrupted(rgb: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Corrupted CIFAR-10: image with attribute k gets corruption k."""
    out = torch.empty_like(rgb)
    for k in range(len(CORRUPTIONS)):
        sel = (attrs == k).nonzero().flatten()
        if len(sel):
            for start in range(0, len(sel), 4096):
                part = sel[start:start + 4096]
                out[part] = corrupt(rgb[part], k, gen)
    return out


def render_identity(images: torch.Tensor, attrs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return images.clone()


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    """How to build one biased benchmark."""

    name: str
    description: str
    source_name: str
    loader: Callable[..., Source]
    render: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    aligned_attribute: tuple[int, ...]
    test_every_attribute: bool  # small sources: each test image appears once per attribute
    natural_bias: bool = False  # attributes come from the files (BFFHQ), not assigned by us
    digits: bool = False        # no horizontal flip in augmentation

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)


def _bg(object_white: bool):
    return lambda g, a, gen: render_bg(g, a, gen, object_white)


REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("colored-digits", "scikit-learn 8x8 digits upscaled to 32x32, digit coloured (offline default)",
                "sklearn-digits", digits_source, render_fg_threshold, (3, 32, 32), DIGITS, COLOUR_NAMES,
                tuple(range(10)), test_every_attribute=True, digits=True),
    DatasetSpec("cmnist", "Colored MNIST, digit (foreground) coloured", "mnist", mnist_source,
                render_fg_threshold, (3, 32, 32), DIGITS, COLOUR_NAMES, tuple(range(10)), False, digits=True),
    DatasetSpec("cmnist-bg", "Colored MNIST, background coloured, digit black", "mnist", mnist_source,
                _bg(False), (3, 32, 32), DIGITS, COLOUR_NAMES, tuple(range(10)), False, digits=True),
    DatasetSpec("bg-fmnist", "Fashion-MNIST with a class-correlated background colour", "fashion-mnist",
                fashion_source, _bg(True), (3, 32, 32), FASHION, COLOUR_NAMES, tuple(range(10)), False),
    DatasetSpec("fg-fmnist", "Fashion-MNIST, object blended from black to a class-correlated colour",
                "fashion-mnist", fashion_source, render_fg_blend, (3, 32, 32), FASHION, COLOUR_NAMES,
                tuple(range(10)), False),
    DatasetSpec("corrupted-cifar10", "CIFAR-10, class i gets corruption i (see engine/corruptions.py)",
                "cifar10", cifar10_source, render_corrupted, (3, 32, 32), CIFAR, CORRUPTIONS,
                tuple(range(10)), False),
    DatasetSpec("cifar10-s", "CIFAR-10 grayscale vs colour (FairDD's CIFAR10-S)", "cifar10", cifar10_source,
                render_grayscale, (3, 32, 32), CIFAR, ("grayscale", "colour"), (0,) * 5 + (1,) * 5,
                test_every_attribute=True),
    DatasetSpec("bffhq", "Biased FFHQ: age (young/old) biased by gender, 64x64", "bffhq", bffhq_source,
                render_identity, (3, 64, 64), ("young", "old"), ("female", "male"), (0, 1), False,
                natural_bias=True),
]}

DEFAULT_DATASET = "colored-digits"


# --------------------------------------------------------------------------- building

def assign_train_attributes(targets: np.ndarray, ratio: float, seed: int, spec: DatasetSpec) -> np.ndarray:
    """Exact per-class conflicting counts, spread evenly over the other attributes (seeded)."""
    rng = np.random.default_rng([seed, 1])
    attrs = np.empty_like(targets)
    for c in range(spec.num_classes):
        idx = np.flatnonzero(targets == c)
        a = spec.aligned_attribute[c]
        attrs[idx] = a
        k = conflict_count(len(idx), ratio)
        others = np.array([b for b in range(spec.num_attributes) if b != a])
        conflicting = rng.permutation(idx)[:k]
        order = rng.permutation(others)
        attrs[conflicting] = order[np.arange(k) % len(order)]
    return attrs


def _subsample_natural(targets: np.ndarray, attrs: np.ndarray, ratio: float, seed: int,
                       spec: DatasetSpec) -> np.ndarray:
    """Indices keeping the exact conflict ratio per class from a dataset with fixed bias labels."""
    rng = np.random.default_rng([seed, 2])
    keep = []
    for c in range(spec.num_classes):
        idx = np.flatnonzero(targets == c)
        al = idx[attrs[idx] == spec.aligned_attribute[c]]
        cf = idx[attrs[idx] != spec.aligned_attribute[c]]
        if len(al) == 0 or len(cf) == 0:
            raise DataUnavailable(f"class {spec.class_names[c]} has no aligned or no conflicting images",
                                  "check the dataset folders")
        # largest class size n with floor(r*n+0.5) conflicting and the rest aligned available
        n = len(al) + len(cf)
        while n > 1:
            k = conflict_count(n, ratio)
            if k <= len(cf) and n - k <= len(al):
                break
            n -= 1
        keep += [rng.permutation(cf)[:k], rng.permutation(al)[:n - k]]
    return np.sort(np.concatenate(keep))


def _source_fingerprint(spec: DatasetSpec, data_root) -> str:
    if spec.source_name == "sklearn-digits":
        import sklearn
        return f"sklearn-{sklearn.__version__}"
    src = _locate_only(spec, data_root)
    return src


def _locate_only(spec: DatasetSpec, data_root) -> str:
    """Where the source files are (a cheap fingerprint), or raise DataUnavailable."""
    if spec.source_name in ("mnist", "fashion-mnist"):
        folder = "MNIST" if spec.source_name == "mnist" else "FashionMNIST"
        system = SYSTEM_FASHION_DIRS if spec.source_name == "fashion-mnist" else ()
        files, _ = _locate_idx(folder, data_root, system)
        if files is None:
            return "missing"
        return ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(files.values()))
    if spec.source_name == "cifar10":
        for root in _data_roots(data_root) + [cache.home() / "downloads"]:
            for cand in (root / "cifar-10-batches-bin", root, root / "cifar-10-batches-py"):
                f = cand / "data_batch_1.bin"
                if f.is_file() or (cand / "data_batch_1").is_file():
                    f = f if f.is_file() else cand / "data_batch_1"
                    return f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
        return "missing"
    if spec.source_name == "bffhq":
        for root in _data_roots(data_root):
            for base in (root / "bffhq", root):
                if (base / "test").is_dir():
                    files = sorted(base.rglob("*.png"))
                    return f"{base}:{len(files)}:{max((p.stat().st_mtime_ns for p in files), default=0)}"
        return "missing"
    return spec.source_name


def dataset_status(name: str, data_root=None) -> dict:
    """Availability without downloading: name, available, source, shape, class/attribute counts."""
    spec = get_spec(name)
    _data_roots(data_root)  # a bad --data-root is an error even for datasets that do not need one
    try:
        fp = _source_fingerprint(spec, data_root)
        available = fp != "missing"
        where = str(Path(fp.split(":")[0]).parent) if available and spec.source_name != "sklearn-digits" else (
            "scikit-learn (bundled)" if spec.source_name == "sklearn-digits" else None)
    except DataUnavailable as exc:
        available, where = False, exc.problem
    return {"name": name, "available": available, "source": where or f"{spec.source_name} (not found)",
            "image_shape": list(spec.image_shape), "num_classes": spec.num_classes,
            "num_attributes": spec.num_attributes, "description": spec.description}


def load_split(name: str, conflict_ratio: float, split: str = "train", seed: int = 0,
               data_root: str | os.PathLike | None = None, use_cache: bool = True) -> BiasedSplit:
    """Build (or load from cache) one split of a biased dataset."""
    spec = get_spec(name)
    ratio = check_ratio(conflict_ratio)
    seed = check_seed(seed)
    _data_roots(data_root)  # a bad --data-root is an error even for datasets that do not need one
    if split not in ("train", "test"):
        raise InvalidArgument(f"unknown split {split!r}", "use train or test")
    fingerprint = _source_fingerprint(spec, data_root)
    # the test split does not depend on the conflict ratio: key it without
    key = cache.cache_key(dataset=name, split=split, ratio=ratio if split == "train" else None, seed=seed,
                          source=fingerprint, version=BUILD_VERSION)
    path = cache.cache_dir("datasets") / f"{name}-{split}-{key}.safetensors"
    if use_cache and fingerprint != "missing":
        hit = cache.load_or_none(path)
        if hit is not None:
            tensors, meta = hit
            return _split_from(spec, split, tensors, meta)
    tensors, meta = _build(spec, ratio, split, seed, data_root)
    if use_cache:
        cache.save_tensors(path, tensors, meta)
    return _split_from(spec, split, tensors, meta)


def load_pair(name: str, conflict_ratio: float, seed: int = 0, data_root=None) -> tuple[BiasedSplit, BiasedSplit]:
    """(train, test) for a dataset."""
    return (load_split(name, conflict_ratio, "train", seed, data_root),
            load_split(name, conflict_ratio, "test", seed, data_root))


def _split_from(spec: DatasetSpec, split: str, tensors: dict, meta: dict) -> BiasedSplit:
    targets, attrs = tensors["targets"].long(), tensors["attributes"].long()
    aligned = attrs == torch.tensor(spec.aligned_attribute)[targets]
    return BiasedSplit(spec.name, split, tensors["images"], targets, attrs, aligned,
                       spec.class_names, spec.attribute_names, spec.aligned_attribute, meta)


def _build(spec: DatasetSpec, ratio: float, split: str, seed: int, data_root) -> tuple[dict, dict]:
    log.info("building %s (%s, conflict ratio %s, seed %d)", spec.name, split, ratio, seed)
    src = spec.loader(data_root)
    gen = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    if split == "train":
        images, targets = src.train_images, src.train_labels
        if spec.natural_bias:
            keep = _subsample_natural(targets, src.train_attributes, ratio, seed, spec)
            images, targets, attrs = images[keep], targets[keep], src.train_attributes[keep]
        else:
            attrs = assign_train_attributes(targets, ratio, seed, spec)
    else:
        images, targets = src.test_images, src.test_labels
        if spec.natural_bias:
            attrs = src.test_attributes
        elif spec.test_every_attribute:
            k = spec.num_attributes
            images = np.repeat(images, k, axis=0)
            targets = np.repeat(targets, k)
            attrs = np.tile(np.arange(k), len(src.test_labels))
        else:
            attrs = _balanced_attributes(targets, spec, seed)
    rendered = spec.render(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(attrs), gen)
    tensors = {"images": rendered.contiguous(), "targets": torch.from_numpy(np.asarray(targets, dtype=np.int64)),
               "attributes": torch.from_numpy(np.asarray(attrs, dtype=np.int64))}
    return tensors, {"origin": src.origin, "conflict_ratio": ratio, "seed": seed, "split": split}


def _balanced_attributes(targets: np.ndarray, spec: DatasetSpec, seed: int) -> np.ndarray:
    """Round-robin attributes within each class after a seeded shuffle: counts differ by <= 1."""
    rng = np.random.default_rng([seed, 3])
    attrs = np.empty_like(targets)
    for c in range(spec.num_classes):
        idx = rng.permutation(np.flatnonzero(targets == c))
        attrs[idx] = (np.arange(len(idx)) + c) % spec.num_attributes
    return attrs
