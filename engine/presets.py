"""Named settings (presets) with checked overrides: the one chooser evaluation and the probe share."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Mapping, TypeVar

from .errors import InvalidArgument

P = TypeVar("P")


def choose(presets: Mapping[str, P], preset: str | P, what: str, positive: tuple[str, ...], **overrides) -> P:
    """`presets[preset]` (or `preset` as given) with `overrides` applied; unknown names and fields, and
    `positive` fields that are not whole numbers >= 1, are refused with one clear error about `what`."""
    if isinstance(preset, str):
        if preset not in presets:
            raise InvalidArgument(f"unknown {what} preset {preset!r}", f"choose one of: {', '.join(presets)}")
        preset = presets[preset]
    fields = asdict(preset)
    bad = sorted(set(overrides) - set(fields))
    if bad:
        raise InvalidArgument(f"unknown {what} setting(s): {', '.join(bad)}",
                              f"use fields of {type(preset).__name__}: {', '.join(fields)}")
    out = replace(preset, **overrides)
    for name in positive:
        v = getattr(out, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidArgument(f"{what} setting {name}={v!r} must be a positive integer", "give a whole number >= 1")
    return out
