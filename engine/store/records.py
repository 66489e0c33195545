"""The run store's records: run ids, the run folder's layout, headline metrics and process liveness
(docs/RUNS.md). Every other module of the store builds on these; they import nothing of the store."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import cache
from ..errors import InvalidArgument

STORE_VERSION = 1
STATUSES = ("running", "finished", "failed", "cancelled")
BUSY_TIMEOUT_S = 30.0
CANCEL_FLAG = "cancel-requested"

# A run folder's layout. Writers and readers go through Run (run.py), never these names by hand.
STATUS_FILE = "status.json"      # the truth about a run, written atomically before the index
CONFIG_FILE = "config.json"      # everything that determined the result
METRICS_FILE = "metrics.json"    # written by Run.finish
RESULTS_FILE = "results.json"    # an audit's results (the same dict as metrics.json)
LOG_FILE = "log.txt"
CHECKPOINTS = "checkpoints"      # resumable state; kept when a run fails or is interrupted
REPORT_FILE = "report.html"      # `python -m engine report RUN_ID`
SWEEP_FILE = "sweep.json"        # a sweep's summary
SWEEP_CSV = "sweep.csv"          # its rows
INDEX_FILE = "index.sqlite"      # in the store's root: the SQLite (WAL) index of the run folders


# --------------------------------------------------------------------------- helpers

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def plain(config: Any) -> Any:
    """A JSON-ready copy of a config (dataclasses, Paths, tuples and numpy scalars allowed)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, sort_keys=True, default=cache._json_default))


def run_id_for(kind: str, config: dict) -> str:
    """Deterministic id: readable prefix (kind, dataset) + hash of everything that determines the run."""
    cache.safe_name(kind)
    cfg = plain(config)
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

    walk(plain(metrics), "")
    return out


def proc_start(pid: int) -> str | None:
    """Kernel start time of a process (tells a live process from a reused pid), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int | None, host: str | None, pid_start: str | None) -> bool:
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
    current = proc_start(pid)
    return not (pid_start and current and current != pid_start)


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise InvalidArgument(f"unknown run status {status!r}", f"use one of: {', '.join(STATUSES)}")
    return status


def holds_run(folder: Path) -> bool:
    """Whether a folder is a run store's root (index.sqlite) or one run's folder (config.json beside status.json)."""
    folder = Path(folder)
    return (folder / INDEX_FILE).exists() or ((folder / CONFIG_FILE).is_file() and (folder / STATUS_FILE).is_file())
