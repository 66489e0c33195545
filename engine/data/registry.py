"""The dataset registry: one keyword-only DatasetSpec per biased benchmark."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..corruptions import CORRUPTIONS
from ..errors import InvalidArgument
from . import render
from .folders import CELEBA_ATTRIBUTES, IMAGE_SIZES, UTK_RACES, CelebASource, DfaSource, UtkFaceSource
from .sources import CIFAR10, DIGITS as DIGITS_SOURCE, FASHION_MNIST, MNIST, DataSource

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
    aligned_attribute: tuple[int, ...] | None  # None: each class's most frequent attribute in the training data
    test_every_attribute: bool = False  # small sources: each test image appears once per attribute
    natural_bias: bool = False          # attributes come from the files (faces, DFA), not assigned by us
    ratio_folders: bool = False         # the release's <pct> folders are the splits: the ratio picks one
    digits: bool = False                # no horizontal flip in augmentation
    options: tuple[str, ...] = ()       # `name:key=value,...` variants (see variant())
    variant: Callable[..., "DatasetSpec"] | None = None

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)


def _size(value: int | str) -> int:
    if str(value) not in {str(s) for s in IMAGE_SIZES}:
        raise InvalidArgument(f"image size {value!r} is not offered", f"use size={' or '.join(map(str, IMAGE_SIZES))}")
    return int(value)


def _named(base: str, defaults: dict, chosen: dict) -> str:
    """The canonical name of a variant: only the options that differ from the defaults, sorted."""
    diff = {k: v for k, v in sorted(chosen.items()) if str(v) != str(defaults[k])}
    return base + (":" + ",".join(f"{k}={v}" for k, v in diff.items()) if diff else "")


def _utkface(size: int | str = 64) -> DatasetSpec:
    """UTKFace: age bucket (0-19, 20-39, 40+) biased by race, as FairDD."""
    s = _size(size)
    return DatasetSpec(name=_named("utkface", {"size": 64}, {"size": s}),
                       description=f"UTKFace faces: age bucket biased by race (FairDD), {s}x{s}",
                       source=UtkFaceSource(s), render=render.render_identity, image_shape=(3, s, s),
                       class_names=("age 0-19", "age 20-39", "age 40+"), attribute_names=UTK_RACES,
                       aligned_attribute=None, natural_bias=True, options=("size",), variant=_utkface)


def _celeba(target: str = "Attractive", attribute: str = "Male", size: int | str = 64) -> DatasetSpec:
    """CelebA: one of its 40 attributes as the target, another as the protected attribute (FairDD)."""
    for what, v in (("target", target), ("attribute", attribute)):
        if v not in CELEBA_ATTRIBUTES:
            raise InvalidArgument(f"CelebA has no attribute {v!r} (as {what})",
                                  f"choose one of: {', '.join(CELEBA_ATTRIBUTES)}")
    if target == attribute:
        raise InvalidArgument(f"the CelebA target and attribute are both {target!r}", "choose two different ones")
    s = _size(size)
    name = _named("celeba", {"target": "Attractive", "attribute": "Male", "size": 64},
                  {"target": target, "attribute": attribute, "size": s})
    return DatasetSpec(name=name, description=f"CelebA faces: {target} biased by {attribute} (FairDD), {s}x{s}",
                       source=CelebASource(target, attribute, s), render=render.render_identity,
                       image_shape=(3, s, s), class_names=(f"not {target}", target),
                       attribute_names=(f"not {attribute}", attribute), aligned_attribute=None, natural_bias=True,
                       options=("target", "attribute", "size"), variant=_celeba)


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
    DatasetSpec(name="bffhq", description="Biased FFHQ (DFA release): age (young/old) biased by gender, 64x64",
                source=DfaSource("bffhq", "bffhq", "BFFHQ", 64, "resize", 2, 2, (0, 1)), render=render.render_identity,
                image_shape=(3, 64, 64), class_names=("young", "old"), attribute_names=("female", "male"),
                aligned_attribute=(0, 1), natural_bias=True, ratio_folders=True),
    DatasetSpec(name="cmnist-dfa", description="Colored MNIST as released by DisEnt/DFA (LfF colours), 28x28 "
                "padded to 32x32", source=DfaSource("cmnist-dfa", "cmnist", "Colored MNIST (DFA)", 32, "pad", 10, 10,
                                                    _TEN), render=render.render_identity, image_shape=(3, 32, 32),
                class_names=DIGITS, attribute_names=tuple(f"colour {i}" for i in _TEN), aligned_attribute=_TEN,
                natural_bias=True, ratio_folders=True, digits=True),
    DatasetSpec(name="cifar10c-dfa", description="Corrupted CIFAR-10 as released by DisEnt/DFA (its corruptions)",
                source=DfaSource("cifar10c-dfa", "cifar10c", "Corrupted CIFAR-10 (DFA)", 32, "resize", 10, 10, _TEN),
                render=render.render_identity, image_shape=(3, 32, 32), class_names=CIFAR,
                attribute_names=tuple(f"corruption {i}" for i in _TEN), aligned_attribute=_TEN, natural_bias=True,
                ratio_folders=True),
    _utkface(64),
    _celeba("Attractive", "Male", 64),
]}
DEFAULT_DATASET = "colored-digits"


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name (`celeba:target=Smiling,attribute=Male,size=32` for a variant)."""
    if name in REGISTRY:
        return REGISTRY[name]
    base, _, opts = str(name).partition(":")
    spec = REGISTRY.get(base)
    if spec is None or not opts:
        raise InvalidArgument(f"unknown dataset {name!r}", f"choose one of: {', '.join(REGISTRY)}")
    if not spec.options:
        raise InvalidArgument(f"dataset {base!r} has no options (got {opts!r})", f"use plain --dataset {base}")
    pairs = [p.partition("=") for p in opts.split(",")]
    bad = [k for k, eq, v in pairs if not eq or not v or k not in spec.options]
    if bad or len({k for k, _, _ in pairs}) != len(pairs):
        raise InvalidArgument(f"bad option {bad[0] if bad else opts!r} in dataset {name!r}",
                              f"write {base}:key=value,... with keys {', '.join(spec.options)} (each once)")
    return spec.variant(**{k: v for k, _, v in pairs})
