"""The run store as the pages see it: listings cached until the store changes, and every file of a run
read through engine.store.Run (results, sets, grids, report), never by path."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from engine import cache
from engine.store import Run, RunStore

LIST_TTL_S = 30  # a listing is also refreshed this often: reconcile() marks runs whose process died


def _store() -> RunStore:
    return RunStore()


def _version() -> tuple:
    """Changes whenever the store does: the index's files (SQLite WAL) and the folder's entries."""
    store = _store()
    stamps = []
    for p in (store.index_path, Path(f"{store.index_path}-wal"), store.root):
        try:
            st_ = p.stat()
            stamps.append((st_.st_mtime_ns, st_.st_size))
        except OSError:
            stamps.append(None)
    return str(store.root), tuple(stamps)


@st.cache_data(show_spinner=False, max_entries=8, ttl=LIST_TTL_S)
def _rows(version: tuple, kind: str | None, status: str | None) -> list[dict]:
    return _store().list(kind=kind, status=status)


def rows(kind: str | None = None, status: str | None = None) -> list[dict]:
    """store.list(kind, status), newest first; cached until the store changes (every rerun reads it)."""
    return _rows(_version(), kind, status)


def finished(kind: str | tuple[str, ...], **where) -> list[dict]:
    """Finished runs of a kind (or kinds) whose config has every `where` value: their index rows."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    return [r for r in rows(status="finished") if r["kind"] in kinds
            and all((r.get("config") or {}).get(k) == v for k, v in where.items())]


def open_run(run_id: str) -> Run:
    """A run's handle, to read its files."""
    store = _store()
    return store.open(cache.safe_name(run_id))


def info(run_id: str) -> dict:
    """One run in full (store.get): index entry, folder, metrics, files, problems."""
    return _store().get(run_id)


def results(run_id: str) -> dict:
    """An audit's results (its results.json), {} when the run holds none."""
    return open_run(run_id).results() or {}


def grids(run_id: str) -> dict[str, Path]:
    """Each method's grid PNG of a run, in the canonical order."""
    return open_run(run_id).grids()


def stored_methods(run_id: str) -> list[str]:
    """The methods whose synthetic sets a run holds, in the canonical order."""
    return open_run(run_id).methods()


def sweep_summaries() -> dict[str, dict]:
    """Finished sweeps (newest first) whose summary is on disk, by run id."""
    from engine.store.records import SWEEP_FILE
    out = {}
    for r in finished("sweep"):
        summary = open_run(r["id"]).read_json(SWEEP_FILE)
        if summary is not None:
            out[r["id"]] = summary
    return out


def compare(ids: list[str]) -> dict:
    """store.compare of these runs."""
    return _store().compare(ids)


def remove(run_id: str) -> None:
    """Delete a run (refused while it runs)."""
    _store().remove(run_id)
    _rows.clear()


def root() -> str:
    """Where the runs live (shown to the user)."""
    return os.fspath(_store().root)
