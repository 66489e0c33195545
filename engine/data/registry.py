"""The dataset registry: one keyword-only DatasetSpec per biased benchmark."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..corruptions import CORRUPTIONS
from ..errors import InvalidArgument
from . import render
from .sources import BFFHQ, CIFAR10, DIGITS as DIGITS_SOURCE, FASHION_MNIST, MNIST, DataSource

COLOUR_NAMES = ("red", "orange", "yellow", "cream", "green", "cyan", "blue", "violet", "magenta", "white")
DIGITS = tuple(str(i) for i in range(10))
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
Renderer = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """How to build one biased benchmark."""

    name: str
    description: str
    source: DataSource
    render: Renderer
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    aligned_attribute: tuple[int, ...]
    test_every_attribute: bool = False  # small sources: each test image appears once per attribute
    natural_bias: bool = False          # attributes come from the files (BFFHQ), not assigned by us
    digits: bool = False                # no horizontal flip in augmentation

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)


_TEN = tuple(range(10))
REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec(name="colored-digits", description="scikit-learn 8x8 digits upscaled to 32x32, digit coloured "
                "(offline default)", source=DIGITS_SOURCE, render=render.render_fg_threshold, image_shape=(3, 32, 32),
                class_names=DIGITS, attribute_names=COLOUR_NAMES, aligned_attribute=_TEN, test_every_attribute=True,
                digits=True),
    DatasetSpec(name="cmnist", description="Colored MNIST, digit (foreground) coloured", source=MNIST,
                render=render.render_fg_threshold, image_shape=(3, 32, 32), class_names=DIGITS,
                attribute_names=COLOUR_NAMES, aligned_attribute=_TEN, digits=True),
    DatasetSpec(name="cmnist-bg", description="Colored MNIST, background coloured, digit black", source=MNIST,
                render=render.bg(False), image_shape=(3, 32, 32), class_names=DIGITS, attribute_names=COLOUR_NAMES,
                aligned_attribute=_TEN, digits=True),
    DatasetSpec(name="bg-fmnist", description="Fashion-MNIST with a class-correlated background colour",
                source=FASHION_MNIST, render=render.bg(True), image_shape=(3, 32, 32), class_names=FASHION,
                attribute_names=COLOUR_NAMES, aligned_attribute=_TEN),
    DatasetSpec(name="fg-fmnist", description="Fashion-MNIST, object blended from black to a class-correlated colour",
                source=FASHION_MNIST, render=render.render_fg_blend, image_shape=(3, 32, 32), class_names=FASHION,
                attribute_names=COLOUR_NAMES, aligned_attribute=_TEN),
    DatasetSpec(name="corrupted-cifar10", description="CIFAR-10, class i gets corruption i (see engine/corruptions.py)",
                source=CIFAR10, render=render.render_corrupted, image_shape=(3, 32, 32), class_names=CIFAR,
                attribute_names=CORRUPTIONS, aligned_attribute=_TEN),
    DatasetSpec(name="cifar10-s", description="CIFAR-10 grayscale vs colour (FairDD's CIFAR10-S)", source=CIFAR10,
                render=render.render_grayscale, image_shape=(3, 32, 32), class_names=CIFAR,
                attribute_names=("grayscale", "colour"), aligned_attribute=(0,) * 5 + (1,) * 5,
                test_every_attribute=True),
    DatasetSpec(name="bffhq", description="Biased FFHQ: age (young/old) biased by gender, 64x64", source=BFFHQ,
                render=render.render_identity, image_shape=(3, 64, 64), class_names=("young", "old"),
                attribute_names=("female", "male"), aligned_attribute=(0, 1), natural_bias=True),
]}
DEFAULT_DATASET = "colored-digits"


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name, with the list of valid names in the error."""
    if name not in REGISTRY:
        raise InvalidArgument(f"unknown dataset {name!r}", f"choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]
