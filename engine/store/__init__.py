"""Run store: one folder per run plus an SQLite (WAL) index; status stays true after a crash.

Layout under `cache.home()/"runs"` (see docs/RUNS.md)::

    index.sqlite            # cache of the folders: id, kind, status, config, headline metrics
    <run_id>/status.json    # the truth about a run (written atomically, before the index)
    <run_id>/config.json    # everything that determined the result
    <run_id>/metrics.json   # written by finish()
    <run_id>/log.txt        # appended by run.log()
    <run_id>/checkpoints/   # resumable state; kept when a run fails or is interrupted

The index can always be rebuilt from the folders (`rebuild_index`), so a corrupt index is moved
aside and rebuilt instead of being trusted. A 'running' run whose process is gone is marked
failed ("interrupted") by `reconcile()`; starting it again resumes from its checkpoints.

Layout of the package: run (ids, records, the Run handle), index (the SQLite index, rebuilt from
the folders), store (RunStore: claim, finish, list, compare, remove).
"""
from __future__ import annotations

from .run import (BUSY_TIMEOUT_S, CANCEL_FLAG, STATUSES, STORE_VERSION, Run, headline, run_id_for)
from .store import RunStore

__all__ = ["BUSY_TIMEOUT_S", "CANCEL_FLAG", "STATUSES", "STORE_VERSION", "Run", "RunStore", "headline", "run_id_for"]
