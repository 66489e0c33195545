"""Sweeps: a grid of ordinary stored audits run as Ray tasks (a local Ray by default, a cluster by address).

A grid is ratios x kernel variances x IPCs x seeds for one dataset and a list of methods. Methods that
need no KDE weights (vanilla, FairDD, ...) do not depend on the kernel variance, so each (ratio, IPC,
seed) gets one "shared" cell with them (and the random baseline) and one cell per kernel variance with
the weighted methods only: vanilla is distilled and evaluated once, not once per variance. Every cell is
`stored.audit_stored`: an identical cell is reused, so a rerun resumes; the split, SupCon embeddings
and probe are disk-cached by content, so cells sharing them compute them once per machine.

Layout: grid (Grid, Cell, planning and checks), ray_run (the only module that imports ray: run_sweep and the
cells' tasks), summary (rows, best kernel variance, amplification, CSV). This file only re-exports.
"""
from __future__ import annotations

from .grid import MAX_CELLS, SUGGESTED, SWEEP_VERSION, Cell, Grid, cells, grid_key, make_grid, parse_list, prepare
from .ray_run import CELL_RETRIES, auth_token_source, run_cells, run_sweep, use_token
from .summary import METRICS, rows_of, summarise, to_csv

__all__ = ["CELL_RETRIES", "MAX_CELLS", "METRICS", "SUGGESTED", "SWEEP_VERSION", "Cell", "Grid", "auth_token_source",
           "cells", "grid_key", "make_grid", "parse_list", "prepare", "rows_of", "run_cells", "run_sweep", "summarise", "to_csv",
           "use_token"]
