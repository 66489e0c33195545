"""The run store as the pages see it: listings cached until the store changes, and every file of a run
read through engine.store.Run (results, sets, grids, report), never by path."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from engine import cache
from engine.errors import InvalidArgument
from engine.store import Run, RunStore, matches

LIST_TTL_S = 30  # a listing is also refreshed this often: reconcile() marks runs whose process died


def _store() -> RunStore:
    return RunStore()


@st.cache_data(show_spinner=False, max_entries=8, ttl=LIST_TTL_S)
def _rows(stamp: tuple, kind: str | None, status: str | None) -> list[dict]:
    return _store().list(kind=kind, status=status)


def rows(kind: str | None = None, status: str | None = None) -> list[dict]:
    """store.list(kind, status), newest first; cached until the store is written (RunStore.stamp) or
    LIST_TTL_S pass (a reconcile notices runs whose process died), so a rerun does not query it."""
    return _rows(_store().stamp(), kind, status)


def finished(kind: str | tuple[str, ...], **where) -> list[dict]:
    """RunStore.finished on the cached listing: the index rows of the finished runs that match."""
    return [r for r in rows(status="finished") if matches(r, kind, **where)]


def open_run(run_id: str) -> Run | None:
    """A run's handle, to read its files; None when the run is gone (removed since it was listed)."""
    store = _store()
    try:
        return store.open(cache.safe_name(run_id))
    except InvalidArgument:
        return None


def info(run_id: str) -> dict:
    """One run in full (store.get): index entry, folder, metrics, files, problems."""
    return _store().get(run_id)


def results(run_id: str) -> dict:
    """An audit's results (its results.json), {} when the run holds none or is gone."""
    run = open_run(run_id)
    return (run.results() if run else None) or {}


def grids(run_id: str) -> dict[str, Path]:
    """Each method's grid PNG of a run, in the canonical order ({} when the run is gone)."""
    run = open_run(run_id)
    return run.grids() if run else {}


def stored_methods(run_id: str) -> list[str]:
    """The methods whose synthetic sets a run holds, in the canonical order ([] when the run is gone)."""
    run = open_run(run_id)
    return run.methods() if run else []


def report_path(run_id: str) -> Path | None:
    """Where a run's shareable report is (or would be) saved; None when the run is gone."""
    run = open_run(run_id)
    return run.report_path if run else None


def sweep_summaries() -> dict[str, dict]:
    """Finished sweeps (newest first) whose summary is on disk, by run id."""
    from engine.store.records import SWEEP_FILE
    out = {}
    for r in finished("sweep"):
        run = open_run(r["id"])
        summary = run.read_json(SWEEP_FILE) if run else None
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
