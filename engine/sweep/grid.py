"""A sweep's grid: ratios x kernel variances x IPCs x seeds for one dataset and a list of methods, checked and
planned into cells (each an ordinary stored audit). No Ray here (engine/sweep/ray_run.py runs the cells)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from .. import data, distill, pipeline
from ..density import check_kernel_variance
from ..errors import InvalidArgument
from ..stages import load_train
from ..store.records import run_id_for

SWEEP_VERSION = 1
SUGGESTED = "suggested"
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
