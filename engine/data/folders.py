"""Image-folder sources with bias labels from the files: the DisEnt/DFA release (cmnist, cifar10c, bffhq),
UTKFace and CelebA. Layouts and label rules: docs/REFERENCES.md "Published benchmark files", docs/DATASETS.md.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataUnavailable
from .sources import DataSource, Located, Source, _stamp, data_roots

log = logging.getLogger("ddaudit")
_PCT = re.compile(r"^(\d+(?:\.\d+)?)pct$")
_DFA_NAME = re.compile(r"^(.+)_(\d+)_(\d+)\.png$")
IMAGE_SIZES = (32, 64, 128)


# --------------------------------------------------------------------------- shared helpers

def _files(folder: Path, suffixes: tuple[str, ...], one_level: bool = False) -> list[Path]:
    """Image files directly in `folder` (and its subfolders when one_level), sorted; no FIFOs or devices."""
    found = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and one_level:
            found += _files(entry, suffixes)
        elif entry.name.lower().endswith(suffixes):
            if not entry.is_file():  # a FIFO or device named *.png would block a reader forever
                raise DataUnavailable(f"{entry} is not a regular file", "remove it from the image folder")
            found.append(entry)
    return found


def _stamp_tree(base: Path) -> str:
    """Fingerprint of every file under base (count, total size, newest time): changes when any file does."""
    n = size = newest = 0
    for folder, _, names in os.walk(base):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return f"{base}:{n}:{size}:{newest}"


def read_image(path: Path, size: int, fit: str) -> np.ndarray:
    """One image as uint8 3 x size x size: "resize" it, "pad" it (centred on black) or "crop" its centre square."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if fit == "crop" and im.width != im.height:
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if fit == "pad" and im.width <= size and im.height <= size:
                canvas = Image.new("RGB", (size, size))
                canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
                im = canvas
            elif im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im).transpose(2, 0, 1).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataUnavailable(f"{path} is not a readable image ({exc})", "replace or remove that file") from None


def read_images(paths: Sequence[Path], size: int, fit: str) -> np.ndarray:
    """Images as uint8 N x 3 x size x size (an empty list gives 0 rows)."""
    if len(paths) > 2000:
        log.info("reading %d images (%s): cached afterwards", len(paths), paths[0].parent)
    return np.stack([read_image(p, size, fit) for p in paths]) if paths else np.zeros((0, 3, size, size), np.uint8)


def most_frequent_attribute(targets: np.ndarray, attrs: np.ndarray, num_classes: int,
                            num_attributes: int) -> tuple[int, ...]:
    """Each class's bias-aligned attribute: its most frequent one (ties: the lowest index)."""
    counts = np.zeros((num_classes, num_attributes), dtype=np.int64)
    np.add.at(counts, (targets, attrs), 1)
    return tuple(int(a) for a in counts.argmax(1))


def balanced_test(targets: np.ndarray, attrs: np.ndarray, num_classes: int, num_attributes: int) -> np.ndarray:
    """Indices balancing attributes within each class: every attribute present in the class keeps as many
    images as its rarest present attribute (the first ones, in the given order)."""
    keep = []
    for c in range(num_classes):
        groups = [np.flatnonzero((targets == c) & (attrs == a)) for a in range(num_attributes)]
        present = [g for g in groups if len(g)]
        if present:
            q = min(len(g) for g in present)
            keep += [g[:q] for g in present]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _empty(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 3, size, size), np.uint8), np.zeros(0, np.int64)


# --------------------------------------------------------------------------- DisEnt/DFA release

def ratio_folders(base: Path) -> dict[str, float]:
    """The `<pct>` training folders under base (those holding align/ or conflict/), name -> conflict ratio."""
    out = {}
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        m = _PCT.match(d.name)
        if m and d.is_dir() and ((d / "align").is_dir() or (d / "conflict").is_dir()):
            out[d.name] = float(m.group(1)) / 100
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


