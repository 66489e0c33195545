"""The run store as the pages see it: listings cached until the store changes, and every file of a run
read through engine.store.Run (results, sets, grids, report), never by path. The bundled example
(engine.example) is a second, read-only store listed after the user's runs, each row marked "example"."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import streamlit as st

from engine import cache, example
from engine.errors import DDAuditError, InvalidArgument
from engine.store import Run, RunStore, matches
from engine.store.store import compare_rows

log = logging.getLogger("ddaudit")

LIST_TTL_S = 30  # a listing is also refreshed this often: reconcile() marks runs whose process died


def _store() -> RunStore:
    return RunStore()


def example_store() -> RunStore | None:
    """The bundled example's store, installed on this server's first use (None when off or unusable)."""
    return _example_store(os.environ.get("DDAUDIT_HOME"), example.enabled())


@st.cache_resource(show_spinner=False)
def _example_store(home: str | None, enabled: bool) -> RunStore | None:
    try:
        return example.install()
    except (OSError, DDAuditError) as exc:  # the app works without it
        log.warning("the bundled example could not be installed: %s", exc)
        return None


@st.cache_data(show_spinner=False, max_entries=8, ttl=LIST_TTL_S)
def _rows(stamp: tuple, kind: str | None, status: str | None) -> list[dict]:
    return _store().list(kind=kind, status=status)


@st.cache_data(show_spinner=False, max_entries=8)
def _example_rows(root: str, kind: str | None, status: str | None) -> list[dict]:
    """The example's runs, its audit, demo and sweep first (a newcomer's Results page opens on the audit)."""
    roles = list(example.roles(Path(root)).values())
    found = [{**r, "example": True} for r in RunStore(Path(root)).list(kind=kind, status=status)]
    return sorted(found, key=lambda r: roles.index(r["id"]) if r["id"] in roles else len(roles))


def rows(kind: str | None = None, status: str | None = None) -> list[dict]:
    """store.list(kind, status), newest first, then the bundled example's runs (marked "example"); cached
    until the store is written (RunStore.stamp) or LIST_TTL_S pass (a reconcile notices runs whose process
    died), so a rerun does not query it."""
    ex = example_store()
    own = _rows(_store().stamp(), kind, status)
    if ex is None:
        return own
    mine = {r["id"] for r in own}
    return own + [r for r in _example_rows(os.fspath(ex.root), kind, status) if r["id"] not in mine]


def is_example(run_id: str) -> bool:
    """Whether a run is shown from the bundled example (not the user's store)."""
    ex = example_store()
    return ex is not None and _store().index.get_row(run_id) is None and ex.index.get_row(run_id) is not None


def _owner(run_id: str) -> RunStore:
    """The store that holds a run: the user's, else the example's."""
    return example_store() if is_example(run_id) else _store()


def finished(kind: str | tuple[str, ...], **where) -> list[dict]:
    """RunStore.finished on the cached listing: the index rows of the finished runs that match."""
    return [r for r in rows(status="finished") if matches(r, kind, **where)]


def open_run(run_id: str) -> Run | None:
    """A run's handle, to read its files; None when the run is gone (removed since it was listed)."""
    try:
        run_id = cache.safe_name(run_id)
        store = _owner(run_id)
        return store.open(run_id)
    except InvalidArgument:
        return None


def info(run_id: str) -> dict:
    """One run in full (store.get): index entry, folder, metrics, files, problems."""
    return _owner(run_id).get(run_id)


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
    return compare_rows([info(i) for i in ids])


def remove(run_id: str) -> None:
    """Delete a run (refused while it runs, and for the bundled example)."""
    if is_example(run_id):
        example.refuse_removal(run_id)
    _store().remove(run_id)
    _rows.clear()


def root() -> str:
    """Where the runs live."""
    return os.fspath(_store().root)


def guest_usage(cap_bytes: int) -> str:
    """On a classroom server, for the owner: what the guests' runs hold against their disk cap."""
    return _guest_usage(_store().stamp(), cap_bytes)


@st.cache_data(show_spinner=False, max_entries=2, ttl=LIST_TTL_S)
def _guest_usage(stamp: tuple, cap_bytes: int) -> str:
    from engine.store.gc import human, is_guest, plan_guest_cap
    store = _store()
    n = sum(is_guest(store, r["id"]) for r in store.list())
    used = plan_guest_cap(store, cap_bytes)["guest_bytes"]
    return (f"Guests' runs: {n}, {human(used)} of their {human(cap_bytes)} cap (the oldest are collected beyond it, "
            "never yours, a running or a kept run).")


def example_run(role: str) -> str | None:
    """The bundled example's run for a role ("audit", "demo", "sweep"); None without the example."""
    ex = example_store()
    if ex is None:
        return None
    rid = example.roles(ex.root).get(role)
    return rid if rid and ex.index.get_row(rid) is not None else None


def store_size() -> str:
    """The user's store's size in words (the Runs page's caption); cached like the listing, since it walks
    every file of the store."""
    return _store_size(_store().stamp())


@st.cache_data(show_spinner=False, max_entries=2, ttl=LIST_TTL_S)
def _store_size(stamp: tuple) -> str:
    from engine.store.gc import human, store_bytes
    return human(store_bytes(_store()))


def queue_text() -> str:
    """This machine's compute queue in words: slots busy, runs waiting, the limit and how to change it."""
    from engine.store import queue
    try:
        n = queue.capacity()
    except DDAuditError as exc:
        return f"Compute queue: {exc.problem} ({exc.fix})."
    return (f"Compute queue: {queue.busy_slots(n=n)} of {n} slot(s) computing, {queue.waiting()} run(s) waiting "
            f"(at most {n} run(s) at once on this machine; set {queue.MAX_RUNS_ENV} before `make app` to change it).")


def reproduction(plan) -> dict:
    """A reproduction's side-by-side table (engine.reproduce.collect) from the audits already stored: nothing is
    computed here; `python -m engine reproduce` runs the rest."""
    from engine import reproduce
    done = {r["id"] for r in finished("audit")}
    stored = {a.cell.run_id: res for a in plan.audits if a.cell.run_id in done and (res := results(a.cell.run_id))}
    return reproduce.collect(plan, stored)
