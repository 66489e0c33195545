"""Garbage collection of a run store: sizes, the keep mark, and `runs gc` (by age and by total size).

What gc never removes: a running run whose process lives, a run marked to keep (`runs keep ID`), and a
run another run references (a sweep's cells, listed in its metrics' `cell_runs`). What it always may
drop: the checkpoints of a finished run (resume state; a finished run is reused or recomputed fresh,
never resumed).
"""
from __future__ import annotations

import contextlib
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .. import cache
from ..errors import CorruptArtifact, DDAuditError, InvalidArgument
from .records import CHECKPOINTS, pid_alive
from .store import RunStore

KEEP_FILE = "keep"  # in a run folder: the user marked the run to keep (gc leaves it)
GUEST_FILE = "guest"  # in a run folder: a guest of a classroom server made it (the guest disk cap applies)
_UNITS = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5g', '1000' (bytes) -> bytes; a clear error otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise InvalidArgument(f"cannot read the size {text!r}", "give a number with an optional unit: 500M, 2G, 1.5T")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human(n: int) -> str:
    """Bytes in words: 512 B, 58.0 MB, 1.2 GB."""
    for unit, size in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def folder_bytes(path: Path) -> int:
    """Bytes of every file under a folder (0 when it is gone)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def store_bytes(store: RunStore) -> int:
    """Bytes of the whole store (runs, index, trash)."""
    return folder_bytes(store.root)


def set_keep(store: RunStore, run_id: str, keep: bool = True) -> None:
    """Mark a run to keep (or unmark it); gc never removes a kept run."""
    run_id = cache.safe_name(run_id)
    store.get(run_id)  # unknown id -> the clear error
    mark = store.root / run_id / KEEP_FILE
    if keep:
        cache.atomic_write_bytes(mark, b"kept by the user (python -m engine runs keep)\n")
    else:
        mark.unlink(missing_ok=True)


def is_kept(store: RunStore, run_id: str) -> bool:
    return (store.root / run_id / KEEP_FILE).is_file()


def referenced(store: RunStore) -> set[str]:
    """Run ids another run references: every sweep's cells."""
    out: set[str] = set()
    for row in store.list(kind="sweep"):
        with contextlib.suppress(CorruptArtifact):  # a damaged sweep record references nothing readable
            out.update(store.open(row["id"]).metrics.get("cell_runs") or [])
    return out


def _age_days(stamp: str | None, now: datetime) -> float:
    try:
        then = datetime.fromisoformat(str(stamp))
    except ValueError:
        return 0.0
    return (now - then).total_seconds() / 86400


def plan_gc(store: RunStore, older_than_days: float | None = None, max_bytes: int | None = None,
            now: datetime | None = None) -> dict:
    """What gc would do: {'runs': [{id, bytes, reason}], 'checkpoints': [{id, bytes}], 'protected': {id: why},
    'store_bytes': before, 'after_bytes': estimated}."""
    if older_than_days is not None and not older_than_days >= 0:
        raise InvalidArgument(f"--older-than {older_than_days} is not usable", "give a number of days >= 0")
    now = now or datetime.now(timezone.utc)
    rows = store.list()
    refs = referenced(store)
    protected, candidates = {}, []
    for r in rows:
        full = store.index.get_row(r["id"]) or {}
        if r["status"] == "running" and pid_alive(full.get("pid"), full.get("host"), full.get("pid_start")):
            protected[r["id"]] = "running"
        elif is_kept(store, r["id"]):
            protected[r["id"]] = "kept"
        elif r["id"] in refs:
            protected[r["id"]] = "a sweep's cell"
        else:
            candidates.append(r)
    # one walk of each folder: a finished run's checkpoints go whatever else happens to it
    ckpt = {r["id"]: folder_bytes(store.root / r["id"] / CHECKPOINTS) for r in rows if r["status"] == "finished"}
    checkpoints = [{"id": rid, "bytes": n} for rid, n in ckpt.items() if n]
    before = store_bytes(store)
    total = before - sum(ckpt.values())
    doomed = []
    for r in sorted(candidates, key=lambda r: r["updated"] or ""):  # oldest first
        size = folder_bytes(store.root / r["id"]) - ckpt.get(r["id"], 0)
        if older_than_days is not None and _age_days(r["updated"], now) > older_than_days:
            reason = f"older than {older_than_days:g} days"
        elif max_bytes is not None and total > max_bytes:
            reason = f"store over {human(max_bytes)}"
        else:
            continue
        doomed.append({"id": r["id"], "bytes": size, "reason": reason})
        total -= size
    return {"runs": doomed, "checkpoints": checkpoints, "protected": protected, "store_bytes": before,
            "after_bytes": total}


