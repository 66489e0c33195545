"""Export a biased split for code outside ddaudit: ImageFolder PNGs, tensor files, or the DisEnt/DFA layout.

Layouts (docs/IMPORT.md, "Export"), all with meta.json (names, counts, the normalisation ddaudit uses):

    imagefolder  train/<cc>_<class>/<index>.png, test/<cc>_<class>/<index>.png, manifest.csv
    tensors      split.safetensors, split.pt (a dict of tensors for torch.load(weights_only=True))
    dfa          <pct>/{align,conflict}/<target>/<index>_<target>_<bias>.png, test/<target>/<index>_<target>_<bias>.png

<index> is the image's row in the split (zero-padded), so every format lists the same images in the same
order. Everything is written into a staging folder inside --out and moved into place at the end (meta.json
last): an interrupted export leaves an earlier one as it was, and a folder holding anything but an earlier
export of the same format is refused before any work.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import cache
from .data import BiasedSplit, check_data_root, check_ratio, check_seed, get_spec, load_split
from .errors import Cancelled, CorruptArtifact, InvalidArgument
from .progress import Progress, ShouldStop, report

FORMATS = ("imagefolder", "tensors", "dfa")
EXPORT_VERSION = 1
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("split", "file", "class", "attribute", "aligned")
SAFETENSORS_FILE, TORCH_FILE = "split.safetensors", "split.pt"
STAGING = ".ddaudit-export.partial"  # inside --out: an interrupted export's leftovers, removed by the next one
PNG_LEVEL = 1                          # zlib level 1: about 3x faster than the default 6, files ~10% larger
CHUNK = 256                            # images per PNG task (and per progress step)
_PCT = re.compile(r"^\d+(?:\.\d+)?pct$")
OWNED = {"imagefolder": {"train", "test", MANIFEST_FILE, META_FILE},
         "tensors": {SAFETENSORS_FILE, TORCH_FILE, META_FILE},
         "dfa": {"test", META_FILE}}  # and the <pct> folders
NORMALIZATION_NOTE = ("ddaudit feeds its networks (x / 255 - mean) / std per channel, with mean and std of the "
                      "training images in [0, 1] (engine.distill.channel_stats); the test split uses the same "
                      "training statistics. torchvision: Compose([ToTensor(), Normalize(mean, std)]).")


@dataclass(frozen=True)
class ExportPlan:
    """A validated export request: which split, which format (the folder is checked separately)."""

    dataset: str
    conflict_ratio: float
    seed: int
    data_root: str | None
    fmt: str


def check_format(fmt: object) -> str:
    """One of FORMATS, or InvalidArgument naming them."""
    if not isinstance(fmt, str) or fmt.strip().lower() not in FORMATS:
        raise InvalidArgument(f"unknown export format {fmt!r}", f"use --format {', '.join(FORMATS[:-1])} or "
                                                                 f"{FORMATS[-1]}")
    return fmt.strip().lower()


def plan_export(dataset: str, conflict_ratio: object, seed: object = 0, data_root: str | None = None,
                fmt: object = "tensors") -> ExportPlan:
    """Validate every field before anything is loaded or written."""
    spec = get_spec(dataset)
    ratio, seed = check_ratio(conflict_ratio), check_seed(seed)
    check_data_root(data_root)
    return ExportPlan(spec.name, ratio, seed, data_root, check_format(fmt))


def _owned(fmt: str, name: str) -> bool:
    """Whether a top-level entry of --out is one an export of this format writes (and may replace)."""
    return name in OWNED[fmt] or (fmt == "dfa" and bool(_PCT.match(name)))


def earlier_format(out: Path) -> str | None:
    """The format of the ddaudit export in `out` (its meta.json), or None when there is none."""
    meta_path = Path(out) / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = cache.read_json(meta_path)
    except (CorruptArtifact, OSError):
        return None
    mark = meta.get("ddaudit_export") if isinstance(meta, dict) else None
    fmt = mark.get("format") if isinstance(mark, dict) else None
    return fmt if fmt in FORMATS else None


def check_target(out: Path, fmt: str) -> None:
    """Refuse a non-empty `out` unless it holds an earlier ddaudit export of the same format: nothing a
    user saved is overwritten (files beside an earlier export are left as they are)."""
    out = Path(out)
    names = sorted(p.name for p in out.iterdir() if p.name != STAGING) if out.is_dir() else []
    if not names:
        return
    fix = "pass a new or empty folder to --out (an export replaces only an earlier export of the same --format)"
    earlier = earlier_format(out)
    if earlier is None:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise InvalidArgument(f"--out {out} is not empty and holds no ddaudit export ({shown})", fix)
    if earlier != fmt:
        raise InvalidArgument(f"--out {out} holds a ddaudit {earlier} export, not {fmt}",
                              f"{fix}; or pass --format {earlier} to replace that export")


def export_split(plan: ExportPlan, out: Path, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> dict:
    """Write the plan's train and test splits into `out` in its format; a summary (out, format, files, bytes,
    seconds) comes back."""
    out = Path(out)
    check_target(out, plan.fmt)
    t0 = time.perf_counter()
    train = load_split(plan.dataset, plan.conflict_ratio, "train", plan.seed, plan.data_root)
    test = load_split(plan.dataset, plan.conflict_ratio, "test", plan.seed, plan.data_root)
    if train.images.shape[1] not in (1, 3):
        raise InvalidArgument(f"{plan.dataset} has {train.images.shape[1]} channels", "export images with 1 or 3")
    meta = describe(train, test, plan)
    made = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the export fails
    stage = out / STAGING
    try:
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        files, size = WRITERS[plan.fmt](train, test, plan, stage, meta, progress, should_stop)
        cache.atomic_write_json(stage / META_FILE, meta)
        files, size = files + 1, size + (stage / META_FILE).stat().st_size
        _swap(stage, out, plan.fmt)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if made:
            shutil.rmtree(out, ignore_errors=True)
        for p in made[1:]:
            try:
                p.rmdir()
            except OSError:
                pass
        raise
    return {"out": str(out), "format": plan.fmt, "dataset": plan.dataset, "conflict_ratio": plan.conflict_ratio,
            "seed": plan.seed, "train": len(train), "test": len(test), "files": files, "bytes": size,
            "seconds": round(time.perf_counter() - t0, 3)}


def _swap(stage: Path, out: Path, fmt: str) -> None:
    """Replace the earlier export's entries with the staged ones; meta.json last, so it always names a
    format whose files are there."""
    for entry in sorted(out.iterdir()):
        if entry.name in (STAGING, META_FILE) or not _owned(fmt, entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in sorted(stage.iterdir()):
        if entry.name != META_FILE:
            os.replace(entry, out / entry.name)
    os.replace(stage / META_FILE, out / META_FILE)
    stage.rmdir()


# --------------------------------------------------------------------------- meta.json

def class_folders(class_names: tuple[str, ...]) -> list[str]:
    """ImageFolder class folders whose sorted order is the class index order: `00_<safe name>`."""
    width = max(2, len(str(len(class_names) - 1)))
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip("-.") or "class" for n in class_names]
    return [f"{i:0{width}d}_{s}" for i, s in enumerate(safe)]


def pct_folder(ratio: float) -> str:
    """The DFA release's training folder name for a conflict ratio: 0.01 -> 1pct, 0.005 -> 0.5pct."""
    return np.format_float_positional(round(ratio * 100, 10), trim="-") + "pct"


