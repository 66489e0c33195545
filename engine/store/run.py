"""The run store's records: run ids, headline metrics, process liveness, and the Run handle a
computation writes through (docs/RUNS.md)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import cache
from ..errors import InvalidArgument

if TYPE_CHECKING:
    from .store import RunStore

log = logging.getLogger("ddaudit")

STORE_VERSION = 1
STATUSES = ("running", "finished", "failed", "cancelled")
BUSY_TIMEOUT_S = 30.0
CANCEL_FLAG = "cancel-requested"
_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT, pid INTEGER, host TEXT, pid_start TEXT, attempts INTEGER NOT NULL DEFAULT 1)"""
_COLUMNS = ("id", "kind", "status", "created", "updated", "config", "metrics", "error", "pid", "host",
            "pid_start", "attempts")


# --------------------------------------------------------------------------- helpers

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _plain(config: Any) -> Any:
    """A JSON-ready copy of a config (dataclasses, Paths, tuples and numpy scalars allowed)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, sort_keys=True, default=cache._json_default))


def run_id_for(kind: str, config: dict) -> str:
    """Deterministic id: readable prefix (kind, dataset) + hash of everything that determines the run."""
    cache.safe_name(kind)
    cfg = _plain(config)
    key = cache.cache_key(kind=kind, config=cfg, store=STORE_VERSION)
    dataset = cfg.get("dataset") if isinstance(cfg, dict) else None
    prefix = kind
    if isinstance(dataset, str):
        cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in dataset).strip("-.")[:40]
        prefix = f"{kind}-{cleaned}" if cleaned else kind
    return cache.safe_name(f"{prefix}-{key}")


def headline(metrics: Any, limit: int = 200) -> dict[str, Any]:
    """Flatten nested metrics to dotted keys, keeping scalars and short flat lists."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(obj, bool) or obj is None:
            out[prefix] = obj
        elif isinstance(obj, (int, float)):
            # NaN is not JSON; a missing value is what it means here
            out[prefix] = None if isinstance(obj, float) and not math.isfinite(obj) else obj
        elif isinstance(obj, str) and len(obj) <= 80:
            out[prefix] = obj
        elif isinstance(obj, list) and len(obj) <= 32 and all(isinstance(x, (str, int, float, bool)) for x in obj):
            out[prefix] = obj  # e.g. the methods of a run; matrices stay in metrics.json

    walk(_plain(metrics), "")
    return out


def _proc_start(pid: int) -> str | None:
    """Kernel start time of a process (tells a live process from a reused pid), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int | None, host: str | None, pid_start: str | None) -> bool:
    """Whether the process that claimed a run still exists (other hosts are assumed alive)."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return True  # cannot see it from here; never steal a run from another machine
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        if state[state.rindex(")") + 2:].split()[0] in ("Z", "X"):
            return False  # killed, not yet reaped
    except (OSError, ValueError, IndexError):
        pass
    current = _proc_start(pid)
    return not (pid_start and current and current != pid_start)


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise InvalidArgument(f"unknown run status {status!r}", f"use one of: {', '.join(STATUSES)}")
    return status


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    msg = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in msg or "not a database" in msg


# --------------------------------------------------------------------------- a run

class Run:
    """One run's folder: write results into `dir`, checkpoints into `checkpoint_dir`."""

    def __init__(self, store: "RunStore", run_id: str, kind: str, config: dict,
                 reused: bool = False, resumed: bool = False):
        self.store = store
        self.id = run_id
        self.kind = kind
        self.config = config
        self.dir = store.root / run_id
        self.checkpoint_dir = self.dir / "checkpoints"
        self.reused = reused      # an identical finished run was found; nothing to compute
        self.resumed = resumed    # an earlier attempt left checkpoints in checkpoint_dir
        self.attempt = 1          # 1 for a new run, n for its n-th start

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        """The status on disk (status.json), i.e. the truth."""
        return self.store._read_status(self.dir)["status"]

    @property
    def metrics(self) -> dict:
        """The full metrics of a finished run (CorruptArtifact if metrics.json is damaged)."""
        path = self.dir / "metrics.json"
        return cache.read_json(path) if path.exists() else {}

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted((p for p in self.checkpoint_dir.rglob("*") if p.is_file() and not p.name.startswith(".")),
                      key=lambda p: (p.stat().st_mtime_ns, p.name))

    def path(self, *parts: str) -> Path:
        """A path inside the run folder (each part checked with safe_name); parents are created."""
        if not parts:
            raise InvalidArgument("empty path inside a run", "name the file to write")
        path = self.dir.joinpath(*(cache.safe_name(p) for p in parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, msg: str) -> None:
        """Append a timestamped line to log.txt."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{_now()} {msg}\n")
        log.info("[%s] %s", self.id, msg)

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomically write run.dir/<name> (temp file, fsync, rename)."""
        path = self.path(name)
        cache.atomic_write_json(path, obj)
        return path

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
        """Checksummed safetensors inside the run folder (name may be 'method/synthetic.safetensors')."""
        path = self.path(*name.split("/"))
        cache.save_tensors(path, tensors, meta)
        return path

    def load_tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict]:
        """Load and verify tensors written by save_tensors; CorruptArtifact if damaged."""
        return cache.load_tensors(self.dir.joinpath(*(cache.safe_name(p) for p in name.split("/"))))

    def should_stop(self) -> bool:
        """True once someone asked to cancel this run (pass as `should_stop=` to long functions)."""
        return (self.dir / CANCEL_FLAG).exists()

    def finish(self, metrics: dict | None = None) -> None:
        """Mark finished: metrics.json first, then status.json, then the index."""
        if metrics is None:
            metrics = self.metrics
        metrics = _plain(metrics)
        cache.atomic_write_json(self.dir / "metrics.json", metrics)
        self.store._set_status(self, "finished", metrics=headline(metrics))
        self.log("finished")

    def fail(self, error: str) -> None:
        """Mark failed with a one-line reason; checkpoints are kept for a resume."""
        self.store._set_status(self, "failed", error=str(error)[:2000])
        self.log(f"failed: {error}")

    def cancel(self, reason: str = "cancelled") -> None:
        """Mark cancelled; checkpoints are kept for a resume."""
        self.store._set_status(self, "cancelled", error=reason)
        self.log(reason)


# --------------------------------------------------------------------------- the store

