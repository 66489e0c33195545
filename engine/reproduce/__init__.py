"""Reproduce the papers' tables: the published numbers as data (engine/tables/), the audits a table needs planned
as sweep cells (each an ordinary stored audit: identical requests are one run, finished ones are reused, the rest
run on Ray, a cluster by address), and the side-by-side table with the agreement rule (docs/REPRODUCE.md).

One audit per (dataset, backbone, IPC, conflict ratio) of a table answers all its rows there: the table's methods
for that setting side by side, seed 0, the preset's evaluation trainings, no random baseline. A row whose data is
not on disk is listed with where to put it; a stand-in (colored-digits for C-MNIST FG) runs only when asked and
is shown apart, never as the row.

Layout: published (the tables as data, loading, row filters), compare (the agreement rule, a row side by side,
the published numbers a run's report shows), plan (the plan, its dry run, the run, the whole table). This file
only re-exports.
"""
from __future__ import annotations

from .compare import agrees, answered_by, compare, published_for, table_rows, verdict
from .plan import PRESETS, SEED, Audit, Plan, collect, describe, dry_run, make_plan, reproduce, stored_results
from .published import (ALIASES, FILTER_KEYS, METRICS, TABLES_DIR, Published, Row, Table, get_table, load_tables,
                        parse_filter, select, tables)
from ..errors import CorruptArtifact

__all__ = ["ALIASES", "Audit", "CorruptArtifact", "FILTER_KEYS", "METRICS", "PRESETS", "Plan", "Published", "Row",
           "SEED", "TABLES_DIR", "Table", "agrees", "answered_by", "collect", "compare", "describe", "dry_run",
           "get_table", "load_tables", "make_plan", "parse_filter", "published_for", "reproduce", "select",
           "stored_results", "table_rows", "tables", "verdict"]
