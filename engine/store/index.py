"""The run store's SQLite (WAL) index: a cache of the run folders, rebuilt from them when lost or corrupt."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import cache
from ..errors import CorruptArtifact, DDAuditError, InvalidArgument
from .records import (BUSY_TIMEOUT_S, CONFIG_FILE, INDEX_FILE, METRICS_FILE, STATUS_FILE, STATUSES, check_status,
                      headline, now)

log = logging.getLogger("ddaudit")

SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT, pid INTEGER, host TEXT, pid_start TEXT, attempts INTEGER NOT NULL DEFAULT 1)"""
COLUMNS = ("id", "kind", "status", "created", "updated", "config", "metrics", "error", "pid", "host",
           "pid_start", "attempts")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM runs"


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    msg = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in msg or "not a database" in msg


class RunIndex:
    """The SQLite index of the run folders under `root` and the folders' status records."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / INDEX_FILE
        self._ready = False

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Cross-process lock for index creation and rebuild (rare, short)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return con

    def ensure_ready(self) -> None:
        """Create or check the index once per handle (see _init)."""
        if not self._ready:
            self._init()

    def _init(self) -> None:
        """Create the index (WAL) or check the existing one; a corrupt one is rebuilt."""
        with self.lock():
            fresh = not self.path.exists()
            try:
                con = self._connect()
                try:
                    if not fresh:
                        rows = con.execute("PRAGMA quick_check").fetchall()
                        if rows != [("ok",)]:
                            raise sqlite3.DatabaseError(f"quick_check: {rows[:3]}")
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute(SCHEMA)
                    indexed = {r[0] for r in con.execute("SELECT id FROM runs")}
                finally:
                    con.close()
                fresh = fresh or any(d.name not in indexed for d in self.folders())
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) and "quick_check" not in str(exc):
                    raise
                self._rebuild_locked(reason=str(exc))
            else:
                if fresh:  # folders the index does not know (index deleted or emptied)
                    self._rebuild_locked(reason=None)
        self._ready = True

    def db(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn on a fresh connection; on corruption rebuild the index from the folders once."""
        for attempt in (0, 1):
            self.ensure_ready()
            con = self._connect()
            try:
                return fn(con)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) or attempt:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise DDAuditError(f"the run index {self.path} is busy ({exc})",
                                           "another process holds it; try again in a moment") from exc
                    raise
                self._ready = False
                with self.lock():
                    self._rebuild_locked(reason=str(exc))
            finally:
                con.close()
        raise AssertionError("unreachable")

    def exists(self) -> bool:
        return self.root.is_dir()

    def folders(self) -> list[Path]:
        """Run folders (hidden folders are trash, temp files and locks)."""
        return sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))

    def read_status(self, run_dir: Path) -> dict:
        """status.json of a run folder (CorruptArtifact if damaged, FileNotFoundError if absent)."""
        status = cache.read_json(run_dir / STATUS_FILE)
        if not isinstance(status, dict) or status.get("status") not in STATUSES:
            raise CorruptArtifact(f"{run_dir / STATUS_FILE} is not a valid status record",
                                  "run `python -m engine runs rm` on it or start the run again")
        return status

    def write_status(self, row: dict) -> None:
        cache.atomic_write_json(self.root / row["id"] / STATUS_FILE,
                                {k: row.get(k) for k in COLUMNS if k not in ("config", "metrics")})

    def set_status(self, run_id: str, kind: str, config: dict, status: str, metrics: dict | None = None,
                   error: str | None = None) -> None:
        """A run's new status: status.json (the truth) first, then the index row (metrics kept unless given)."""
        status = check_status(status)
        old = self.get_row(run_id) or {}
        row = {**old, "id": run_id, "kind": kind, "config": config, "status": status, "updated": now(),
               "error": error, "metrics": metrics if metrics is not None else old.get("metrics", {})}
        row.setdefault("created", row["updated"])
        self.write_status(row)
        self.db(lambda con: self.upsert(con, row))

    def upsert(self, con: sqlite3.Connection, row: dict) -> None:
        values = [row.get(k) for k in COLUMNS]
        values[COLUMNS.index("config")] = json.dumps(row.get("config") or {}, sort_keys=True)
        values[COLUMNS.index("metrics")] = json.dumps(row.get("metrics") or {}, sort_keys=True)
        con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    values)

    @staticmethod
    def row(values: tuple) -> dict:
        row = dict(zip(COLUMNS, values))
        row["config"] = json.loads(row["config"])
        row["metrics"] = json.loads(row["metrics"])
        return row

    def get_row(self, run_id: str) -> dict | None:
        def q(con: sqlite3.Connection) -> dict | None:
            r = con.execute(f"{SELECT} WHERE id = ?", (run_id,)).fetchone()
            return self.row(r) if r else None
        return self.db(q) if self.exists() else None

    def trash(self, run_dir: Path) -> None:
        """Remove a folder crash-safely: rename it out of the way first, then delete."""
        if not run_dir.exists():
            return
        trash = self.root / f".trash-{run_dir.name}-{uuid.uuid4().hex[:8]}"
        os.replace(run_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sync_from_folder(self, run_id: str) -> None:
        """Make the index row of one run agree with its status.json (after a crash between the two)."""
        run_dir = self.root / run_id
        row = self.get_row(run_id)
        if row is None or row["status"] != "running" or not run_dir.exists():
            return
        try:
            disk = self.read_status(run_dir)
        except (CorruptArtifact, FileNotFoundError):
            return
        if disk["status"] != "running":
            metrics = headline(cache.read_json(run_dir / METRICS_FILE)) if disk["status"] == "finished" and \
                (run_dir / METRICS_FILE).exists() else row["metrics"]
            self.db(lambda con: self.upsert(con, {**row, **disk, "metrics": metrics}))

    def rebuild(self) -> int:
        """Rebuild index.sqlite from the run folders (the source of truth); returns the number of runs."""
        with self.lock():
            n = self._rebuild_locked(reason=None)
        self._ready = True
        return n

    def _rebuild_locked(self, reason: str | None) -> int:
        """Build a fresh index next to the old one and swap it in; a corrupt old one is kept aside."""
        if reason is not None and self.path.exists():
            aside = self.root / f"index.sqlite.corrupt-{int(time.time())}-{uuid.uuid4().hex[:6]}"
            os.replace(self.path, aside)
            log.warning("run index was corrupt (%s); moved to %s and rebuilt from the run folders", reason, aside)
        for suffix in ("-wal", "-shm"):
            if reason is not None:
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        tmp = self.root / f".index-rebuild-{os.getpid()}-{uuid.uuid4().hex[:6]}.sqlite"
        keep: dict[str, dict] = {}
        if self.path.exists():  # a healthy index: keep rows whose folder exists, fill in the rest
            con = self._connect()
            try:
                con.execute(SCHEMA)
                keep = {r[0]: self.row(r) for r in con.execute(SELECT)}
            finally:
                con.close()
        rows = [r for r in (self._row_from_folder(d, keep.get(d.name)) for d in self.folders()) if r]
        if self.path.exists() and reason is None:
            con = self._connect()
            try:  # in place: other processes may hold the file open
                con.execute("BEGIN IMMEDIATE")
                ids = {r["id"] for r in rows}
                for old_id, old in keep.items():
                    if old_id not in ids and old["status"] != "running":
                        con.execute("DELETE FROM runs WHERE id = ?", (old_id,))
                for r in rows:
                    self.upsert(con, r)
                con.execute("COMMIT")
            finally:
                con.close()
            return len(rows)
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute(SCHEMA)
            con.execute("BEGIN")
            for r in rows:
                self.upsert(con, r)
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
        os.replace(tmp, self.path)
        return len(rows)

    def _row_from_folder(self, run_dir: Path, indexed: dict | None) -> dict | None:
        """An index row rebuilt from a run folder; damaged records make the run 'failed', never trusted."""
        try:
            run_id = cache.safe_name(run_dir.name)
        except InvalidArgument:
            return None
        try:
            config = cache.read_json(run_dir / CONFIG_FILE)
        except (CorruptArtifact, FileNotFoundError) as exc:
            config, error = {}, f"config.json unreadable: {exc}"
        else:
            error = None
        damaged = False
        try:
            status = self.read_status(run_dir)
        except FileNotFoundError:
            # a run being started right now has its index row before its status.json
            status = indexed if indexed is not None else {"status": "failed", "error": "status.json missing"}
        except CorruptArtifact as exc:
            damaged = True
            status = {"status": "failed", "error": f"status.json unreadable: {exc.problem}"}
        row = {"id": run_id, "kind": status.get("kind") or run_id.split("-")[0], "created": status.get("created")
               or now(), "updated": now(), "config": config, "metrics": {}, "attempts": status.get("attempts") or 1,
               **{k: status.get(k) for k in ("status", "error", "pid", "host", "pid_start")}}
        if row["status"] == "finished":
            try:
                row["metrics"] = headline(cache.read_json(run_dir / METRICS_FILE))
            except (CorruptArtifact, FileNotFoundError) as exc:
                row["status"], row["error"] = "failed", f"metrics.json unreadable: {getattr(exc, 'problem', exc)}"
        if error and row["status"] == "finished":
            row["status"], row["error"] = "failed", error
        if indexed is not None and indexed.get("status") == row["status"]:
            row["updated"] = indexed["updated"]
        if damaged or row["status"] != status.get("status"):  # keep the folder's record true as well
            self.write_status(row)
        return row

