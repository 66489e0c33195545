"""Running a sweep's cells as Ray tasks (a local Ray by default, on loopback; a cluster by address), the one
module that imports ray; every cell is `stored.audit_stored`, and the sweep itself is a stored run."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

from .. import cache, pipeline
from ..errors import Cancelled, DDAuditError, from_os_error
from ..progress import Event, Progress, ShouldStop
from ..store import RunStore
from ..store.queue import compute_slot
from ..store.records import SWEEP_CSV, SWEEP_FILE, run_id_for
from .grid import Cell, Grid, grid_key, prepare
from .summary import summarise, to_csv


def _run_cell(request: dict, threads: int, ship_files: bool) -> dict:
    """A Ray task: one stored audit on the worker; its files come back when the driver's store is elsewhere."""
    import torch
    torch.set_num_threads(max(1, threads))
    from engine import pipeline as pl, stored
    from engine.allocator import tune_cpu_allocator
    tune_cpu_allocator()
    results, run = stored.audit_stored(pl.Request(**request), queued=False)  # Ray's resources schedule cells
    return {"run_id": run.id, "results": results, "files": run.export_files() if ship_files else {}}


def _import_cell(cell: Cell, shipped: dict) -> None:
    """Store a cell computed on another machine under the same run id here (nothing when already here)."""
    with RunStore().run("audit", pipeline.run_key(cell.plan, "audit")) as run:
        if run.reused:
            return
        run.import_files(shipped["files"])
        run.finish(shipped["results"])


CELL_RETRIES = 2  # a cell whose worker or node dies is run again (it resumes from its checkpoint)
TOKEN_FILE = Path("~/.ray/auth_token")


def auth_token_source() -> str | None:
    """Where a Ray token for joining a cluster is found here, the way Ray itself looks (None: nowhere)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "the RAY_AUTH_TOKEN variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path and Path(path).expanduser().is_file():
        return path
    return str(TOKEN_FILE) if TOKEN_FILE.expanduser().is_file() else None


def use_token(address: str | None) -> str | None:
    """Before joining a cluster: when a token is found and RAY_AUTH_MODE is unset, turn token authentication on
    for this process (Ray sends a token only in token mode; a cluster without authentication ignores it).
    Returns the note to show the user, None when nothing was changed."""
    if address is None or os.environ.get("RAY_AUTH_MODE") or (source := auth_token_source()) is None:
        return None
    os.environ["RAY_AUTH_MODE"] = "token"
    return f"Ray: joining with token authentication, token from {source} (RAY_AUTH_MODE=token set for this process)"


def _reload_token() -> None:
    """Ray keeps the first token it reads for the life of the process (a dashboard server that joined a
    cluster would offer that token to its next local Ray, and the other way round): read it again each time."""
    try:
        from ray._raylet import AuthenticationTokenLoader
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: nothing cached to drop
        pass


def _loopback_only(local: bool) -> None:
    """A local Ray listens on 127.0.0.1 only. Ray binds every listener (GCS, raylet, workers, agents) to the
    node's IP, and on Linux turns 127.0.0.1 into the machine's routable IP unless its single-node switch is
    set (measured with `ss -ltn`: 7 listeners on all interfaces without it, none with it). Joining a cluster
    restores Ray's own setting: its nodes must reach this driver."""
    from ray._private import ray_constants
    default = ray_constants.env_bool("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", not ray_constants.IS_WINDOWS_OR_OSX)
    ray_constants.ENABLE_RAY_CLUSTER = default and not local