class DfaSource(DataSource):
    """A DFA-release folder: `<pct>/{align,conflict}/[<class>/]<i>_<target>_<bias>.png` and `test/`."""

    def __init__(self, name: str, folder: str, title: str, size: int, fit: str, num_classes: int,
                 num_attributes: int, aligned: Sequence[int]):
        self.name, self.folder, self.title, self.size, self.fit = name, folder, title, size, fit
        self.num_classes, self.num_attributes, self.aligned = num_classes, num_attributes, tuple(aligned)
        self.how_to = (f"download the DisEnt/DFA release and pass --data-root DIR where DIR/{folder}/<pct>/align, "
                       f"DIR/{folder}/<pct>/conflict (pct: 0.5pct, 1pct, 2pct, 5pct) and DIR/{folder}/test hold "
                       "the PNG files")

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        tried: list[str] = []
        for root in data_roots(data_root):
            for base in (root / self.folder, root):
                tried.append(str(base))
                if ratio_folders(base):
                    if not (base / "test").is_dir():
                        raise DataUnavailable(f"{self.title} at {base} has no test set ({base / 'test'} is missing)",
                                              f"put the release's test folder at {base / 'test'}")
                    return Located(str(base), _stamp_tree(base),
                                   lambda ratio=None, split="train", b=base: self._read(b, ratio, split)), tried
        return None, tried

    def folder_for(self, base: Path, ratio: float) -> Path:
        """The training folder of a conflict ratio, or one error listing the ratios on disk."""
        folders = ratio_folders(base)
        for name, r in folders.items():
            if abs(r - ratio) <= 1e-9 * max(r, ratio):
                return base / name
        have = ", ".join(f"{n} (--conflict-ratio {r:g})" for n, r in folders.items())
        raise DataUnavailable(f"{self.title} has no folder for conflict ratio {ratio:g} in {base}; on disk: {have}",
                              "pass one of those conflict ratios (the release's folders fix them)")

    def _read(self, base: Path, ratio: float | None, split: str) -> Source:
        empty_x, empty_y = _empty(self.size)
        if split == "test":
            x, y, b = self._parse(_files(base / "test", (".png",), one_level=True), base / "test", None)
            return Source(empty_x, empty_y, x, y, origin=str(base), train_attributes=empty_y, test_attributes=b)
        folder = self.folder_for(base, ratio)
        parts = [self._parse(_files(folder / kind, (".png",), one_level=True), folder / kind, kind == "align")
                 for kind in ("align", "conflict")]
        x, y, b = (np.concatenate(a) for a in zip(*parts))
        if len(y) == 0:
            raise DataUnavailable(f"no PNG files in {folder}/align or {folder}/conflict", self.how_to)
        return Source(x, y, empty_x, empty_y, origin=str(folder), train_attributes=b, test_attributes=empty_y)

    def _parse(self, files: list[Path], folder: Path, aligned: bool | None) -> tuple[np.ndarray, ...]:
        """Images and (target, bias) from the names, checked against the class folder and align/conflict."""
        bad = [p.name for p in files if not _DFA_NAME.match(p.name)]
        if bad:
            raise DataUnavailable(f"{len(bad)} {self.title} file(s) in {folder} are misnamed, e.g. {bad[0]!r}",
                                  "files must be named <index>_<target>_<bias>.png as in the DFA release")
        if aligned is None and not files:
            raise DataUnavailable(f"no PNG files in {folder}", f"put the release's test images in {folder}")
        targets, biases = [], []
        for p in files:
            m = _DFA_NAME.match(p.name)
            t, b = int(m.group(2)), int(m.group(3))
            where = p.parent.name
            if t >= self.num_classes or b >= self.num_attributes:
                raise DataUnavailable(f"{p} names class {t}, bias {b}; {self.title} has {self.num_classes} classes "
                                      f"and {self.num_attributes} bias values", "check the file or the dataset chosen")
            if where.isdigit() and int(where) != t:
                raise DataUnavailable(f"{p} is in class folder {where} but its name says class {t}",
                                      "move it to its class folder (the release files each under its target)")
            if aligned is not None and (b == self.aligned[t]) != aligned:
                kind, other = ("align", "conflict") if aligned else ("conflict", "align")
                raise DataUnavailable(f"{p} is in {kind}/ but its name (class {t}, bias {b}) makes it "
                                      f"bias-{'conflicting' if aligned else 'aligned'}", f"move it to {other}/")
            targets.append(t)
            biases.append(b)
        return (read_images(files, self.size, self.fit), np.asarray(targets, np.int64), np.asarray(biases, np.int64))


