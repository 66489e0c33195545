"""The distillation's random streams, by name. rng(seed, iteration, name) is a pure function of its arguments, so
a resumed run needs no RNG state, and each user of randomness claims its own name once: two users can never
draw from one stream (a second claim of a name is refused), however many methods or backbones are added.

The streams that existed before they had names keep their old numbers (so every result stays the same); a
method's inner stream was 3 + its registry index, which for a 14th method would have been KDE's 16: now any
method beyond the first five gets "inner:<name>".
"""
from __future__ import annotations

import hashlib

import torch

_NUMBERED = {"main": 0, "groups": 1, "init": 2, "kde": 16, "balanced": 17, "real-net": 18, "expert": 19, "mtt": 20}
_NUMBERED_INNER = ("vanilla", "kde", "fairdd", "cobra", "balanced")  # inner:<method> was 3 + this index
INNER = "inner:"
_CLAIMED: dict[str, str] = {}   # stream name (or family prefix ending in ':') -> the module that claimed it


def claim(name: str, owner: str) -> str:
    """Reserve a stream (or, ending in ':', a family of streams) for one module; returns the name."""
    if not name or name.isdigit() or any(ch.isspace() for ch in name):
        raise ValueError(f"stream name {name!r}: give a word (digits alone would mimic a numbered stream)")
    holder = _CLAIMED.setdefault(name, owner)
    if holder != owner:
        raise ValueError(f"random stream {name!r} is already drawn by {holder}; {owner} must claim its own")
    return name


def inner(method: str) -> str:
    """The stream of a method's own network training (DC's inner loop, COBRA's warm start)."""
    return f"{INNER}{method}"


def stream_id(name: str) -> int | str:
    """What a stream name hashes as: its old number where it had one, else the name itself."""
    if name in _NUMBERED:
        return _NUMBERED[name]
    if name.startswith(INNER) and name[len(INNER):] in _NUMBERED_INNER:
        return 3 + _NUMBERED_INNER.index(name[len(INNER):])
    return name


def claimed(name: str) -> bool:
    """Whether a module has claimed this stream (or its family)."""
    return name in _CLAIMED or any(k.endswith(":") and name.startswith(k) for k in _CLAIMED)


def rng(seed: int, iteration: int, name: str) -> torch.Generator:
    """A CPU generator determined by (seed, iteration, stream); the stream must have been claimed."""
    if not claimed(name):
        raise ValueError(f"random stream {name!r} was never claimed: call streams.claim({name!r}, __name__) once")
    h = hashlib.sha256(f"ddaudit-distill:{seed}:{iteration}:{stream_id(name)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2 ** 63 - 1))
