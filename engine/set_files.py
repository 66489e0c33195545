"""Reading a synthetic set made elsewhere into the split's standardised space (docs/IMPORT.md).

Formats, detected from the path:
- ddaudit's own set: `<method>/synthetic.safetensors` (or its folder), as `distill --out` writes it.
- DatasetCondensation family (DC/DSA/DM and the FairDD/COBRA forks): one torch file
  `{'data': [[images, labels], ...], ...}` (one pair per experiment; `experiment` picks one, default the last).
- MTT/DATM: `images_*.pt` with `labels_*.pt` beside it (hard labels; soft label matrices are refused).
- A torch or safetensors file holding `images` and `labels` tensors.
- An image folder: `<class>/<image>` (PNG/JPEG), class folders named like the split's classes (or their
  index, or `NN_<name>` as `export-split --format imagefolder` writes them).
Every torch file is read with `torch.load(weights_only=True)`: a pickle payload is refused, never run.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import cache
from .data import BiasedSplit
from .distill import SyntheticSet, channel_stats, load_synthetic
from .distill.sets import SET_FILE
from .errors import DDAuditError, InvalidArgument

MAX_FILE_MB = float(os.environ.get("DDAUDIT_MAX_IMPORT_MB", "2048"))  # one set file (or folder) at most
MAX_IMAGES = 100_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NORMALIZATIONS = ("split", "unit", "zca")  # or "mean=a,b,c,std=d,e,f"; zca is refused with its fix


@dataclass
class ImportedSet:
    """A set read from a file, in the split's standardised space, and where it came from."""

    name: str
    set: SyntheticSet
    source: dict = field(default_factory=dict)   # path, format, normalization, experiment, bytes, sha256
    warnings: list[str] = field(default_factory=list)


def _refuse(problem: str, fix: str) -> InvalidArgument:
    return InvalidArgument(problem, fix)