# --------------------------------------------------------------------------- UTKFace

_UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+\.jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
UTK_AGE_EDGES = (20, 40)            # 0-19, 20-39, 40+ (FairDD)
UTK_RACES = ("white", "black", "asian", "indian")  # race 4 "others" is dropped
UTK_MISNAMED_TOLERANCE = 0.01       # the public release has a handful of misnamed files: skipped, warned
TEST_SHARE = 0.2


class UtkFaceSource(DataSource):
    """UTKFace: one folder of `<age>_<gender>_<race>_<date>.jpg`; a fixed 80/20 split of each group."""

    name, title = "utkface", "UTKFace"
    how_to = ("download UTKFace (the aligned & cropped faces) and pass --data-root DIR where DIR/UTKFace holds "
              "the <age>_<gender>_<race>_<date>.jpg files")

    def __init__(self, size: int = 64):
        self.size = size

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        tried: list[str] = []
        for root in data_roots(data_root):
            for base in (root / "UTKFace", root / "utkface", root / "utkface" / "UTKFace", root):
                tried.append(str(base))
                if base.is_dir() and any(_UTK_NAME.match(p.name) for p in _first(base, 200)):
                    return Located(str(base), _stamp_tree(base), lambda b=base: self._read(b)), tried
        return None, tried

    def _read(self, base: Path) -> Source:
        files = _files(base, (".jpg", ".jpeg"))
        named = [(p, _UTK_NAME.match(p.name)) for p in files]
        bad = [p.name for p, m in named if m is None]
        if len(bad) > UTK_MISNAMED_TOLERANCE * len(files):
            raise DataUnavailable(f"{len(bad)} of {len(files)} UTKFace files in {base} are misnamed, e.g. {bad[0]!r}",
                                  "files must be named <age>_<gender>_<race>_<date>.jpg as published")
        if bad:
            log.warning("UTKFace: skipping %d misnamed file(s), e.g. %s", len(bad), bad[0])
        kept = [(p, int(m.group(1)), int(m.group(3))) for p, m in named if m is not None and int(m.group(3)) < 4]
        paths = [p for p, _, _ in kept]
        targets = np.searchsorted(UTK_AGE_EDGES, [age for _, age, _ in kept], side="right").astype(np.int64)
        races = np.asarray([r for _, _, r in kept], np.int64)
        return _fixed_split(paths, targets, races, 3, len(UTK_RACES), self.size, "crop", str(base))


def _first(folder: Path, n: int) -> list[Path]:
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            out.append(Path(entry.path))
            if len(out) >= n:
                break
    return out


def _fixed_split(paths: list[Path], targets: np.ndarray, attrs: np.ndarray, num_classes: int,
                 num_attributes: int, size: int, fit: str, origin: str) -> Source:
    """A seed-independent split: 20% of each (class, attribute) group (sorted names, fixed permutation) is
    the test pool, balanced within each class; the test pool's surplus goes back to training."""
    rng = np.random.default_rng([0, 7])
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(num_classes):
        for a in range(num_attributes):
            g = rng.permutation(np.flatnonzero((targets == c) & (attrs == a)))
            is_test[g[:int(len(g) * TEST_SHARE)]] = True
    pool = np.flatnonzero(is_test)
    test = pool[balanced_test(targets[pool], attrs[pool], num_classes, num_attributes)]
    train = np.setdiff1d(np.arange(len(targets)), test)
    return _source(paths, targets, attrs, train, test, num_classes, num_attributes, size, fit, origin)


