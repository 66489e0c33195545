"""Run store: one folder per run plus an SQLite (WAL) index; status stays true after a crash.

Layout under `cache.home()/"runs"` (see docs/RUNS.md)::

    index.sqlite            # cache of the folders: id, kind, status, config, headline metrics
    <run_id>/status.json    # the truth about a run (written atomically, before the index)
    <run_id>/config.json    # everything that determined the result
    <run_id>/metrics.json   # written by finish()
    <run_id>/results.json   # an audit's results; <method>/synthetic.safetensors + grid.png: its sets
    <run_id>/log.txt        # appended by run.log()
    <run_id>/checkpoints/   # resumable state; kept when a run fails or is interrupted

The index can always be rebuilt from the folders (`rebuild_index`), so a corrupt index is moved
aside and rebuilt instead of being trusted. A 'running' run whose process is gone is marked
failed ("interrupted") by `reconcile()`; starting it again resumes from its checkpoints. Nothing
outside this package names these files: readers use Run (`results`, `sets`, `grids`,
`report_path`) and `RunStore.finished(kind, **where)`.

Layout of the package, each module importing only those before it: records (ids, the folder layout,
headline metrics, process liveness), index (RunIndex: the SQLite index, rebuilt from the folders),
run (Run: one folder, written and read), store (RunStore: claim, finish, list, compare, remove), gc (runs gc
and keep); queue (the machine's compute slots, see docs/RUNS.md) stands apart, on cache and progress only.
"""
from __future__ import annotations

from .records import BUSY_TIMEOUT_S, CANCEL_FLAG, STATUSES, STORE_VERSION, headline, holds_run, run_id_for
from .run import Run
from .store import RunStore, matches

__all__ = ["BUSY_TIMEOUT_S", "CANCEL_FLAG", "STATUSES", "STORE_VERSION", "Run", "RunStore", "headline", "holds_run",
           "matches", "run_id_for"]