def describe(train: BiasedSplit, test: BiasedSplit, plan: ExportPlan) -> dict:
    """meta.json: what the split is, its counts, and the normalisation ddaudit trains with."""
    from .distill import channel_stats
    mean, std = channel_stats(train.images)
    pct = pct_folder(plan.conflict_ratio)
    files = {"imagefolder": {"train": "train/<class folder>/<index>.png", "test": "test/<class folder>/<index>.png",
                             "manifest": f"{MANIFEST_FILE}: {', '.join(MANIFEST_COLUMNS)} (class and attribute as "
                                         "indices, aligned 1/0)", "class_folders": class_folders(train.class_names)},
             "tensors": {SAFETENSORS_FILE: "uint8 <split>_images N x C x H x W, int64 <split>_targets and "
                                           "<split>_attributes, bool <split>_aligned (split: train, test)",
                         TORCH_FILE: "the same tensors as a dict, for torch.load(path, weights_only=True)"},
             "dfa": {"train": pct + "/{align,conflict}/<target>/<index>_<target>_<bias>.png",
                     "test": "test/<target>/<index>_<target>_<bias>.png"}}[plan.fmt]
    return {"ddaudit_export": {"format": plan.fmt, "version": EXPORT_VERSION},
            "dataset": plan.dataset, "conflict_ratio": plan.conflict_ratio, "seed": plan.seed,
            "origin": train.meta.get("origin"), "class_names": list(train.class_names),
            "attribute_names": list(train.attribute_names), "aligned_attribute": list(train.aligned_attribute),
            "image_shape": list(train.images.shape[1:]), "image_dtype": "uint8",
            "splits": {s.split: s.summary() for s in (train, test)},
            "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
                              "note": NORMALIZATION_NOTE},
            "order": "every format lists each split's images in ddaudit's row order (<index>)", "files": files}


# --------------------------------------------------------------------------- writers

def _nhwc(split: BiasedSplit) -> np.ndarray:
    """uint8 N x H x W x C (N x H x W for one channel): what PIL encodes."""
    x = split.images.permute(0, 2, 3, 1).contiguous().numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def _encode_chunk(folder: Path, images: np.ndarray, names: list[str], lo: int, hi: int) -> int:
    """PNG-encode images[lo:hi] to folder/names[i]; the bytes written (PIL releases the GIL while encoding)."""
    from PIL import Image
    size = 0
    for i in range(lo, hi):
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="PNG", compress_level=PNG_LEVEL)
        data = buf.getvalue()
        with open(folder / names[i], "wb") as fh:
            fh.write(data)
        size += len(data)
    return size


