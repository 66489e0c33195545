"""Sweeps: a grid of ordinary stored audits run as Ray tasks (a local Ray by default, a cluster by address).

A grid is ratios x kernel variances x IPCs x seeds for one dataset and a list of methods. Methods that
need no KDE weights (vanilla, FairDD, ...) do not depend on the kernel variance, so each (ratio, IPC,
seed) gets one "shared" cell with them (and the random baseline) and one cell per kernel variance with
the weighted methods only: vanilla is distilled and evaluated once, not once per variance. Every cell is
`stored.audit_stored`: an identical cell is reused, so a rerun resumes; the split, SupCon embeddings
and probe are disk-cached by content, so cells sharing them compute them once per machine.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import cache, data, distill, pipeline
from .results import METRICS as EVAL_METRICS, SHARE
from .density import check_kernel_variance
from .errors import Cancelled, DDAuditError, InvalidArgument, from_os_error
from .progress import Event, Progress, ShouldStop
from .stages import load_train
from .store.queue import compute_slot
from .store.records import SWEEP_CSV, SWEEP_FILE, run_id_for

SWEEP_VERSION = 1
SUGGESTED = "suggested"
METRICS = EVAL_METRICS + (SHARE,)  # a sweep row's metric columns
MAX_CELLS = 10_000


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: one dataset, lists of everything else (each list non-empty)."""

    dataset: str
    ratios: tuple[float, ...]
    kernel_variances: tuple[float | str, ...] = (SUGGESTED,)
    methods: tuple[str, ...] = ("vanilla", "kde", "fairdd")
    ipcs: tuple[int, ...] = (10,)
    seeds: tuple[int, ...] = (0,)
    preset: str = "quick"
    algorithm: str = "dm"
    eval_seeds: int | None = None
    data_root: str | None = None
    overrides: dict = field(default_factory=dict)  # {"distill"|"eval"|"probe"|"embed": {field: value}}: experiments


@dataclass(frozen=True)
class Cell:
    """One stored audit of the grid and the grid coordinates it stands for."""

    plan: pipeline.Plan
    ratio: float
    kernel_variance: float | str | None  # None: the shared cell (no weighted method)
    ipc: int
    seed: int

    @property
    def run_id(self) -> str:
        return run_id_for("audit", pipeline.run_key(self.plan, "audit"))


def parse_list(text: str | Sequence, what: str, convert: Callable) -> tuple:
    """'a,b,c' (or a sequence) -> converted, de-duplicated values in order; empty is an error."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if s != ""]
    if not items:
        raise InvalidArgument(f"the list of {what} is empty", f"give at least one {what[:-1]}, comma-separated")
    out = []
    for item in items:
        value = convert(item)
        if value not in out:
            out.append(value)
    return tuple(out)


def _kernel_variance(item) -> float | str:
    return SUGGESTED if str(item).strip().lower() == SUGGESTED else check_kernel_variance(item)


def make_grid(dataset: str, ratios, kernel_variances=SUGGESTED, methods="vanilla,kde,fairdd", ipcs="10",
              seeds="0", **rest) -> Grid:
    """A Grid from CLI-style comma lists, every value checked (one clear error for the first bad one)."""
    return Grid(dataset=dataset, ratios=parse_list(ratios, "conflict ratios", data.check_ratio),
                kernel_variances=parse_list(kernel_variances, "kernel variances", _kernel_variance),
                methods=distill.check_methods(methods),
                ipcs=parse_list(ipcs, "IPCs", lambda v: pipeline.positive_int(v, "IPC", "give whole numbers")),
                seeds=parse_list(seeds, "seeds", data.check_seed), **rest)


def cells(grid: Grid) -> list[Cell]:
    """Every cell of the grid, planned (so every argument is checked before anything runs)."""
    weighted = tuple(m for m in grid.methods if distill.REGISTRY[m].needs_weights)
    shared = tuple(m for m in grid.methods if m not in weighted)
    n = len(grid.ratios) * len(grid.ipcs) * len(grid.seeds) * (bool(shared) + len(grid.kernel_variances) * bool(weighted))
    if n > MAX_CELLS:
        raise InvalidArgument(f"the grid has {n:,} cells (limit {MAX_CELLS:,})", "split it into several sweeps")
    o = grid.overrides
    out = []
    for ratio in grid.ratios:
        for ipc in grid.ipcs:
            for seed in grid.seeds:
                # the random baseline once per (ratio, IPC, seed): in the shared cell, else in the first variance's
                variants = ([(shared, None, True)] if shared else []) + \
                    [(weighted, kv, not shared and i == 0) for i, kv in enumerate(grid.kernel_variances)] * bool(weighted)
                for methods, kv, baseline in variants:
                    req = pipeline.Request(grid.dataset, ratio, methods, grid.algorithm, ipc, grid.preset,
                                           kernel_variance=None if kv in (None, SUGGESTED) else kv, seed=seed,
                                           eval_seeds=grid.eval_seeds, baseline=baseline, data_root=grid.data_root,
                                           distill_overrides=dict(o.get("distill", {})),
                                           eval_overrides=dict(o.get("eval", {})), probe_overrides=dict(o.get("probe", {})),
                                           embed_overrides=dict(o.get("embed", {})))
                    out.append(Cell(pipeline.plan(req), ratio, kv, ipc, seed))
    return out


def prepare(grid: Grid, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0) -> list[Cell]:
    """Every check a sweep can make before Ray starts: the grid, the resources, and (when the cells run on
    this machine) the data and each IPC against it. Returns the planned cells."""
    all_cells = cells(grid)
    if not (cpus_per_cell > 0 and gpus_per_cell >= 0 and math.isfinite(cpus_per_cell + gpus_per_cell)):
        raise InvalidArgument(f"--cpus-per-cell {cpus_per_cell} / --gpus-per-cell {gpus_per_cell} are not usable",
                              "give a CPU count > 0 and a GPU fraction >= 0")
    data.check_data_root(grid.data_root)
    if address is None:  # the data is here: a missing dataset or too large an IPC fails now, not in a task
        for c in {(c.ratio, c.seed, c.ipc): c for c in all_cells}.values():
            load_train(c.plan)
    return all_cells


def grid_key(grid: Grid) -> dict:
    """The sweep run's key: the grid as planned and the version of this module."""
    return {"grid": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(grid).items()},
            "dataset": data.get_spec(grid.dataset).name, "versions": {"sweep": SWEEP_VERSION}}


