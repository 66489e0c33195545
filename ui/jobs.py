"""Background jobs: engine work runs in a thread so every page stays usable; one registry per server."""
from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from engine.errors import Cancelled, DDAuditError
from engine.progress import Event, Progress, ShouldStop
from engine.store.queue import QUEUE_STAGE, wait_text
from ui import roles

log = logging.getLogger("ddaudit")
Target = Callable[[Progress, ShouldStop], Any]

# how often a page's live progress fragment reruns: each rerun takes CPU and GIL time from the
# engine thread it reports on (2 cores), so not every second
LIVE_REFRESH_S = 2.0
MAX_EVENTS = 5000  # progress events kept per job (loss curves); older ones are thinned
MAX_DONE_JOBS = 64  # finished jobs kept for their pages; older ones are forgotten (their runs stay in the store)
STAGES = {"distill": "distilling", "experts": "training MTT's expert trajectories (cached after)",
          "embed": "embedding the training images",
          "supcon": "training the SupCon surrogate", "kde": "KDE weights", "weights": "KDE weights",
          "data": "loading the data", "probe": "training the attribute probe", "umap": "UMAP map",
          "done": "finishing"}


@dataclass
class Job:
    """One unit of background engine work, its progress history and its outcome."""

    key: str
    kind: str
    label: str
    config: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    status: str = "running"  # running | finished | failed | cancelled
    events: list[Event] = field(default_factory=list)
    latest: Event = field(default_factory=lambda: Event("starting", 0, 0))
    result: Any = None
    error: BaseException | None = None
    detail: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, event: Event) -> None:
        """Engine progress callback: keep the event (thread-safe)."""
        with self._lock:
            self.latest = event
            self.events.append(event)
            if len(self.events) > MAX_EVENTS:
                self.events = self.events[::2]

    def should_stop(self) -> bool:
        """Engine cancellation callback."""
        return self._stop.is_set()

    def cancel(self) -> None:
        """Ask the engine to stop at its next step."""
        self._stop.set()

    @property
    def done(self) -> bool:
        """True once the job finished, failed or was cancelled."""
        return self.status != "running"

    @property
    def cancelling(self) -> bool:
        """Cancel asked for but the engine has not stopped yet."""
        return self._stop.is_set() and not self.done

    def snapshot(self) -> list[Event]:
        """A copy of the progress events (safe to read while the job runs)."""
        with self._lock:
            return list(self.events)

    def fraction(self) -> float | None:
        """Progress of the current stage in [0, 1], when the engine reports step/total."""
        return self.latest.fraction

    def elapsed(self) -> float:
        """Seconds since the job started (until it ended)."""
        return (self.ended_at or time.time()) - self.started_at

    def run(self, target: Target) -> None:
        """Thread body: call the target, record its outcome; never raises."""
        status = "failed"
        try:
            self.result = target(self.progress, self.should_stop)
            status = "finished"
        except Cancelled as exc:
            self.error, status = exc, "cancelled"
        except DDAuditError as exc:
            self.error = exc
        except Exception as exc:  # shown as st.error with its type; the traceback goes to the server log
            self.error = exc
            self.detail = traceback.format_exc(limit=8)
            log.error("background job %s (%s) failed:\n%s", self.id, self.label, self.detail)
        finally:
            self.ended_at = time.time()  # before the status: a done job always has its end time
            self.status = status


