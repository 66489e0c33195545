"""Run store: one folder per run plus an SQLite (WAL) index; status stays true after a crash.

Layout under `cache.home()/"runs"` (see docs/RUNS.md)::

    index.sqlite            # cache of the folders: id, kind, status, config, headline metrics
    <run_id>/status.json    # the truth about a run (written atomically, before the index)
    <run_id>/config.json    # everything that determined the result
    <run_id>/metrics.json   # written by finish()
    <run_id>/log.txt        # appended by run.log()
    <run_id>/checkpoints/   # resumable state; kept when a run fails or is interrupted

The index can always be rebuilt from the folders (`rebuild_index`), so a corrupt index is moved
aside and rebuilt instead of being trusted. A 'running' run whose process is gone is marked
failed ("interrupted") by `reconcile()`; starting it again resumes from its checkpoints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import cache
from .errors import Cancelled, CorruptArtifact, DataUnavailable, DDAuditError, InvalidArgument

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
        stat = Path(f"/proc/{pid}/stat").read_text()
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
        state = Path(f"/proc/{pid}/stat").read_text()
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

class RunStore:
    """Runs under `root` (default cache.home()/'runs'), indexed in root/index.sqlite (WAL)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache.home() / "runs"
        self.index_path = self.root / "index.sqlite"
        self._ready = False

    # ---- index plumbing

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Cross-process lock for index creation and rebuild (rare, short)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return con

    def _init(self) -> None:
        """Create the index (WAL) or check the existing one; a corrupt one is rebuilt."""
        with self._lock():
            fresh = not self.index_path.exists()
            try:
                con = self._connect()
                try:
                    if not fresh:
                        rows = con.execute("PRAGMA quick_check").fetchall()
                        if rows != [("ok",)]:
                            raise sqlite3.DatabaseError(f"quick_check: {rows[:3]}")
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute(_SCHEMA)
                    indexed = {r[0] for r in con.execute("SELECT id FROM runs")}
                finally:
                    con.close()
                fresh = fresh or any(d.name not in indexed for d in self._folders())
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) and "quick_check" not in str(exc):
                    raise
                self._rebuild_locked(reason=str(exc))
            else:
                if fresh:  # folders the index does not know (index deleted or emptied)
                    self._rebuild_locked(reason=None)
        self._ready = True

    def _db(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn on a fresh connection; on corruption rebuild the index from the folders once."""
        for attempt in (0, 1):
            if not self._ready:
                self._init()
            con = self._connect()
            try:
                return fn(con)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) or attempt:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise DDAuditError(f"the run index {self.index_path} is busy ({exc})",
                                           "another process holds it; try again in a moment") from exc
                    raise
                self._ready = False
                with self._lock():
                    self._rebuild_locked(reason=str(exc))
            finally:
                con.close()
        raise AssertionError("unreachable")

    def _exists(self) -> bool:
        return self.root.is_dir()

    def _folders(self) -> list[Path]:
        """Run folders (hidden folders are trash, temp files and locks)."""
        return sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))

    # ---- folders

    def _read_status(self, run_dir: Path) -> dict:
        """status.json of a run folder (CorruptArtifact if damaged, FileNotFoundError if absent)."""
        status = cache.read_json(run_dir / "status.json")
        if not isinstance(status, dict) or status.get("status") not in STATUSES:
            raise CorruptArtifact(f"{run_dir / 'status.json'} is not a valid status record",
                                  "run `python -m engine runs rm` on it or start the run again")
        return status

    def _write_status(self, row: dict) -> None:
        cache.atomic_write_json(self.root / row["id"] / "status.json",
                                {k: row.get(k) for k in _COLUMNS if k not in ("config", "metrics")})

    def _upsert(self, con: sqlite3.Connection, row: dict) -> None:
        values = [row.get(k) for k in _COLUMNS]
        values[_COLUMNS.index("config")] = json.dumps(row.get("config") or {}, sort_keys=True)
        values[_COLUMNS.index("metrics")] = json.dumps(row.get("metrics") or {}, sort_keys=True)
        con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    values)

    @staticmethod
    def _row(values: tuple) -> dict:
        row = dict(zip(_COLUMNS, values))
        row["config"] = json.loads(row["config"])
        row["metrics"] = json.loads(row["metrics"])
        return row

    def _get_row(self, run_id: str) -> dict | None:
        def q(con: sqlite3.Connection) -> dict | None:
            r = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
            return self._row(r) if r else None
        return self._db(q) if self._exists() else None

    def _trash(self, run_dir: Path) -> None:
        """Remove a folder crash-safely: rename it out of the way first, then delete."""
        if not run_dir.exists():
            return
        trash = self.root / f".trash-{run_dir.name}-{uuid.uuid4().hex[:8]}"
        os.replace(run_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def problems(self, run_id: str) -> list[str]:
        """Integrity check of a run folder: every JSON and safetensors file must load completely."""
        run_dir = self.root / cache.safe_name(run_id)
        found = []
        if not (run_dir / "status.json").exists():
            found.append(f"{run_dir / 'status.json'} is missing")
        for path in sorted(run_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                if path.suffix == ".json":
                    cache.read_json(path)
                    if path.name == "status.json":
                        self._read_status(run_dir)
                elif path.suffix == ".safetensors":
                    cache.load_tensors(path)
            except CorruptArtifact as exc:
                found.append(exc.problem)
        return found

    # ---- public API

    def start(self, kind: str, config: dict, force: bool = False) -> tuple[Run, bool]:
        """Claim the run for this request: (Run, reused). Reuses an intact finished run unless force."""
        kind = cache.safe_name(kind)
        cfg = _plain(config)
        run_id = run_id_for(kind, cfg)
        run_dir = self.root / run_id
        me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid())}
        if not self._ready:
            self._init()
        self._sync_from_folder(run_id)
        # checked before taking the write lock: loading every tensor file can take a moment
        intact = run_dir.is_dir() and not self.problems(run_id)

        def claim(con: sqlite3.Connection) -> tuple[str, dict | None, dict | None]:
            # BEGIN IMMEDIATE: two processes asking for the same run cannot both claim it
            con.execute("BEGIN IMMEDIATE")
            try:
                r = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
                old = self._row(r) if r else None
                if old and old["status"] == "running" and _pid_alive(old["pid"], old["host"], old["pid_start"]):
                    con.execute("ROLLBACK")
                    return "busy", old, None
                if old and old["status"] == "finished" and not force and intact:
                    con.execute("ROLLBACK")
                    return "reuse", old, None
                # a finished or forced run is recomputed from scratch; a failed/cancelled/interrupted one resumes
                action = "fresh" if old is None or old["status"] == "finished" or force else "resume"
                now = _now()
                row = {"id": run_id, "kind": kind, "status": "running", "created": now if action == "fresh"
                       else old["created"], "updated": now, "config": cfg, "metrics": {}, "error": None,
                       "attempts": 1 if old is None else int(old.get("attempts") or 1) + 1, **me}
                self._upsert(con, row)
                con.execute("COMMIT")
                return action, old, row
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

        action, old, row = self._db(claim)
        if action == "busy":
            raise DDAuditError(f"run {run_id} is already running (process {old['pid']} on {old['host']})",
                               "wait for it to finish, or cancel it: python -m engine runs cancel " + run_id)
        if action == "reuse":
            run = Run(self, run_id, kind, cfg, reused=True)
            run.log("reused: an identical finished run exists")
            return run, True
        if action == "fresh" and run_dir.exists():
            if old is not None and old["status"] == "finished" and not force:
                log.warning("run %s: stored files are corrupt (%s); recomputing", run_id,
                            "; ".join(self.problems(run_id))[:500])
            self._trash(run_dir)  # forced, corrupt or stale: start clean, old checkpoints included
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CANCEL_FLAG).unlink(missing_ok=True)
        cache.atomic_write_json(run_dir / "config.json", cfg)
        self._write_status(row)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        run = Run(self, run_id, kind, cfg)
        run.attempt = row["attempts"]
        points = run.checkpoints()
        run.resumed = bool(points)
        if points:
            run.log(f"resuming: found {len(points)} checkpoint file(s), latest "
                    f"{points[-1].relative_to(run.checkpoint_dir)} (attempt {row['attempts']})")
        else:
            run.log(f"started (attempt {row['attempts']}, pid {me['pid']} on {me['host']})")
        return run, False

    @contextlib.contextmanager
    def run(self, kind: str, config: dict, force: bool = False) -> Iterator[Run]:
        """`with store.run(kind, cfg) as run:` finished on success, cancelled on Cancelled, failed otherwise.

        A new run refused with InvalidArgument/DataUnavailable before saving a checkpoint is
        discarded instead, so a late validation error leaves no run behind.
        """
        run, reused = self.start(kind, config, force=force)
        if reused:
            yield run
            return
        try:
            yield run
        except (Cancelled, KeyboardInterrupt) as exc:
            run.cancel(getattr(exc, "problem", None) or "cancelled")
            raise
        except (InvalidArgument, DataUnavailable) as exc:
            if run.attempt == 1 and not run.checkpoints():
                self._discard(run.id)  # refused before any work was saved: leave no trace of the request
            else:
                run.fail(exc.problem)
            raise
        except DDAuditError as exc:
            run.fail(exc.problem)
            raise
        except BaseException as exc:
            run.fail(f"{type(exc).__name__}: {exc}")
            raise
        else:
            if run.status == "running":  # the body may have called finish/fail itself
                run.finish(None)

    def _set_status(self, run: Run, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        """Write status.json (the truth) first, then the index row."""
        status = _check_status(status)
        old = self._get_row(run.id) or {}
        row = {**old, "id": run.id, "kind": run.kind, "config": run.config, "status": status, "updated": _now(),
               "error": error, "metrics": metrics if metrics is not None else old.get("metrics", {})}
        row.setdefault("created", row["updated"])
        self._write_status(row)
        self._db(lambda con: self._upsert(con, row))

    def _sync_from_folder(self, run_id: str) -> None:
        """Make the index row of one run agree with its status.json (after a crash between the two)."""
        run_dir = self.root / run_id
        row = self._get_row(run_id)
        if row is None or row["status"] != "running" or not run_dir.exists():
            return
        try:
            disk = self._read_status(run_dir)
        except (CorruptArtifact, FileNotFoundError):
            return
        if disk["status"] != "running":
            metrics = headline(cache.read_json(run_dir / "metrics.json")) if disk["status"] == "finished" and \
                (run_dir / "metrics.json").exists() else row["metrics"]
            self._db(lambda con: self._upsert(con, {**row, **disk, "metrics": metrics}))

    def reconcile(self) -> list[str]:
        """Mark 'running' runs whose process is gone as failed (interrupted); returns their ids."""
        if not self._exists():
            return []
        fixed = []
        rows = self._db(lambda con: [self._row(r) for r in con.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs")])
        for row in rows:
            alive = row["status"] == "running" and _pid_alive(row["pid"], row["host"], row["pid_start"])
            if not (self.root / row["id"]).is_dir():
                if not alive:  # a remove() that crashed after moving the folder away, or a dead claim
                    self._db(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (row["id"],)))
                continue
            if row["status"] != "running" or alive:
                continue
            self._sync_from_folder(row["id"])
            row = self._get_row(row["id"])
            if row is None or row["status"] != "running":
                continue
            run = Run(self, row["id"], row["kind"], row["config"])
            self._set_status(run, "failed", error=f"interrupted: process {row['pid']} on {row['host']} died")
            run.log(f"interrupted: process {row['pid']} died; start the run again to resume")
            fixed.append(row["id"])
        for trash in self.root.glob(".trash-*"):  # a remove that crashed half-way
            shutil.rmtree(trash, ignore_errors=True)
        return fixed

    def list(self, kind: str | None = None, status: str | None = None) -> list[dict]:
        """Runs, newest first: id, kind, status, created, updated, config, metrics (headline), error."""
        if kind is not None:
            cache.safe_name(kind)
        if status is not None:
            _check_status(status)
        if not self._exists():
            return []
        self.reconcile()
        rows = self._db(lambda con: [self._row(r) for r in con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created DESC, id")])
        return [self._public(r) for r in rows if (kind is None or r["kind"] == kind)
                and (status is None or r["status"] == status)]

    @staticmethod
    def _public(row: dict) -> dict:
        return {k: row[k] for k in ("id", "kind", "status", "created", "updated", "config", "metrics", "error")}

    def get(self, run_id: str) -> dict:
        """One run in full: the index entry plus dir, metrics (from metrics.json), files and problems."""
        run_id = cache.safe_name(run_id)
        self.reconcile()
        row = self._get_row(run_id)
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        run_dir = self.root / run_id
        found = self.problems(run_id)
        out = {**self._public(row), "dir": str(run_dir), "attempts": row["attempts"], "problems": found,
               "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
               if run_dir.exists() else []}
        metrics_path = run_dir / "metrics.json"
        if metrics_path.exists():
            with contextlib.suppress(CorruptArtifact):
                out["metrics"] = cache.read_json(metrics_path)
        return out

    def open(self, run_id: str) -> Run:
        """A Run handle for an existing run (to read its files)."""
        row = self._get_row(cache.safe_name(run_id))
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        return Run(self, row["id"], row["kind"], row["config"])

    def request_cancel(self, run_id: str) -> None:
        """Ask a running run (maybe in another process) to stop at its next step."""
        row = self._get_row(cache.safe_name(run_id))
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        if row["status"] == "running":
            cache.atomic_write_bytes(self.root / run_id / CANCEL_FLAG, _now().encode())

    def remove(self, run_id: str) -> None:
        """Delete a run's folder and index entry; a live running run is refused."""
        run_id = cache.safe_name(run_id)
        row = self._get_row(run_id)
        if row is None and not (self._exists() and (self.root / run_id).is_dir()):
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        if row and row["status"] == "running" and _pid_alive(row["pid"], row["host"], row["pid_start"]):
            raise DDAuditError(f"run {run_id} is still running (process {row['pid']})",
                               f"cancel it first: python -m engine runs cancel {run_id}")
        self._discard(run_id)  # folder first: a crash leaves an index row reconcile can drop

    def _discard(self, run_id: str) -> None:
        self._trash(self.root / run_id)
        self._db(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (run_id,)))

    def clean(self, status: str = "failed") -> list[str]:
        """Remove every run with this status (never a live running one); returns the removed ids."""
        removed = []
        for row in self.list(status=_check_status(status)):
            with contextlib.suppress(DDAuditError):
                self.remove(row["id"])
                removed.append(row["id"])
        return removed

    def compare(self, ids: list[str]) -> dict:
        """Side by side: the config keys that differ and every headline metric, keyed by run id."""
        if not ids:
            raise InvalidArgument("no runs to compare", "name at least one run id")
        rows = [self.get(i) for i in ids]
        configs = {r["id"]: headline(r["config"]) for r in rows}
        metrics = {r["id"]: headline(r["metrics"]) for r in rows}
        keys = sorted({k for c in configs.values() for k in c})
        differ = {k: {i: c.get(k) for i, c in configs.items()} for k in keys
                  if len({json.dumps(c.get(k)) for c in configs.values()}) > 1}
        same = {k: configs[rows[0]["id"]].get(k) for k in keys if k not in differ}
        mkeys = sorted({k for m in metrics.values() for k in m})
        return {"ids": [r["id"] for r in rows], "kinds": {r["id"]: r["kind"] for r in rows},
                "status": {r["id"]: r["status"] for r in rows}, "config_same": same, "config_diff": differ,
                "metrics": {k: {i: m.get(k) for i, m in metrics.items()} for k in mkeys}}

    def rebuild_index(self) -> int:
        """Rebuild index.sqlite from the run folders (the source of truth); returns the number of runs."""
        with self._lock():
            n = self._rebuild_locked(reason=None)
        self._ready = True
        return n

    def _rebuild_locked(self, reason: str | None) -> int:
        """Build a fresh index next to the old one and swap it in; a corrupt old one is kept aside."""
        if reason is not None and self.index_path.exists():
            aside = self.root / f"index.sqlite.corrupt-{int(time.time())}-{uuid.uuid4().hex[:6]}"
            os.replace(self.index_path, aside)
            log.warning("run index was corrupt (%s); moved to %s and rebuilt from the run folders", reason, aside)
        for suffix in ("-wal", "-shm"):
            if reason is not None:
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
        tmp = self.root / f".index-rebuild-{os.getpid()}-{uuid.uuid4().hex[:6]}.sqlite"
        keep: dict[str, dict] = {}
        if self.index_path.exists():  # a healthy index: keep rows whose folder exists, fill in the rest
            con = self._connect()
            try:
                con.execute(_SCHEMA)
                keep = {r[0]: self._row(r) for r in con.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs")}
            finally:
                con.close()
        rows = [r for r in (self._row_from_folder(d, keep.get(d.name)) for d in self._folders()) if r]
        if self.index_path.exists() and reason is None:
            con = self._connect()
            try:  # in place: other processes may hold the file open
                con.execute("BEGIN IMMEDIATE")
                ids = {r["id"] for r in rows}
                for old_id, old in keep.items():
                    if old_id not in ids and old["status"] != "running":
                        con.execute("DELETE FROM runs WHERE id = ?", (old_id,))
                for r in rows:
                    self._upsert(con, r)
                con.execute("COMMIT")
            finally:
                con.close()
            return len(rows)
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute(_SCHEMA)
            con.execute("BEGIN")
            for r in rows:
                self._upsert(con, r)
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
        os.replace(tmp, self.index_path)
        return len(rows)

    def _row_from_folder(self, run_dir: Path, indexed: dict | None) -> dict | None:
        """An index row rebuilt from a run folder; damaged records make the run 'failed', never trusted."""
        try:
            run_id = cache.safe_name(run_dir.name)
        except InvalidArgument:
            return None
        try:
            config = cache.read_json(run_dir / "config.json")
        except (CorruptArtifact, FileNotFoundError) as exc:
            config, error = {}, f"config.json unreadable: {exc}"
        else:
            error = None
        damaged = False
        try:
            status = self._read_status(run_dir)
        except FileNotFoundError:
            # a run being started right now has its index row before its status.json
            status = indexed if indexed is not None else {"status": "failed", "error": "status.json missing"}
        except CorruptArtifact as exc:
            damaged = True
            status = {"status": "failed", "error": f"status.json unreadable: {exc.problem}"}
        row = {"id": run_id, "kind": status.get("kind") or run_id.split("-")[0], "created": status.get("created")
               or _now(), "updated": _now(), "config": config, "metrics": {}, "attempts": status.get("attempts") or 1,
               **{k: status.get(k) for k in ("status", "error", "pid", "host", "pid_start")}}
        if row["status"] == "finished":
            try:
                row["metrics"] = headline(cache.read_json(run_dir / "metrics.json"))
            except (CorruptArtifact, FileNotFoundError) as exc:
                row["status"], row["error"] = "failed", f"metrics.json unreadable: {getattr(exc, 'problem', exc)}"
        if error and row["status"] == "finished":
            row["status"], row["error"] = "failed", error
        if indexed is not None and indexed.get("status") == row["status"]:
            row["updated"] = indexed["updated"]
        if damaged or row["status"] != status.get("status"):  # keep the folder's record true as well
            self._write_status(row)
        return row
