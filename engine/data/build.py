"""Building splits: exact conflict counts, balanced test splits, cached as checksummed safetensors."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from .. import cache
from ..errors import DataUnavailable, InvalidArgument
from .registry import DatasetSpec, get_spec
from .folders import ratio_folders
from .sources import data_roots
from .split import BiasedSplit, check_ratio, check_seed, conflict_count

log = logging.getLogger("ddaudit")
BUILD_VERSION = 2  # bump when a builder changes: invalidates every cached split (2: BFFHQ reads its ratio folder)


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
                       aligned_attribute: tuple[int, ...], spec: DatasetSpec) -> np.ndarray:
    """Indices keeping the exact conflict ratio per class from a dataset with fixed bias labels."""
    rng = np.random.default_rng([seed, 2])
    keep = []
    for c in range(spec.num_classes):
        idx = np.flatnonzero(targets == c)
        al = idx[attrs[idx] == aligned_attribute[c]]
        cf = idx[attrs[idx] != aligned_attribute[c]]
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


def dataset_status(name: str, data_root=None) -> dict:
    """Availability without downloading: name, available, source, shape, class/attribute counts."""
    spec = get_spec(name)
    data_roots(data_root)  # a bad --data-root is an error even for datasets that do not need one
    ratios = None
    try:
        found, _ = spec.source.locate(data_root)
        available, where = found is not None, found.where if found else None
        if found is not None and spec.ratio_folders:
            ratios = sorted(ratio_folders(Path(found.where)).values())
    except DataUnavailable as exc:
        available, where = False, exc.problem
    return {"name": spec.name, "available": available, "conflict_ratios": ratios, "source": where or f"{spec.source_name} (not found)",
            "image_shape": list(spec.image_shape), "num_classes": spec.num_classes,
            "num_attributes": spec.num_attributes, "description": spec.description, "how_to": spec.source.how_to}


def load_split(name: str, conflict_ratio: float, split: str = "train", seed: int = 0,
               data_root: str | os.PathLike | None = None, use_cache: bool = True) -> BiasedSplit:
    """Build (or load from cache) one split of a biased dataset."""
    spec = get_spec(name)
    name = spec.name  # the canonical name of a variant
    ratio = check_ratio(conflict_ratio)
    seed = check_seed(seed)
    data_roots(data_root)  # a bad --data-root is an error even for datasets that do not need one
    if split not in ("train", "test"):
        raise InvalidArgument(f"unknown split {split!r}", "use train or test")
    found, _ = spec.source.locate(data_root)  # one lookup: its fingerprint keys the cache, its read builds
    fingerprint = found.fingerprint if found else "missing"
    # the test split does not depend on the conflict ratio: key it without
    key = cache.cache_key(dataset=name, split=split, ratio=ratio if split == "train" else None, seed=seed,
                          source=fingerprint, version=BUILD_VERSION)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.name)  # a variant's name holds ':' '=' ','
    path = cache.cache_dir("datasets") / f"{safe}-{split}-{key}.safetensors"
    if use_cache and fingerprint != "missing":
        hit = cache.load_or_none(path)
        if hit is not None:
            tensors, meta = hit
            return _split_from(spec, split, tensors, meta)
    tensors, meta = _build(spec, ratio, split, seed, data_root, found)
    if use_cache:
        cache.save_tensors(path, tensors, meta)
    return _split_from(spec, split, tensors, meta)


def load_pair(name: str, conflict_ratio: float, seed: int = 0, data_root=None) -> tuple[BiasedSplit, BiasedSplit]:
    """(train, test) for a dataset."""
    return (load_split(name, conflict_ratio, "train", seed, data_root),
            load_split(name, conflict_ratio, "test", seed, data_root))


def _split_from(spec: DatasetSpec, split: str, tensors: dict, meta: dict) -> BiasedSplit:
    targets, attrs = tensors["targets"].long(), tensors["attributes"].long()
    aligned_attribute = tuple(int(a) for a in tensors["aligned_attribute"]) if spec.aligned_attribute is None \
        else spec.aligned_attribute
    aligned = attrs == torch.tensor(aligned_attribute)[targets]
    return BiasedSplit(spec.name, split, tensors["images"], targets, attrs, aligned,
                       spec.class_names, spec.attribute_names, aligned_attribute, meta)


def _build(spec: DatasetSpec, ratio: float, split: str, seed: int, data_root, found) -> tuple[dict, dict]:
    log.info("building %s (%s, conflict ratio %s, seed %d)", spec.name, split, ratio, seed)
    # a DFA release reads only the ratio's training folder (or the test folder); load: download or an error
    only = {"ratio": ratio, "split": split} if spec.ratio_folders else {}
    src = found.read(**only) if found is not None else spec.source.load(data_root)
    aligned_attribute = spec.aligned_attribute or src.aligned_attribute
    gen = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    if split == "train":
        images, targets = src.train_images, src.train_labels
        if spec.ratio_folders:  # the release's split as published: its own conflicting images
            attrs = src.train_attributes
        elif spec.natural_bias:
            keep = _subsample_natural(targets, src.train_attributes, ratio, seed, aligned_attribute, spec)
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
               "attributes": torch.from_numpy(np.asarray(attrs, dtype=np.int64)),
               "aligned_attribute": torch.tensor(aligned_attribute, dtype=torch.int64)}
    return tensors, {"origin": src.origin, "conflict_ratio": ratio, "seed": seed, "split": split}


def _balanced_attributes(targets: np.ndarray, spec: DatasetSpec, seed: int) -> np.ndarray:
    """Round-robin attributes within each class after a seeded shuffle: counts differ by <= 1."""
    rng = np.random.default_rng([seed, 3])
    attrs = np.empty_like(targets)
    for c in range(spec.num_classes):
        idx = rng.permutation(np.flatnonzero(targets == c))
        attrs[idx] = (np.arange(len(idx)) + c) % spec.num_attributes
    return attrs