class JobRegistry:
    """All jobs of this server process, by key; at most one live job per key."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, kind: str, label: str, target: Target, config: dict | None = None,
               restart: bool = False) -> Job:
        """Start `target` in a thread unless a job with this key is running (or finished and not restart)."""
        with self._lock:
            old = self._jobs.get(key)
            if old is not None and (not old.done or (old.status == "finished" and not restart)):
                return old
            job = Job(key=key, kind=kind, label=label, config=dict(config or {}))
            self._jobs[key] = job
            self._prune()
        threading.Thread(target=job.run, args=(target,), name=f"ddaudit-{kind}-{job.id}", daemon=True).start()
        return job

    def _prune(self) -> None:
        """Forget the oldest done jobs beyond MAX_DONE_JOBS (a long-lived server's memory stays bounded)."""
        done = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.ended_at or 0)
        for job in done[:max(0, len(done) - MAX_DONE_JOBS)]:
            del self._jobs[job.key]

    def _all(self) -> list[Job]:
        """A copy of the jobs, taken under the lock (submit may prune while a page reads)."""
        with self._lock:
            return list(self._jobs.values())

    def get(self, key: str) -> Job | None:
        """The job with this key, if any."""
        return self._jobs.get(key)

    def by_id(self, job_id: str) -> Job | None:
        """The job with this id, if any."""
        return next((j for j in self._all() if j.id == job_id), None)

    def jobs(self, kind: str | None = None) -> list[Job]:
        """Jobs (of one kind), newest first."""
        out = [j for j in self._all() if kind is None or j.kind == kind]
        return sorted(out, key=lambda j: j.started_at, reverse=True)

    def running(self, kind: str | None = None) -> list[Job]:
        """Jobs still running (of one kind)."""
        return [j for j in self.jobs(kind) if not j.done]

    def forget(self, key: str) -> None:
        """Drop a finished job (e.g. to retry a failed one)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.done:
                del self._jobs[key]


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    """The one job registry of this server (shared by sessions and pages)."""
    return JobRegistry()


def stage_label(stage: str) -> str:
    """A progress stage in words."""
    if stage.startswith("evaluate "):
        return f"evaluating {stage[len('evaluate '):]} (fresh ConvNets trained on its set)"
    return STAGES.get(stage, stage)


def progress_text(job: Job) -> str:
    """One line for a running job: stage, step of total, loss or time left in the stage, time elapsed."""
    ev = job.latest
    if ev.stage == QUEUE_STAGE:
        return f"{wait_text(ev.step, ev.total)} · waiting {job.elapsed():.0f} s"
    stage = stage_label(ev.stage)
    text = f"{stage}: {ev.step} / {ev.total}" if ev.fraction is not None else f"{stage}..."
    if ev.loss is not None:
        text += f" · loss {ev.loss:.4g}"
    if ev.eta is not None:
        text += f" · about {ev.eta:.0f} s left in this stage"
    return f"{text} · {job.elapsed():.0f} s elapsed"


@st.fragment(run_every=LIVE_REFRESH_S)
def live(job_id: str, text: Callable[[Job], str], body: Callable[[Job], None] | None = None,
         cancel: str | None = None, cancelling: str = "Cancelling: the engine stops at its next step...",
         note: str = "") -> None:
    """The one live view of a running job, rerun every LIVE_REFRESH_S: a progress bar with `text(job)`,
    whatever `body(job)` draws (live curves), a cancel button labelled `cancel` and a caption; when the job
    is done the whole page reruns and draws its result."""
    job = running(registry().by_id(job_id))
    if job is None:
        return
    st.progress(job.fraction() or 0.0, text=text(job))
    if body is not None:
        body(job)
    if cancel is not None and roles.may_cancel(job) is not None:
        cancel, note = None, f"{note} {roles.may_cancel(job)}".strip()
    if cancel is not None:
        c1, c2 = st.columns([1, 4])
        if job.cancelling:
            c2.caption(cancelling)
        elif c1.button(cancel, key=f"cancel_{job_id}"):
            job.cancel()
            st.rerun(scope="fragment")
        if note:
            c2.caption(note)
    elif note:
        st.caption(note)


def running(job: Job | None) -> Job | None:
    """For a live fragment: the job while it runs (None when there is none); once it is done, the whole
    page reruns so that it draws the result."""
    if job is not None and job.done:
        st.rerun()
    return job


def error_text(job: Job) -> tuple[str, str]:
    """(problem, fix) for a failed or cancelled job."""
    exc = job.error
    if isinstance(exc, OSError):
        from engine.errors import from_os_error
        exc = from_os_error(exc)
    if isinstance(exc, DDAuditError):
        return roles.scrub(exc.problem), roles.scrub(exc.fix or "")
    if exc is None:
        return "unknown failure", "try again"
    return (roles.scrub(f"{type(exc).__name__}: {exc}"),
            "try smaller settings or another preset; report it if it persists")
