"""RunStore: claim, finish, list, compare and remove runs (folders + the SQLite index of index.py)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Iterator

from .. import cache
from ..errors import Cancelled, CorruptArtifact, DataUnavailable, DDAuditError, InvalidArgument, from_os_error
from .index import SELECT, RunIndex
from .records import (CANCEL_FLAG, CHECKPOINTS, CONFIG_FILE, METRICS_FILE, REPORT_FILE, STATUS_FILE, check_status, headline, now, pid_alive,
                      plain, proc_start, run_id_for)
from .run import Run

log = logging.getLogger("ddaudit")


def matches(row: dict, kind: str | tuple[str, ...], **where) -> bool:
    """Whether a listed run (a `list()` row) is of the kind (or kinds) with every `where` config value."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    return row["kind"] in kinds and all((row.get("config") or {}).get(k) == v for k, v in where.items())


class RunStore:
    """Runs under `root` (default cache.home()/'runs'), indexed in root/index.sqlite (WAL)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache.home() / "runs"
        self.index = RunIndex(self.root)

    @property
    def index_path(self) -> Path:
        """The SQLite index file."""
        return self.index.path

    def problems(self, run_id: str) -> list[str]:
        """Integrity check of a run folder: every JSON and safetensors file must load completely."""
        run_dir = self.root / cache.safe_name(run_id)
        found = []
        if not (run_dir / STATUS_FILE).exists():
            found.append(f"{run_dir / STATUS_FILE} is missing")
        for path in sorted(run_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                if path.suffix == ".json":
                    cache.read_json(path)
                    if path.name == STATUS_FILE:
                        self.index.read_status(run_dir)
                elif path.suffix == ".safetensors":
                    cache.load_tensors(path)
            except CorruptArtifact as exc:
                found.append(exc.problem)
        return found

    def start(self, kind: str, config: dict, force: bool = False) -> tuple[Run, bool]:
        """Claim the run for this request: (Run, reused). Reuses an intact finished run unless force."""
        kind = cache.safe_name(kind)
        cfg = plain(config)
        run_id = run_id_for(kind, cfg)
        run_dir = self.root / run_id
        me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": proc_start(os.getpid())}
        self.index.ensure_ready()
        self.index.sync_from_folder(run_id)
        # checked before taking the write lock: loading every tensor file can take a moment
        intact = run_dir.is_dir() and not self.problems(run_id)

        action, old, row = self.index.db(lambda con: self._claim(con, run_id, kind, cfg, force, intact, me))
        if action == "busy":
            raise DDAuditError(f"run {run_id} is already running (process {old['pid']} on {old['host']})",
                               "wait for it to finish, or cancel it: python -m engine runs cancel " + run_id)
        if action == "reuse":
            run = Run(self.index, run_id, kind, cfg, reused=True)
            run.log("reused: an identical finished run exists")
            return run, True
        if action == "fresh" and run_dir.exists():
            if old is not None and old["status"] == "finished" and not force:
                log.warning("run %s: stored files are corrupt (%s); recomputing", run_id,
                            "; ".join(self.problems(run_id))[:500])
            self.index.trash(run_dir)  # forced, corrupt or stale: start clean, old checkpoints included
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CANCEL_FLAG).unlink(missing_ok=True)
        cache.atomic_write_json(run_dir / CONFIG_FILE, cfg)
        self.index.write_status(row)
        (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
        run = Run(self.index, run_id, kind, cfg)
        run.attempt = row["attempts"]
        points = run.checkpoints()
        run.resumed = bool(points)
        if points:
            run.log(f"resuming: found {len(points)} checkpoint file(s), latest "
                    f"{points[-1].relative_to(run.checkpoint_dir)} (attempt {row['attempts']})")
        else:
            run.log(f"started (attempt {row['attempts']}, pid {me['pid']} on {me['host']})")
        return run, False

    def _claim(self, con: sqlite3.Connection, run_id: str, kind: str, cfg: dict, force: bool, intact: bool,
               me: dict) -> tuple[str, dict | None, dict | None]:
        """One transaction: busy, reuse, fresh or resume, and the new row (None unless claimed)."""
        # BEGIN IMMEDIATE: two processes asking for the same run cannot both claim it
        con.execute("BEGIN IMMEDIATE")
        try:
            r = con.execute(f"{SELECT} WHERE id = ?", (run_id,)).fetchone()
            old = self.index.row(r) if r else None
            if old and old["status"] == "running" and pid_alive(old["pid"], old["host"], old["pid_start"]):
                con.execute("ROLLBACK")
                return "busy", old, None
            if old and old["status"] == "finished" and not force and intact:
                con.execute("ROLLBACK")
                return "reuse", old, None
            # a finished or forced run is recomputed from scratch; a failed/cancelled/interrupted one resumes
            action = "fresh" if old is None or old["status"] == "finished" or force else "resume"
            stamp = now()
            row = {"id": run_id, "kind": kind, "status": "running", "created": stamp if action == "fresh"
                   else old["created"], "updated": stamp, "config": cfg, "metrics": {}, "error": None,
                   "attempts": 1 if old is None else int(old.get("attempts") or 1) + 1, **me}
            self.index.upsert(con, row)
            con.execute("COMMIT")
            return action, old, row
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

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
        except OSError as exc:  # a full disk, a lost permission: recorded in words, as the CLI says it
            run.fail(from_os_error(exc).problem)
            raise
        except BaseException as exc:
            run.fail(f"{type(exc).__name__}: {exc}")
            raise
        else:
            if run.status == "running":  # the body may have called finish/fail itself
                run.finish(None)

    def set_status(self, run: Run, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        """Write status.json (the truth) first, then the index row."""
        run.set_status(status, metrics, error)

    def reconcile(self) -> list[str]:
        """Mark 'running' runs whose process is gone as failed (interrupted); returns their ids."""
        if not self.index.exists():
            return []
        fixed = []
        rows = self.index.db(lambda con: [self.index.row(r) for r in con.execute(SELECT)])
        for row in rows:
            alive = row["status"] == "running" and pid_alive(row["pid"], row["host"], row["pid_start"])
            if not (self.root / row["id"]).is_dir():
                if not alive:  # a remove() that crashed after moving the folder away, or a dead claim
                    self.index.db(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (row["id"],)))
                continue
            if row["status"] != "running" or alive:
                continue
            self.index.sync_from_folder(row["id"])
            row = self.index.get_row(row["id"])
            if row is None or row["status"] != "running":
                continue
            run = Run(self.index, row["id"], row["kind"], row["config"])
            self.set_status(run, "failed", error=f"interrupted: process {row['pid']} on {row['host']} died")
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
            check_status(status)
        if not self.index.exists():
            return []
        self.reconcile()
        rows = self.index.db(lambda con: [self.index.row(r) for r in con.execute(
            f"{SELECT} ORDER BY created DESC, id")])
        return [self._public(r) for r in rows if (kind is None or r["kind"] == kind)
                and (status is None or r["status"] == status)]

    @staticmethod
    def _public(row: dict) -> dict:
        return {k: row[k] for k in ("id", "kind", "status", "created", "updated", "config", "metrics", "error")}

    def get(self, run_id: str) -> dict:
        """One run in full: the index entry plus dir, metrics (from metrics.json), files and problems."""
        run_id = cache.safe_name(run_id)
        self.reconcile()
        row = self.index.get_row(run_id)
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        run_dir = self.root / run_id
        found = self.problems(run_id)
        out = {**self._public(row), "dir": str(run_dir), "attempts": row["attempts"], "problems": found,
               "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
               if run_dir.exists() else []}
        if (run_dir / REPORT_FILE).is_file():  # made by `python -m engine report RUN_ID`
            out["report"] = str(run_dir / REPORT_FILE)
        metrics_path = run_dir / METRICS_FILE
        if metrics_path.exists():
            with contextlib.suppress(CorruptArtifact):
                out["metrics"] = cache.read_json(metrics_path)
        return out

    def stamp(self) -> tuple:
        """Changes whenever a run is claimed, finished, failed or removed (the index and its WAL are
        written); reading the store leaves it alone. For caches of listings (the dashboard's)."""
        out = []
        for path in (self.index.path, Path(f"{self.index.path}-wal")):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return str(self.root), tuple(out)

    def rebuild_index(self) -> int:
        """Rebuild index.sqlite from the run folders (the source of truth); returns the number of runs."""
        return self.index.rebuild()

    def finished(self, kind: str | tuple[str, ...], **where) -> list[Run]:
        """Finished runs of a kind (or kinds), newest first, whose config has every `where` value
        (e.g. finished("audit", dataset="colored-digits", seed=0)); read them through Run."""
        return [Run(self.index, r["id"], r["kind"], r["config"], created=r["created"])
                for r in self.list(status="finished") if matches(r, kind, **where)]

    def open(self, run_id: str) -> Run:
        """A Run handle for an existing run (to read its files)."""
        row = self.index.get_row(cache.safe_name(run_id))
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        return Run(self.index, row["id"], row["kind"], row["config"])

    def request_cancel(self, run_id: str) -> None:
        """Ask a running run (maybe in another process) to stop at its next step."""
        row = self.index.get_row(cache.safe_name(run_id))
        if row is None:
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        if row["status"] == "running":
            cache.atomic_write_bytes(self.root / run_id / CANCEL_FLAG, now().encode())

    def remove(self, run_id: str) -> None:
        """Delete a run's folder and index entry; a live running run is refused."""
        run_id = cache.safe_name(run_id)
        row = self.index.get_row(run_id)
        if row is None and not (self.index.exists() and (self.root / run_id).is_dir()):
            raise InvalidArgument(f"no run named {run_id!r}", "list the runs with `python -m engine runs list`")
        if row and row["status"] == "running" and pid_alive(row["pid"], row["host"], row["pid_start"]):
            raise DDAuditError(f"run {run_id} is still running (process {row['pid']})",
                               f"cancel it first: python -m engine runs cancel {run_id}")
        self._discard(run_id)  # folder first: a crash leaves an index row reconcile can drop

    def _discard(self, run_id: str) -> None:
        self.index.trash(self.root / run_id)
        self.index.db(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (run_id,)))

    def clean(self, status: str = "failed") -> list[str]:
        """Remove every run with this status (never a live running one); returns the removed ids."""
        removed = []
        for row in self.list(status=check_status(status)):
            with contextlib.suppress(DDAuditError):
                self.remove(row["id"])
                removed.append(row["id"])
        return removed

    def compare(self, ids: list[str]) -> dict:
        """Side by side: the config keys that differ and every headline metric, keyed by run id."""
        if not ids:
            raise InvalidArgument("no runs to compare", "name at least one run id")
        return compare_rows([self.get(i) for i in ids])


def compare_rows(rows: list[dict]) -> dict:
    """RunStore.compare of `get` rows (from one store or several)."""
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