def _source(paths, targets, attrs, train, test, num_classes, num_attributes, size, fit, origin) -> Source:
    if len(train) == 0 or len(test) == 0:
        raise DataUnavailable(f"{origin}: {len(train)} training and {len(test)} test images after the split",
                              "the folder holds too few usable images")
    aligned = most_frequent_attribute(targets[train], attrs[train], num_classes, num_attributes)
    return Source(read_images([paths[i] for i in train], size, fit), targets[train],
                  read_images([paths[i] for i in test], size, fit), targets[test], origin=origin,
                  train_attributes=attrs[train], test_attributes=attrs[test], aligned_attribute=aligned)


# --------------------------------------------------------------------------- CelebA

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")
CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt")


class CelebASource(DataSource):
    """CelebA in torchvision's layout; train = partition 0, test = partition 2 (balanced), valid unused."""

    name, title = "celeba", "CelebA"
    how_to = ("download CelebA (torchvision's layout) and pass --data-root DIR where DIR/celeba holds "
              "img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt")

    def __init__(self, target: str = "Attractive", attribute: str = "Male", size: int = 64):
        self.target, self.attribute, self.size = target, attribute, size

    def locate(self, data_root) -> tuple[Located | None, list[str]]:
        tried: list[str] = []
        for root in data_roots(data_root):
            for base in (root / "celeba", root):
                tried.append(str(base))
                if (base / "img_align_celeba").is_dir() and all((base / f).is_file() for f in CELEBA_FILES):
                    stamp = _stamp([base / f for f in CELEBA_FILES]) + ";" + _stamp_tree(base / "img_align_celeba")
                    return Located(str(base), stamp, lambda b=base: self._read(b)), tried
        return None, tried

    def _read(self, base: Path) -> Source:
        names, table = _read_attr_table(base / CELEBA_FILES[0])
        missing = [a for a in (self.target, self.attribute) if a not in names]
        if missing:
            raise DataUnavailable(f"{base / CELEBA_FILES[0]} has no column {missing[0]!r}",
                                  "check the file (its second line names the 40 attributes)")
        part = _read_partition(base / CELEBA_FILES[1])
        files = sorted(table)
        no_split = [f for f in files if f not in part]
        if no_split:
            raise DataUnavailable(f"{no_split[0]} (and {len(no_split) - 1} more) have no entry in "
                                  f"{base / CELEBA_FILES[1]}", "use the partition file of the same release")
        t_col, a_col = names.index(self.target), names.index(self.attribute)
        targets = np.asarray([table[f][t_col] for f in files], np.int64)
        attrs = np.asarray([table[f][a_col] for f in files], np.int64)
        split = np.asarray([part[f] for f in files])
        paths = [base / "img_align_celeba" / f for f in files]
        train = np.flatnonzero(split == 0)
        pool = np.flatnonzero(split == 2)
        test = pool[balanced_test(targets[pool], attrs[pool], 2, 2)]
        return _source(paths, targets, attrs, train, test, 2, 2, self.size, "crop", str(base))


def _read_attr_table(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """list_attr_celeba.txt: a count, the attribute names, then `<file> <+1|-1> x 40` rows (as 1/0)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 3:
        raise DataUnavailable(f"{path} is too short to be CelebA's attribute list", "re-download it")
    names = lines[1].split()
    table = {}
    for i, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DataUnavailable(f"{path} line {i} is malformed ({line[:60]!r})",
                                  "each row must be a file name and one 1/-1 per attribute; re-download it")
        table[parts[0]] = [int(v == "1") for v in parts[1:]]
    return names, table


def _read_partition(path: Path) -> dict[str, int]:
    """list_eval_partition.txt: `<file> <0 train|1 valid|2 test>` rows."""
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataUnavailable(f"{path} line {i} is malformed ({line[:60]!r})",
                                  "each row must be a file name and 0, 1 or 2; re-download it")
        out[parts[0]] = int(parts[1])
    return out
