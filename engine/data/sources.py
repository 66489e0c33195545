"""Raw data sources. Each source `locate()`s its files once, giving where they are, a cheap fingerprint
(part of the cache key) and the `read` that loads exactly what was located: the status a user sees
and the loader that builds a split come from the same lookup.
"""
from __future__ import annotations

import gzip
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import cache
from ..errors import DataUnavailable

SYSTEM_FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


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
    aligned_attribute: tuple[int, ...] | None = None  # derived from the data (faces): the spec has none


@dataclass(frozen=True)
class Located:
    """Where a source's files are, their fingerprint (paths, sizes, times) and how to read them."""

    where: str
    fingerprint: str
    read: Callable[..., Source]  # DFA folders: read(ratio=, split=) reads only that split's folder


def data_roots(data_root: str | os.PathLike | None) -> list[Path]:
    """--data-root and $DDAUDIT_DATA, each checked to be a readable folder."""
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


def _stamp(paths: Sequence[Path]) -> str:
    return ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(paths))


def _network_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class DataSource:
    """A source: locate(data_root) -> (Located | None, places tried); download() where it can."""

    name = ""
    title = ""
    how_to = "see docs/DATASETS.md"

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        raise NotImplementedError

    def download(self, tried: list[str]) -> Located | None:
        """Fetch the files when a network is reachable (noting the attempt in tried); None if not."""
        return None

    def load(self, data_root=None, download: bool = True) -> Source:
        """Read the located files (downloading first when allowed and needed), else DataUnavailable."""
        found, tried = self.locate(data_root)
        if found is None and download:
            found = self.download(tried)
        if found is None:
            raise DataUnavailable(f"{self.title} not found; tried: " + ("; ".join(tried) or "no --data-root given"),
                                  self.how_to)
        return found.read()


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array; a damaged file is DataUnavailable."""
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


class IdxSource(DataSource):
    """The four IDX files: DIR/<folder>/raw or DIR, system folders, then ddaudit's downloads."""

    def __init__(self, name: str, folder: str, system_dirs: Sequence[Path], host: str, how_to: str):
        self.name, self.title, self.folder, self.system_dirs = name, folder, folder, tuple(system_dirs)
        self.host, self.how_to = host, how_to

    def _located(self, files: dict[str, Path]) -> Located:
        return Located(str(files["train_images"].parent), _stamp(list(files.values())), lambda: self._read(files))

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        tried: list[str] = []
        cands = [c for root in data_roots(data_root) for c in (root / self.folder / "raw", root)]
        cands += list(self.system_dirs) + [cache.home() / "downloads" / self.folder / "raw"]
        for cand in cands:
            tried.append(str(cand))
            files = _find_idx_dir(cand)
            if files:
                return self._located(files), tried
        return None, tried

    def download(self, tried: list[str]) -> Located | None:
        tried.append(f"torchvision download of {self.folder}")
        if not _network_reachable(self.host):
            tried[-1] += " (no network)"
            return None
        import torchvision.datasets as tvd
        try:
            getattr(tvd, self.folder)(str(cache.home() / "downloads"), train=True, download=True)
        except Exception as exc:  # network errors of many kinds
            tried[-1] += f" (failed: {exc})"
            return None
        files = _find_idx_dir(cache.home() / "downloads" / self.folder / "raw")
        return self._located(files) if files else None

    @staticmethod
    def _read(files: dict[str, Path]) -> Source:
        arrays = {k: read_idx(p) for k, p in files.items()}
        for split in ("train", "test"):  # a label outside 0..9 or a count mismatch: a damaged file, said so
            imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
                raise DataUnavailable(f"{files[split + '_images']} holds {len(imgs)} images of shape "
                                      f"{imgs.shape[1:]} but {files[split + '_labels']} {len(labels)} labels",
                                      "the IDX files do not belong together: re-download all four")
            if len(labels) and int(labels.max()) > 9:
                raise DataUnavailable(f"{files[split + '_labels']} has label {int(labels.max())} (expected 0-9)",
                                      "re-download the labels file")
        return Source(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                      arrays["test_images"], arrays["test_labels"].astype(np.int64),
                      origin=str(files["train_images"].parent))


