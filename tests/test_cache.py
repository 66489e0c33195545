"""Cache primitives: safe names, atomic writes, checksummed safetensors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine import cache
from engine.errors import CorruptArtifact, InvalidArgument


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200, "a..b", "/abs", "run id"])
def test_safe_name_refuses_path_tricks(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        cache.safe_name(bad)


def test_safe_name_accepts_plain_ids() -> None:
    assert cache.safe_name("audit-colored-digits-0123abcd") == "audit-colored-digits-0123abcd"


def test_cache_key_stable_and_sensitive() -> None:
    assert cache.cache_key(a=1, b="x") == cache.cache_key(b="x", a=1)
    assert cache.cache_key(a=1, b="x") != cache.cache_key(a=2, b="x")


def test_tensor_roundtrip_and_checksum(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tensors = {"x": torch.arange(12, dtype=torch.float32).view(3, 4), "y": torch.tensor([1, 2], dtype=torch.int64)}
    cache.save_tensors(path, tensors, {"note": "hi"})
    back, meta = cache.load_tensors(path)
    assert meta == {"note": "hi"} and all(torch.equal(back[k], tensors[k]) for k in tensors)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifact, match="checksum"):
        cache.load_tensors(path)
    path.write_bytes(bytes(raw[:20]))
    with pytest.raises(CorruptArtifact):
        cache.load_tensors(path)
    assert cache.load_or_none(path) is None and not path.exists()  # removed so it gets rebuilt


def test_atomic_json_leaves_no_temp_files(tmp_path: Path) -> None:
    cache.atomic_write_json(tmp_path / "a.json", {"k": [1, 2]})
    assert cache.read_json(tmp_path / "a.json") == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    (tmp_path / "a.json").write_text('{"k": [1,', encoding="utf-8")
    with pytest.raises(CorruptArtifact):
        cache.read_json(tmp_path / "a.json")
