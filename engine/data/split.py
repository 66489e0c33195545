"""The split structure every dataset yields, and the rules that need no data (ratio, seed, counts)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InvalidArgument

# seeds up to 2**31 - 1 (the dashboard's limit too): evaluation seeds are offset by seed * 1000, which must
# stay a valid 64-bit generator seed, so a seed is refused up front instead of failing after the work
MAX_SEED = 2 ** 31 - 1


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
    if not 0 <= value <= MAX_SEED:
        raise InvalidArgument(f"seed {value} is out of range (0 to {MAX_SEED:,})",
                              f"give a whole number between 0 and {MAX_SEED:,}")
    return value


def conflict_count(n_class: int, ratio: float) -> int:
    """Exact number of conflicting images for a class of n_class images (round half up, 1..n-1)."""
    if n_class < 2:
        return 0
    return int(min(n_class - 1, max(1, math.floor(ratio * n_class + 0.5))))
