"""On-disk cache: atomic writes, content keys, checksummed safetensors (no pickle anywhere)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CorruptArtifact, InvalidArgument

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def home() -> Path:
    """Root folder for caches and runs: $DDAUDIT_HOME, default ~/.cache/ddaudit."""
    root = os.environ.get("DDAUDIT_HOME") or os.path.join(Path.home(), ".cache", "ddaudit")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache for one kind of artifact (datasets, embeddings, ...)."""
    path = home() / "cache" / safe_name(kind)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str) -> str:
    """Refuse anything that could escape a folder when used as a path component."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise InvalidArgument(f"{name!r} is not a safe name",
                              "use letters, digits, '.', '_' and '-' only (no '/' or '..')")
    return name


def cache_key(**parts: Any) -> str:
    """Stable short hash of everything that determines a result."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # a full disk says which file it was
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON counterpart of atomic_write_bytes."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> Any:
    """Read JSON, turning a truncated or corrupt file into CorruptArtifact."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptArtifact(f"{path} is corrupt ({exc})", "delete it; it will be rebuilt") from exc


def tensor_digest(*tensors: torch.Tensor) -> str:
    """The one content hash of tensors' bytes (sha256 hex): keys caches to the data they came from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


CHECKSUM_FORMAT = "2"  # 2: the sha256 covers the metadata too (files without a format: the tensors only)


def _checksum(tensors: dict[str, torch.Tensor], meta_text: str, fmt: str | None) -> str | None:
    """The checksum a file of this format must carry; None for an unknown format (a damaged header)."""
    if fmt is None:
        return _digest(tensors)
    if fmt == CHECKSUM_FORMAT:
        return hashlib.sha256((_digest(tensors) + meta_text).encode()).hexdigest()
    return None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Save CPU tensors as safetensors with a checksum of the tensors and the metadata; atomic."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_text = json.dumps(meta or {}, sort_keys=True, default=_json_default)
    header = {"ddaudit_meta": meta_text, "checksum_format": CHECKSUM_FORMAT,
              "sha256": _checksum(tensors, meta_text, CHECKSUM_FORMAT)}
    atomic_write_bytes(Path(path), st_save(tensors, metadata=header))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify a file written by save_tensors; CorruptArtifact if it fails the check."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        header = _read_header(raw)
        meta = json.loads(header.get("ddaudit_meta", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptArtifact(f"{path} is corrupt or truncated ({exc})", "delete it; it will be rebuilt") from exc
    want = _checksum(tensors, header.get("ddaudit_meta", "{}"), header.get("checksum_format"))
    if want is None or header.get("sha256") != want:  # every byte read back is covered (format 2)
        raise CorruptArtifact(f"{path} failed its checksum", "delete it; it will be rebuilt")
    return tensors, meta


def _read_header(raw: bytes) -> dict[str, str]:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("malformed safetensors metadata")
    return meta


def load_or_none(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Cached tensors if present and intact; a corrupt file is removed so it gets rebuilt."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_tensors(path)
    except CorruptArtifact as exc:
        import logging
        logging.getLogger("ddaudit").warning("rebuilding cache: %s", exc.problem)
        path.unlink(missing_ok=True)
        return None