def write_pngs(folder: Path, batches: list[tuple[np.ndarray, list[str]]], stage: str,
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> tuple[int, int]:
    """Write every (images, relative names) batch as PNGs under folder with a small thread pool; (files, bytes)."""
    for _, names in batches:
        for parent in sorted({os.path.dirname(n) for n in names}):
            (folder / parent).mkdir(parents=True, exist_ok=True)
    total = sum(len(names) for _, names in batches)
    tasks = [(images, names, lo, min(lo + CHUNK, len(names))) for images, names in batches
             for lo in range(0, len(names), CHUNK)]
    done = size = 0
    report(progress, stage, 0, total)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        futures: list[Future] = [pool.submit(_encode_chunk, folder, *t) for t in tasks]
        try:
            for fut, (_, _, lo, hi) in zip(futures, tasks):
                size += fut.result()
                done += hi - lo
                report(progress, stage, done, total)
                if should_stop is not None and should_stop():
                    raise Cancelled("export cancelled", "run it again; it starts afresh")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return total, size


def _names(split: BiasedSplit, name: Callable[[int, int, int, bool, str], str]) -> list[str]:
    """name(index, target, attribute, aligned, zero-padded index) for every row of the split."""
    width = len(str(max(len(split) - 1, 0)))
    rows = zip(split.targets.tolist(), split.attributes.tolist(), split.aligned.tolist())
    return [name(i, t, a, al, f"{i:0{width}d}") for i, (t, a, al) in enumerate(rows)]


def _write_imagefolder(train: BiasedSplit, test: BiasedSplit, plan: ExportPlan, folder: Path, meta: dict,
                       progress: Progress | None, should_stop: ShouldStop | None) -> tuple[int, int]:
    """train/ and test/ class folders of PNGs, and manifest.csv; (files, bytes)."""
    classes = class_folders(train.class_names)
    batches, rows = [], []
    for split in (train, test):
        for c in classes:  # every class has its folder, so ImageFolder's indices stay ddaudit's
            (folder / split.split / c).mkdir(parents=True, exist_ok=True)
        names = _names(split, lambda i, t, a, al, idx, s=split.split: f"{s}/{classes[t]}/{idx}.png")
        rows += [(split.split, n, t, a, int(al)) for n, t, a, al in
                 zip(names, split.targets.tolist(), split.attributes.tolist(), split.aligned.tolist())]
        batches.append((_nhwc(split), names))
    files, size = write_pngs(folder, batches, "export imagefolder", progress, should_stop)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    data = text.getvalue().encode("utf-8")
    cache.atomic_write_bytes(folder / MANIFEST_FILE, data)
    return files + 1, size + len(data)


def split_tensors(train: BiasedSplit, test: BiasedSplit) -> dict[str, torch.Tensor]:
    """`<split>_images` (uint8), `_targets`, `_attributes` (int64), `_aligned` (bool) for train and test."""
    out = {}
    for s in (train, test):
        out.update({f"{s.split}_images": s.images.contiguous(), f"{s.split}_targets": s.targets.long().contiguous(),
                    f"{s.split}_attributes": s.attributes.long().contiguous(),
                    f"{s.split}_aligned": s.aligned.bool().contiguous()})
    return out


def _write_tensors(train: BiasedSplit, test: BiasedSplit, plan: ExportPlan, folder: Path, meta: dict,
                   progress: Progress | None, should_stop: ShouldStop | None) -> tuple[int, int]:
    """split.safetensors and split.pt; (files, bytes)."""
    tensors = split_tensors(train, test)
    report(progress, "export tensors", 0, 2)
    cache.save_tensors(folder / SAFETENSORS_FILE, tensors, meta)  # atomic, checksummed; plain safetensors reads it
    report(progress, "export tensors", 1, 2)
    if should_stop is not None and should_stop():
        raise Cancelled("export cancelled", "run it again; it starts afresh")
    torch.save(tensors, folder / TORCH_FILE)  # the staging folder makes it atomic
    report(progress, "export tensors", 2, 2)
    return 2, sum((folder / f).stat().st_size for f in (SAFETENSORS_FILE, TORCH_FILE))


def _write_dfa(train: BiasedSplit, test: BiasedSplit, plan: ExportPlan, folder: Path, meta: dict,
               progress: Progress | None, should_stop: ShouldStop | None) -> tuple[int, int]:
    """<pct>/{align,conflict}/<target>/ and test/<target>/ PNGs named as in the DFA release; (files, bytes)."""
    pct = pct_folder(plan.conflict_ratio)
    train_names = _names(train, lambda i, t, a, al, idx: f"{pct}/{'align' if al else 'conflict'}/{t}/{idx}_{t}_{a}.png")
    test_names = _names(test, lambda i, t, a, al, idx: f"test/{t}/{idx}_{t}_{a}.png")
    return write_pngs(folder, [(_nhwc(train), train_names), (_nhwc(test), test_names)], "export dfa", progress,
                      should_stop)


WRITERS = {"imagefolder": _write_imagefolder, "tensors": _write_tensors, "dfa": _write_dfa}
