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

Datasets with bias labels in their files (the DFA release, UTKFace, CelebA) keep them: the DFA
release's `<pct>` folders are its splits (the ratio picks one); faces are subsampled to the ratio,
each class's aligned attribute being its most frequent one.

Layout: split (BiasedSplit, rules), sources (locate + read per raw source), folders (image-folder
sources), render (images from raw + attributes), registry (DatasetSpec entries), build (load_split,
caching, status).
"""
from __future__ import annotations

from .build import (BUILD_VERSION, assign_train_attributes, dataset_status, load_pair, load_split)
from .registry import (CIFAR, COLOUR_NAMES, DEFAULT_DATASET, DIGITS, FASHION, REGISTRY, DatasetSpec, get_spec)
from .render import (PALETTE, render_bg, render_corrupted, render_fg_blend, render_fg_threshold, render_grayscale,
                     render_identity)
from .folders import CELEBA_ATTRIBUTES, IMAGE_SIZES, ratio_folders
from .sources import (CIFAR10, DIGITS as DIGITS_SOURCE, FASHION_MNIST, IDX_FILES, MNIST, SYSTEM_FASHION_DIRS,
                      DataSource, Located, Source, data_roots, read_idx)
from .split import BiasedSplit, check_ratio, check_seed, conflict_count

__all__ = ["BUILD_VERSION", "CELEBA_ATTRIBUTES", "IMAGE_SIZES", "ratio_folders", "BiasedSplit", "CIFAR", "CIFAR10", "COLOUR_NAMES", "DEFAULT_DATASET",
           "DIGITS", "DIGITS_SOURCE", "DataSource", "DatasetSpec", "FASHION", "FASHION_MNIST", "IDX_FILES",
           "Located", "MNIST", "PALETTE", "REGISTRY", "SYSTEM_FASHION_DIRS", "Source", "assign_train_attributes",
           "check_data_root", "check_ratio", "check_seed", "conflict_count", "data_roots", "dataset_status",
           "get_spec", "load_pair", "load_split", "read_idx", "render_bg", "render_corrupted", "render_fg_blend",
           "render_fg_threshold", "render_grayscale", "render_identity"]


def check_data_root(data_root) -> None:
    """Raise DataUnavailable when --data-root (or $DDAUDIT_DATA) is missing, a file or unreadable."""
    data_roots(data_root)