def _init_ray(address: str | None, shared_home: bool):
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is in requirements.txt
        raise DDAuditError("Ray is not installed", "pip install ray (make install does)") from None
    engine_dir = str(Path(__file__).resolve().parents[1])
    env = {"DDAUDIT_HOME": str(cache.home())} if shared_home else {}
    runtime_env = {"py_modules": [engine_dir], "env_vars": env}
    kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env, ignore_reinit_error=True)
    _loopback_only(address is None)
    use_token(address)
    _reload_token()
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:  # never a `ray start` cluster by accident; on loopback only
            ray.init(address="local", num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        chain, e = [], exc
        while e is not None:
            chain.append(f"{type(e).__name__}: {e}")
            e = e.__cause__
        if any("AuthenticationError" in c or "InvalidAuthToken" in c for c in chain):
            raise DDAuditError(f"Ray at {address} refused this process: it uses token authentication and "
                               + ("the token found here is not the cluster's" if auth_token_source()
                                  else "no token was found here"),
                               "copy the head's ~/.ray/auth_token to this machine (or export RAY_AUTH_TOKEN / "
                               "RAY_AUTH_TOKEN_PATH); the sweep then uses it by itself") from None
        raise DDAuditError(f"cannot start or join Ray at {address or 'local'}: {exc}",
                           "check --address (HOST:PORT of a running `ray start --head`, or auto)") from None
    return ray


def run_sweep(grid: Grid, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0,
              progress: Progress | None = None, should_stop: ShouldStop | None = None) -> dict:
    """Run every cell (reusing finished ones) and return the sweep's summary; the sweep is a stored run."""
    all_cells = prepare(grid, address, cpus_per_cell, gpus_per_cell)
    store = RunStore()
    say = progress or (lambda ev: None)
    t0 = time.time()
    finished = {r.id: r for r in store.finished("audit")}  # one index query for every cell
    results = {c.run_id: res for c in all_cells if c.run_id in finished
               and (res := finished[c.run_id].results()) is not None}
    todo = [c for c in all_cells if c.run_id not in results]
    label = f"sweep {run_id_for('sweep', grid_key(grid))}"
    # Ray starts before the sweep's run is claimed: a bad --address fails before any run
    with _ray_session(address, label, say, should_stop) if todo else contextlib.nullcontext() as ray:
        with store.run("sweep", grid_key(grid)) as sweep_run:
            if sweep_run.reused and sweep_run.read_json(SWEEP_FILE) is not None and not todo:
                summary = sweep_run.read_json(SWEEP_FILE)
                return {**summary, "reused_cells": summary["cells"], "seconds": 0.0}
            say(Event("sweep", len(results), len(all_cells), reused=len(results)))
            if todo:
                _run_on_ray(ray, todo, results, address, cpus_per_cell, gpus_per_cell, say, should_stop,
                            len(all_cells))
            summary = summarise(grid, all_cells, results)
            summary.update(run_id=sweep_run.id, seconds=round(time.time() - t0, 2),
                           reused_cells=len(all_cells) - len(todo))
            sweep_run.write_json(SWEEP_FILE, summary)
            sweep_run.path(SWEEP_CSV).write_text(to_csv(summary["rows"]), encoding="utf-8")
            sweep_run.finish({"cells": len(all_cells), "cell_runs": [c.run_id for c in all_cells],
                              "best_kernel_variance": summary["best_kernel_variance"]})
            return summary


def run_cells(all_cells: list[Cell], address: str | None = None, cpus_per_cell: float = 1,
              gpus_per_cell: float = 0, label: str = "cells", progress: Progress | None = None,
              should_stop: ShouldStop | None = None) -> tuple[dict, int]:
    """Cells that are no sweep grid (engine.reproduce's audits): each an ordinary stored audit, finished ones
    reused, the rest run on Ray as a sweep's are. Returns (results by run id, how many were computed now)."""
    say = progress or (lambda ev: None)
    finished = {r.id: r for r in RunStore().finished("audit")}
    results = {c.run_id: res for c in all_cells if c.run_id in finished
               and (res := finished[c.run_id].results()) is not None}
    todo = list({c.run_id: c for c in all_cells if c.run_id not in results}.values())  # identical cells run once
    say(Event("audits", len(results), len(results) + len(todo), reused=len(results)))
    if todo:
        with _ray_session(address, label, say, should_stop) as ray:
            _run_on_ray(ray, todo, results, address, cpus_per_cell, gpus_per_cell, say, should_stop,
                        len(results) + len(todo), stage="audits")
    return results, len(todo)


_RAY_LOCK = threading.Lock()  # Ray is one per process: two sweeps of one dashboard take turns with it


@contextlib.contextmanager
def _ray_session(address: str | None, label: str, say: Progress, should_stop: ShouldStop | None):
    """This process's Ray for one sweep, shut down after it. It waits for another sweep of this process first,
    then, for a local Ray, for a compute slot of this host (a local sweep is one run of the machine's queue:
    its cells fill the cores); a cluster's driver computes nothing, so it does not queue."""
    while not _RAY_LOCK.acquire(timeout=0.5):
        if should_stop is not None and should_stop():
            raise Cancelled("sweep cancelled while another sweep of this process ran", "start it again")
    try:
        with compute_slot(label, say, should_stop) if address is None else contextlib.nullcontext():
            ray = _init_ray(address, shared_home=address is None)
            try:
                yield ray
            finally:
                ray.shutdown()
    finally:
        _RAY_LOCK.release()


def _run_on_ray(ray, todo: list[Cell], results: dict, address, cpus, gpus, say, should_stop, total: int,
                stage: str = "sweep") -> None:
    # a worker or node lost mid-cell is retried: the cell's stored run resumes from its checkpoint, so the
    # sweep's results are those of an undisturbed sweep; a cell's own error (retry_exceptions off) is not
    task = ray.remote(_run_cell).options(num_cpus=cpus, num_gpus=gpus, max_retries=CELL_RETRIES)
    threads = max(1, int(cpus))
    pending = {task.remote(asdict(c.plan.request), threads, address is not None): c for c in todo}
    t0, done0 = time.time(), len(results)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if should_stop is not None and should_stop():
                raise Cancelled("sweep cancelled", "run the same sweep again: finished cells are kept and reused")
            for ref in ready:
                cell = pending.pop(ref)
                shipped = _get(ray, ref, len(results))
                if shipped["files"]:
                    _import_cell(cell, shipped)
                results[cell.run_id] = shipped["results"]
                n = len(results) - done0
                eta = (time.time() - t0) / n * len(pending)
                say(Event(stage, len(results), total, eta=eta))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _get(ray, ref, finished: int) -> dict:
    """A cell's outcome; a cell's own error is raised as it is, a lost worker or node as one clear error."""
    from ray.exceptions import RayError, RayTaskError
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, DDAuditError):
            raise exc.cause from None
        if isinstance(exc.cause, OSError):  # a full disk on the worker: said in words, with the fix
            raise from_os_error(exc.cause) from None
        raise DDAuditError(f"a cell failed on its Ray worker: {type(exc.cause).__name__}: {exc.cause}",
                           "rerun with DDAUDIT_DEBUG=1 (cells already finished are kept) and report it") from None
    except RayError as exc:
        raise DDAuditError(f"a cell's Ray worker or node was lost {CELL_RETRIES + 1} times "
                           f"({type(exc).__name__}); {finished} cell(s) had finished and are kept",
                           "run the same sweep again: it resumes (was `ray stop` run on this machine?)") from None