def parse_normalization(text: str | None) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
    """'split' (default), 'unit' or 'mean=a[,b,c],std=d[,e,f]' -> (kind, mean, std)."""
    text = (text or "split").strip()
    if text in NORMALIZATIONS:
        return text, None, None
    m = re.fullmatch(r"mean=([-0-9.eE,]+),std=([-0-9.eE,]+)", text.replace(" ", ""))
    fix = ("give --normalization split (the split's mean/std, as export-split's meta.json), unit (images in "
           "[0, 1]) or mean=0.49,0.48,0.45,std=0.25,0.24,0.26 (one value or one per channel)")
    if m is None:
        raise _refuse(f"unknown normalization {text!r}", fix)
    try:
        mean = torch.tensor([float(v) for v in m.group(1).split(",")])
        std = torch.tensor([float(v) for v in m.group(2).split(",")])
    except ValueError:
        raise _refuse(f"normalization {text!r} holds a value that is not a number", fix) from None
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise _refuse(f"normalization {text!r} needs finite means and positive stds", fix)
    return "explicit", mean, std


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2 ** 20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def _torch_load(path: Path):
    """A torch file's tensors; anything pickled (code, objects) is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a payload; others for damaged files
        kind = type(exc).__name__
        if "Unpickl" in kind or "weights_only" in str(exc) or "GLOBAL" in str(exc):
            raise _refuse(f"{path} holds pickled Python objects, not only tensors (ddaudit never unpickles them)",
                          "save plain tensors: torch.save({'images': x, 'labels': y}, path), or a dict of "
                          "lists of tensors as DatasetCondensation does") from None
        raise _refuse(f"{path} is not a readable torch file ({kind}: {str(exc)[:200]})",
                      "pass the file your distillation saved with torch.save") from None


def _pair_from_torch(path: Path, experiment: int | None) -> tuple[torch.Tensor, torch.Tensor, str, dict]:
    """(images, labels, format, extra source info) of a torch file in any supported layout."""
    obj = _torch_load(path)
    if isinstance(obj, dict) and "data" in obj and isinstance(obj["data"], (list, tuple)):
        runs = obj["data"]
        if not runs:
            raise _refuse(f"{path} holds no experiment ('data' is empty)", "pass a result file of a finished run")
        k = len(runs) - 1 if experiment is None else experiment
        if not -len(runs) <= k < len(runs):
            raise _refuse(f"{path} holds {len(runs)} experiment(s); there is no experiment {experiment}",
                          f"pass --experiment between 0 and {len(runs) - 1} (default: the last)")
        pair = runs[k]
        if not (isinstance(pair, (list, tuple)) and len(pair) >= 2):
            raise _refuse(f"{path}: experiment {k} is not an [images, labels] pair", "pass a DatasetCondensation result")
        return pair[0], pair[1], "datasetcondensation", {"experiment": k % len(runs), "experiments": len(runs)}
    if isinstance(obj, dict) and "images" in obj and "labels" in obj:
        return obj["images"], obj["labels"], "tensors", {}
    if isinstance(obj, torch.Tensor):  # MTT/DATM: images_<it>.pt with labels_<it>.pt beside it
        name = path.name
        if not name.startswith("images"):
            raise _refuse(f"{path} holds one tensor but is not named images_*.pt", "pass MTT's images_best.pt "
                          "(with labels_best.pt beside it) or a file holding images and labels")
        label_path = path.with_name("labels" + name[len("images"):])
        if not label_path.is_file():
            raise _refuse(f"{label_path.name} is missing beside {path}", "keep MTT's labels_*.pt next to its images_*.pt")
        labels = _torch_load(label_path)
        if not isinstance(labels, torch.Tensor):
            raise _refuse(f"{label_path} does not hold a tensor", "pass MTT's labels file")
        return obj, labels, "mtt", {"labels": str(label_path)}
    raise _refuse(f"{path} is a torch file ddaudit cannot read as a set", "see docs/IMPORT.md for the layouts: "
                  "{'data': [[images, labels]]}, {'images', 'labels'}, or MTT's images_*.pt + labels_*.pt")


def _pair_from_safetensors(path: Path) -> tuple[torch.Tensor, torch.Tensor, str, dict]:
    if path.name == SET_FILE:
        s = load_synthetic(path)
        return s.images, s.labels, "ddaudit", {"set": s}
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise _refuse(f"{path} is not a readable safetensors file ({str(exc)[:200]})", "pass an intact file") from None
    if not {"images", "labels"} <= set(tensors):
        raise _refuse(f"{path} lacks 'images' and 'labels' tensors", "save both under those names")
    return tensors["images"], tensors["labels"], "tensors", {}


def _class_of_folder(name: str, class_names: list[str]) -> int | None:
    """A class folder's index: the class name, its index, or 'NN_<name>'."""
    lowered = [c.lower() for c in class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    m = re.fullmatch(r"(\d+)(?:_.*)?", name)
    if m and int(m.group(1)) < len(class_names):
        return int(m.group(1))
    return None


def _pair_from_folder(path: Path, train: BiasedSplit) -> tuple[torch.Tensor, torch.Tensor, str, dict]:
    """An ImageFolder of class subfolders, as uint8 images in [0, 1] floats."""
    from PIL import Image
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise _refuse(f"{path} has no class subfolders", "lay the images out as <class>/<image>.png")
    classes = {f: _class_of_folder(f.name, list(train.class_names)) for f in folders}
    unknown = [f.name for f, c in classes.items() if c is None]
    if unknown:
        raise _refuse(f"class folder(s) {', '.join(unknown[:5])} of {path} match no class of {train.dataset} "
                      f"({', '.join(train.class_names)})", "name each folder after its class, its index, or NN_<name>")
    images, labels = [], []
    c, h, w = train.images.shape[1:]
    for folder, cls in classes.items():
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if len(images) >= MAX_IMAGES:
                raise _refuse(f"{path} holds more than {MAX_IMAGES:,} images", "a distilled set is small: check the folder")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(file) as im:
                        if im.width * im.height > 16 * h * w:
                            raise _refuse(f"{file} is {im.width}x{im.height}, far larger than the split's {w}x{h}",
                                          "export the set at the split's image size")
                        im = im.convert("L" if c == 1 else "RGB")
                        arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                        arr = arr.view(im.height, im.width, c).permute(2, 0, 1)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _refuse(f"{file} is a decompression bomb (its header claims a huge image)",
                              "remove it: a distilled image is as small as the split's") from None
            except DDAuditError:
                raise
            except (OSError, ValueError) as exc:
                raise _refuse(f"{file} is not a readable image ({exc})", "remove or re-save it") from None
            if tuple(arr.shape) != (c, h, w):
                raise _refuse(f"{file} is {arr.shape[2]}x{arr.shape[1]} with {arr.shape[0]} channel(s); "
                              f"{train.dataset} images are {w}x{h} with {c}", "export the set at the split's size")
            images.append(arr)
            labels.append(cls)
    if not images:
        raise _refuse(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)})", "pass the folder the set was saved to")
    return torch.stack(images).float() / 255.0, torch.tensor(labels), "imagefolder", {}