# --------------------------------------------------------------------------- running on Ray

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
    from .store import RunStore
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
    engine_dir = str(Path(__file__).resolve().parent)
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
    from .store import RunStore
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


def _run_on_ray(ray, todo: list[Cell], results: dict, address, cpus, gpus, say, should_stop, total: int) -> None:
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
                say(Event("sweep", len(results), total, eta=eta))
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


# --------------------------------------------------------------------------- summary

def _mean_std(values: list[float]) -> dict:
    """Mean and sample std (ddof=1, as pandas in sweep_figures) over seeds; an undefined value is skipped."""
    vals = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(vals)}


def rows_of(all_cells: list[Cell], results: dict) -> list[dict]:
    """One tidy row per cell x method, every metric, the weights' diagnostics and the amplification."""
    rows = []
    for c in all_cells:
        res = results[c.run_id]
        weights = res.get("weights") or {}
        for method, m in res["methods"].items():
            kv_label = c.kernel_variance if c.kernel_variance is not None and method != "random" else None
            row = {"dataset": res["dataset"], "conflict_ratio": c.ratio, "ipc": c.ipc, "seed": c.seed,
                   "method": method, "kernel_variance": kv_label,
                   "kernel_variance_used": weights.get("kernel_variance") if kv_label is not None else None,
                   **{k: m.get(k) for k in METRICS}, "real_aligned_share": res["real_aligned_share"],
                   "amplification": m["synthetic_aligned_share"] - res["real_aligned_share"], "run_id": c.run_id}
            if kv_label is not None:
                row.update({f"weights_{k}": v for k, v in weights.items()
                            if isinstance(v, (int, float)) and k not in ("kernel_variance", "temperature")})
            rows.append(row)
    return rows


def summarise(grid: Grid, all_cells: list[Cell], results: dict) -> dict:
    """Rows, the best kernel variance per ratio and IPC, and amplification against the ratio per method."""
    rows = rows_of(all_cells, results)
    weighted = [m for m in grid.methods if distill.REGISTRY[m].needs_weights]
    best = []
    for ratio in grid.ratios:
        for ipc in grid.ipcs:
            for method in weighted:
                per_kv = {}
                for kv in grid.kernel_variances:
                    sel = [r for r in rows if r["conflict_ratio"] == ratio and r["ipc"] == ipc and
                           r["method"] == method and r["kernel_variance"] == kv]
                    per_kv[str(kv)] = {k: _mean_std([r[k] for r in sel]) for k in
                                       ("conflicting_accuracy", "worst_group_accuracy", "accuracy")}
                    per_kv[str(kv)]["kernel_variance_used"] = _mean_std([r["kernel_variance_used"] for r in sel])
                entry = {"conflict_ratio": ratio, "ipc": ipc, "method": method, "by_kernel_variance": per_kv}
                for metric in ("conflicting_accuracy", "worst_group_accuracy"):
                    scored = [(v[metric]["mean"], kv) for kv, v in per_kv.items() if v[metric]["mean"] is not None]
                    entry[f"best_by_{metric}"] = max(scored)[1] if scored else None
                best.append(entry)
    amplification: dict[str, dict[tuple[float, int], list[float]]] = {}
    for r in rows:
        label = r["method"] if r["kernel_variance"] is None else f"{r['method']}@{r['kernel_variance']}"
        amplification.setdefault(label, {}).setdefault((r["conflict_ratio"], r["ipc"]), []).append(r["amplification"])
    amp = {label: [{"conflict_ratio": ratio, "ipc": ipc, **_mean_std(v)} for (ratio, ipc), v in sorted(by.items())]
           for label, by in amplification.items()}
    return {"dataset": data.get_spec(grid.dataset).name, "grid": grid_key(grid)["grid"], "cells": len(all_cells),
            "rows": rows, "best_kernel_variance": best, "amplification": amp}


def to_csv(rows: list[dict]) -> str:
    """The tidy rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