# --------------------------------------------------------------------------- scikit-learn digits

class DigitsSource(DataSource):
    """scikit-learn's 1,797 8x8 digits, upscaled to 32x32; a fixed stratified 80/20 split."""

    name, title, how_to = "sklearn-digits", "scikit-learn digits", "bundled with scikit-learn: always available"

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        import sklearn
        return Located("scikit-learn (bundled)", f"sklearn-{sklearn.__version__}", self._read), []

    @staticmethod
    def _read() -> Source:
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


# --------------------------------------------------------------------------- CIFAR-10

def _read_cifar_bin(folder: Path) -> Source:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]

    def read(paths):
        raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
        if raw.size % 3073:
            raise DataUnavailable(f"CIFAR-10 binary files in {folder} are truncated", "re-download them")
        raw = raw.reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

    tr_x, tr_y = read([folder / n for n in names])
    te_x, te_y = read([folder / "test_batch.bin"])
    return Source(tr_x, tr_y, te_x, te_y, origin=str(folder))


def _read_cifar_torchvision(root: Path, download: bool = False) -> Source:
    # torchvision's python layout is pickled by its publisher; it is read only through torchvision.
    import torchvision.datasets as tvd
    tr = tvd.CIFAR10(str(root), train=True, download=download)
    te = tvd.CIFAR10(str(root), train=False, download=False)
    return Source(tr.data.transpose(0, 3, 1, 2).copy(), np.asarray(tr.targets, dtype=np.int64),
                  te.data.transpose(0, 3, 1, 2).copy(), np.asarray(te.targets, dtype=np.int64),
                  origin=str(root / "cifar-10-batches-py"))


class CifarSource(DataSource):
    """CIFAR-10 from the binary layout (no pickle), else torchvision's python layout, else download."""

    name, title = "cifar10", "CIFAR-10"
    how_to = ("put cifar-10-batches-bin (or torchvision's cifar-10-batches-py) under DIR and pass "
              "--data-root DIR; or run once with network access")

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        tried: list[str] = []
        bins = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for root in data_roots(data_root) + [cache.home() / "downloads"]:
            for cand in (root / "cifar-10-batches-bin", root):
                tried.append(str(cand))
                if all((cand / n).is_file() for n in bins):
                    return Located(str(cand), _stamp([cand / n for n in bins]),
                                   lambda cand=cand: _read_cifar_bin(cand)), tried
            py = root / "cifar-10-batches-py"
            if (py / "data_batch_1").is_file():
                tried.append(str(py))
                return Located(str(py), _stamp(sorted(py.glob("*_batch*"))),
                               lambda root=root: _read_cifar_torchvision(root)), tried
        return None, tried

    def download(self, tried: list[str]) -> Located | None:
        tried.append("torchvision download of CIFAR-10")
        if not _network_reachable("www.cs.toronto.edu"):
            tried[-1] += " (no network)"
            return None
        root = cache.home() / "downloads"
        return Located(str(root / "cifar-10-batches-py"), "download",
                       lambda: _read_cifar_torchvision(root, download=True))


MNIST = IdxSource("mnist", "MNIST", (), "ossci-datasets.s3.amazonaws.com",
                  "put the four MNIST IDX files under DIR/MNIST/raw (or DIR) and pass --data-root DIR "
                  "or set DDAUDIT_DATA; or run once with network access to download them")
FASHION_MNIST = IdxSource("fashion-mnist", "FashionMNIST", SYSTEM_FASHION_DIRS, "ossci-datasets.s3.amazonaws.com",
                          "apt-get install dataset-fashion-mnist, or put the four IDX files under "
                          "DIR/FashionMNIST/raw (or DIR) and pass --data-root DIR")
DIGITS = DigitsSource()
CIFAR10 = CifarSource()