def read_set(spec: str, train: BiasedSplit, normalization: str | None = None, experiment: int | None = None,
             soft_labels: str | None = None) -> ImportedSet:
    """Read `PATH[=NAME]` (any supported format) and check it against the split: same image shape and
    channels, labels within the split's classes, finite pixels, not empty. Standardised like the split."""
    path_text, _, name = str(spec).partition("=")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise _refuse(f"no set at {path}", "pass --set PATH[=NAME] of a file or folder that exists")
    if path.is_dir() and (path / SET_FILE).is_file():
        path = path / SET_FILE
    mb = _size_mb(path)
    if mb > MAX_FILE_MB:
        raise _refuse(f"{path} is {mb:,.0f} MB, above the import limit of {MAX_FILE_MB:,.0f} MB",
                      "a distilled set is small: check the path, or raise DDAUDIT_MAX_IMPORT_MB")
    name = cache.safe_name(name or (path.parent.name if path.name == SET_FILE else path.stem))
    kind, mean, std = parse_normalization(normalization)
    if path.is_dir():
        x, y, fmt, extra = _pair_from_folder(path, train)
        kind = "unit"  # image files hold pixels: [0, 1] whatever was asked
    elif path.suffix == ".safetensors":
        x, y, fmt, extra = _pair_from_safetensors(path)
    else:
        x, y, fmt, extra = _pair_from_torch(path, experiment)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise _refuse(f"{path}: images and labels must be tensors", "save torch tensors")
    if x.dtype == torch.uint8:
        kind = "unit"  # pixels 0..255, whatever was asked
    notes: list[str] = []
    y = _hard_labels(y, len(x), train.num_classes, soft_labels, path, notes)
    x = _check_images(x, train, path)
    split_mean, split_std = channel_stats(train.images)
    own = extra.pop("set", None)
    if own is not None:  # ddaudit's own set: already in the split's space, with its statistics
        s = SyntheticSet(name, own.images, y, own.mean, own.std, own.final_loss, 0.0, meta={"imported": True})
        kind = "ddaudit"
    else:
        s = SyntheticSet(name, _standardise(x, kind, mean, std, split_mean, split_std), y, split_mean, split_std,
                         float("nan"), 0.0, meta={"imported": True})
    missing = sorted(set(range(train.num_classes)) - set(y.tolist()))
    if missing:
        notes.append(f"{len(missing)} class(es) have no image in {name}: "
                     f"{', '.join(train.class_names[c] for c in missing)}; the evaluation cannot predict them")
    source = {"path": str(path.resolve()), "format": fmt, "normalization": normalization or "split",
              "images": len(y), "bytes": int(round(mb * 2 ** 20)), **{k: v for k, v in extra.items()}}
    return ImportedSet(name, s, source, notes)


def _hard_labels(y: torch.Tensor, n: int, num_classes: int, soft: str | None, path: Path, notes: list) -> torch.Tensor:
    if y.ndim == 2 and y.shape == (n, num_classes) and y.is_floating_point():
        if soft != "argmax":
            raise _refuse(f"{path} has soft labels ({n} x {num_classes} floats): ddaudit's evaluation trains on hard "
                          "labels", "pass --soft-labels argmax to evaluate the argmax labels (not DATM's soft-label "
                          "protocol; the numbers are then a lower bound of the set)")
        notes.append("soft labels turned into their argmax (--soft-labels argmax)")
        y = y.argmax(1)
    if y.ndim != 1 or len(y) != n:
        raise _refuse(f"{path}: {tuple(y.shape)} labels for {n} images", "save one class index per image")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise _refuse(f"{path}: labels are not whole numbers", "save class indices")
    y = y.long()
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise _refuse(f"{path}: labels range over {int(y.min())}..{int(y.max())}, the split has classes "
                      f"0..{num_classes - 1}", "label the images with the split's class indices (meta.json)")
    return y


def _check_images(x: torch.Tensor, train: BiasedSplit, path: Path) -> torch.Tensor:
    c, h, w = train.images.shape[1:]
    if len(x) == 0:
        raise _refuse(f"{path} holds an empty set", "pass the set your distillation saved")
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise _refuse(f"{path}: images are {tuple(x.shape)}; {train.dataset} needs N x {c} x {h} x {w}",
                      "distill at the split's image size and channels (export-split's meta.json says them)")
    if len(x) > MAX_IMAGES:
        raise _refuse(f"{path} holds {len(x):,} images", "a distilled set is small: check the file")
    x = x.float() if x.is_floating_point() else x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if not bool(torch.isfinite(x).all()):
        raise _refuse(f"{path} has NaN or infinite pixels", "fix the distillation (diverged?) and save again")
    return x.contiguous()


def _standardise(x: torch.Tensor, kind: str, mean, std, split_mean: torch.Tensor, split_std: torch.Tensor):
    """The images in the split's standardised space: (pixels in [0, 1] - split mean) / split std."""
    view = (1, -1, 1, 1)
    if kind == "split":
        return x
    if kind == "zca":
        raise _refuse("ZCA-whitened sets cannot be un-whitened without their ZCA parameters",
                      "distill without --zca, or un-whiten with kornia's ZCAWhitening.inverse_transform first")
    unit = x if kind == "unit" else x * _per_channel(std, x.shape[1]).view(view) + _per_channel(mean, x.shape[1]).view(view)
    return (unit - split_mean.view(view)) / split_std.view(view)


def _per_channel(v: torch.Tensor, c: int) -> torch.Tensor:
    if len(v) == 1:
        return v.expand(c)
    if len(v) != c:
        raise _refuse(f"normalization gives {len(v)} values for {c} channels", f"give one value or {c}")
    return v


def digest(s: SyntheticSet) -> str:
    """The content of a set as the run key holds it."""
    return cache.tensor_digest(s.images, s.labels, s.mean, s.std)[:32]