def run_gc(store: RunStore, older_than_days: float | None = None, max_bytes: int | None = None,
           dry_run: bool = False) -> dict:
    """plan_gc, then (unless dry_run) drop finished runs' checkpoints and remove the planned runs."""
    plan = plan_gc(store, older_than_days, max_bytes)
    if dry_run:
        return {**plan, "dry_run": True}
    for c in plan["checkpoints"]:
        shutil.rmtree(store.root / c["id"] / CHECKPOINTS, ignore_errors=True)
    removed = []
    for r in plan["runs"]:
        with contextlib.suppress(DDAuditError):  # a run that started running meanwhile is refused, kept
            store.remove(r["id"])
            removed.append(r["id"])
    return {**plan, "dry_run": False, "removed": removed, "after_bytes": store_bytes(store)}


def mark_guest(store: RunStore, run_id: str, guest: bool = True) -> None:
    """Mark a run as a guest's (under the guest disk cap) or, guest=False, as the owner's (never collected by it)."""
    mark = store.root / cache.safe_name(run_id) / GUEST_FILE
    if guest:
        if mark.parent.is_dir():
            cache.atomic_write_bytes(mark, b"started by a guest of a classroom server (docs/SERVE.md)\n")
    else:
        mark.unlink(missing_ok=True)


def is_guest(store: RunStore, run_id: str) -> bool:
    return (store.root / run_id / GUEST_FILE).is_file()


def plan_guest_cap(store: RunStore, cap_bytes: int, spare: tuple[str, ...] = ()) -> dict:
    """The guests' runs to collect so that they hold at most cap_bytes together: {'runs': [{id, bytes}], oldest
    first, 'guest_bytes': before, 'after_bytes'}. Never an unmarked (owner's) run, a running, kept or referenced
    one, nor those in `spare` (the run a guest just finished)."""
    refs = referenced(store)
    guests = [r for r in store.list() if is_guest(store, r["id"])]
    sizes = {r["id"]: folder_bytes(store.root / r["id"]) for r in guests}
    total = sum(sizes.values())
    doomed, after = [], total
    for r in sorted(guests, key=lambda r: r["updated"] or ""):  # oldest first
        if after <= cap_bytes:
            break
        full = store.index.get_row(r["id"]) or {}
        live = r["status"] == "running" and pid_alive(full.get("pid"), full.get("host"), full.get("pid_start"))
        if live or is_kept(store, r["id"]) or r["id"] in refs or r["id"] in spare:
            continue
        doomed.append({"id": r["id"], "bytes": sizes[r["id"]]})
        after -= sizes[r["id"]]
    return {"runs": doomed, "guest_bytes": total, "after_bytes": after}


def collect_guest_runs(store: RunStore, cap_bytes: int, spare: tuple[str, ...] = ()) -> list[str]:
    """Remove the oldest guest runs until the guests' runs fit cap_bytes (plan_guest_cap); the ids removed."""
    removed = []
    for r in plan_guest_cap(store, cap_bytes, spare)["runs"]:
        with contextlib.suppress(DDAuditError):  # started running meanwhile: refused, kept
            store.remove(r["id"])
            removed.append(r["id"])
    return removed
