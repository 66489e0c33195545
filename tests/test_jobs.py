"""The dashboard's job registry stays bounded on a long-lived server: finished jobs beyond MAX_DONE_JOBS are
forgotten, oldest first; running ones never."""
from __future__ import annotations

import threading
import time

from ui import jobs


def _until_done(job: jobs.Job) -> None:
    t0 = time.time()
    while not job.done:
        assert time.time() - t0 < 10
        time.sleep(0.01)


def test_finished_jobs_beyond_the_bound_are_forgotten_oldest_first(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "MAX_DONE_JOBS", 3)
    reg = jobs.JobRegistry()
    hold = threading.Event()
    running = reg.submit("long", "distill", "long", lambda p, s: hold.wait(10))
    done = []
    for i in range(6):
        job = reg.submit(f"k{i}", "distill", f"job {i}", lambda p, s, i=i: i)
        _until_done(job)
        done.append(job)
    reg.submit("last", "distill", "last", lambda p, s: None)
    kept = {j.key for j in reg.jobs()}
    assert "long" in kept  # running: never forgotten
    assert {"k3", "k4", "k5"} <= kept and not {"k0", "k1", "k2"} & kept, kept
    assert reg.by_id(done[0].id) is None and reg.by_id(done[-1].id) is done[-1]
    hold.set()
    _until_done(running)
