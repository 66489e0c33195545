"""The Sweeps page's jobs: the form's choice as a checked grid, and the grid run on a local Ray in a
background job keyed by the grid (a second Start of the same grid attaches to it)."""
from __future__ import annotations

import json

from engine import sweep
from engine.store.queue import QUEUE_STAGE, wait_text
from ui import jobs, state


def grid(s: state.Settings, ratios: list, kernel_variances: list, methods: list, ipc: int, seeds: int,
         preset: str) -> tuple[sweep.Grid, list[sweep.Cell]]:
    """The checked grid for the form's choice and its planned cells (the data and IPCs checked too)."""
    g = sweep.make_grid(s.dataset, list(ratios), list(kernel_variances), list(methods), [int(ipc)],
                        list(range(int(seeds))), preset=preset)
    return g, sweep.prepare(g)


ESTIMATE_HELP = ("The sum of each cell's estimate (measured unit costs, engine/costs.json), less the cells already "
                 "stored: cells run side by side on a local Ray, which on 2 cores takes about as long as one "
                 "after another; a cluster (`python -m engine sweep --address`) divides it by its cores.")


def estimate_text(cells: list[sweep.Cell]) -> str:
    """A grid's estimated time in words: its planned cells' estimates summed (stored cells cost nothing)."""
    from engine import estimate
    total, stored = 0.0, 0
    for cell in cells:
        r = cell.plan.request
        train = state.load_pair(r.dataset, r.conflict_ratio, r.seed)[0]
        est = estimate.estimate(cell.plan, train, "audit", r.baseline)
        total += est.seconds
        stored += est.stored
    return f"about {estimate.duration(total)} on 2 CPU cores" + (f" ({stored} cells already stored)" if stored else "")


def start(g: sweep.Grid) -> jobs.Job:
    """Run the grid in the background, or attach to the job already running it."""
    key = json.dumps(sweep.grid_key(g), sort_keys=True, default=str)
    label = (f"sweep {g.dataset}: ratios {', '.join(f'{r:.1%}' for r in g.ratios)} · s² "
             f"{', '.join(map(str, g.kernel_variances))} · {'+'.join(g.methods)} · {len(g.seeds)} seed(s)")
    return jobs.registry().submit(key, "sweep", label, lambda progress, stop: sweep.run_sweep(
        g, progress=progress, should_stop=stop))


def cells_text(job: jobs.Job) -> str:
    """Cells done of total, time left, time elapsed."""
    ev = job.latest
    if ev.stage == QUEUE_STAGE:
        return f"{wait_text(ev.step, ev.total)} · waiting {job.elapsed():.0f} s"
    eta = f" · about {ev.eta:.0f} s left" if ev.eta is not None else ""
    return f"cells {ev.step} / {ev.total}{eta} · {job.elapsed():.0f} s elapsed"
