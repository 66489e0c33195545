"""The machine's run queue: at most `capacity()` runs compute at once on one host, whoever starts them
(the CLI, every dashboard session, a local sweep); the others wait in order of arrival, report their
position and stop waiting when cancelled.

Two kinds of files under cache.home()/queue/<host>/, both held with flock, so a process that dies
(even by SIGKILL) lets go of them with no cleanup:
- slot-<i>.lock: a run computes while it holds one of the first `capacity()` slots;
- ticket-<arrival>-<claimant>-<pid>-<nonce>: a waiting run. A ticket nobody holds is a dead waiter's and is removed.
Only the first live ticket in line tries the slots. The line is fair between claimants (a dashboard's browser
sessions): each claimant's k-th waiting run comes in round k, and within a round the claimant served longest
ago goes first (served-<claimant> files hold when each was last given a slot), then the earlier arrival. One
session's five runs thus do not all go before another's first. A run with no claimant (the CLI, a sweep) is
its own claimant, so such runs keep the order of arrival among themselves.
flock locks belong to an open file, so two threads of one server queue like two processes. Every process
of a machine should see the same DDAUDIT_MAX_RUNS (each tries the first n slots of its own n). The folder
wants a local disk: on NFS, flock becomes a per-process POSIX lock and threads of one server would share it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

from .. import cache
from ..errors import Cancelled, InvalidArgument
from ..progress import Progress, ShouldStop, report

MAX_RUNS_ENV = "DDAUDIT_MAX_RUNS"
CORES_PER_RUN = 8  # a run's torch threads keep about this many cores busy: 2 cores fit one run, 16 fit two
POLL_S = 0.5
QUEUE_STAGE = "queue"
SERVED_TTL_S = 24 * 3600  # a claimant's last-served mark is forgotten after a day (the folder stays small)


def capacity() -> int:
    """Runs computing at once on this host: DDAUDIT_MAX_RUNS, else one per CORES_PER_RUN cores (at least one)."""
    text = os.environ.get(MAX_RUNS_ENV, "").strip()
    if not text:
        return max(1, (os.cpu_count() or 1) // CORES_PER_RUN)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidArgument(f"{MAX_RUNS_ENV}={text!r} is not a number of runs",
                              f"set {MAX_RUNS_ENV} to a whole number >= 1 (or unset it: one run per "
                              f"{CORES_PER_RUN} cores)")
    return value


def queue_dir() -> Path:
    """This host's queue folder (a store shared by several machines queues each machine on its own)."""
    path = cache.home() / "queue" / cache.safe_name(socket.gethostname() or "host")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _try_lock(path: Path, create: bool = True) -> IO | None:
    """The file opened and exclusively locked, or None when someone holds it (or, with create=False, when it
    is gone: a waiter that just left must not get its ticket back)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    fh = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    except BaseException:
        fh.close()
        raise
    return fh


def _live_tickets(folder: Path) -> list[Path]:
    """Waiting runs' tickets in line (fair turns between claimants); dead waiters' tickets are removed."""
    live = []
    for path in sorted(folder.glob("ticket-*")):
        try:
            fh = _try_lock(path, create=False)
        except FileNotFoundError:
            continue
        if fh is None:
            if path.exists():
                live.append(path)
            continue
        path.unlink(missing_ok=True)  # we could lock it: its waiter is gone
        fh.close()
    return fair_order(live, _last_served(folder))


def claimant_tag(claimant: str | None) -> str:
    """A claimant as a short file-name-safe tag; None (the CLI, a sweep) gets a tag of its own."""
    if not claimant:
        return "anon" + uuid.uuid4().hex[:8]
    return hashlib.sha256(claimant.encode()).hexdigest()[:12]


def _claimant_of(ticket: Path) -> str:
    parts = ticket.name.split("-")
    return parts[2] if len(parts) >= 5 else ticket.name  # an older ticket without a claimant: its own


def fair_order(tickets: list[Path], served: dict[str, float]) -> list[Path]:
    """Tickets (sorted by arrival) in line: round k holds each claimant's k-th ticket; within a round, the
    claimant served longest ago (never served first) goes first, then the earlier arrival."""
    rounds: dict[str, int] = {}
    keyed = []
    for i, t in enumerate(tickets):
        c = _claimant_of(t)
        k = rounds.get(c, 0)
        rounds[c] = k + 1
        keyed.append(((k, served.get(c, 0.0), i), t))
    return [t for _, t in sorted(keyed)]


def _last_served(folder: Path) -> dict[str, float]:
    """When each claimant was last given a slot (from the served-<tag> files' times)."""
    out = {}
    for p in folder.glob("served-*"):
        with contextlib.suppress(OSError):
            out[p.name[len("served-"):]] = p.stat().st_mtime
    return out


def _mark_served(folder: Path, tag: str) -> None:
    """Remember that this claimant was just given a slot; forget marks older than SERVED_TTL_S."""
    if tag.startswith("anon"):
        return
    now = time.time()
    path = folder / f"served-{tag}"
    path.touch()
    os.utime(path, (now, now))
    for p in folder.glob("served-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > SERVED_TTL_S:
                p.unlink()


def _take_slot(folder: Path, n: int) -> IO | None:
    """One free slot among the first n, locked, or None."""
    for i in range(n):
        fh = _try_lock(folder / f"slot-{i}.lock")
        if fh is not None:
            return fh
    return None


def busy_slots(folder: Path | None = None, n: int | None = None) -> int:
    """How many of the slots are held right now (a probe: each free one is locked and let go)."""
    folder, n = folder or queue_dir(), n or capacity()
    held = 0
    for i in range(n):
        fh = _try_lock(folder / f"slot-{i}.lock")
        if fh is None:
            held += 1
        else:
            fh.close()
    return held


def wait_text(position: int, waiting: int | None = None) -> str:
    """A waiting run's place in line in words (a 'queue' Event's step and total)."""
    n = capacity()
    return (f"waiting for a free compute slot: position {position} in the queue ({position - 1} run(s) ahead; "
            f"at most {n} run(s) compute at once on this machine, {MAX_RUNS_ENV} changes it)")


@contextlib.contextmanager
def compute_slot(label: str = "", progress: Progress | None = None,
                 should_stop: ShouldStop | None = None, claimant: str | None = None) -> Iterator[int]:
    """Hold one of this host's compute slots for the body: wait in line for it (reporting the position as
    'queue' Events, step = position, total = runs waiting) and raise Cancelled if stopped while waiting.
    `claimant`: who asks (a dashboard's browser session), for fair turns between claimants."""
    n = capacity()
    folder = queue_dir()
    tag = claimant_tag(claimant)
    slot = _take_slot(folder, n) if not _live_tickets(folder) else None
    if slot is None:
        slot = _wait(folder, n, label, progress, should_stop, tag)
    else:
        _mark_served(folder, tag)
    try:
        yield n
    finally:
        slot.close()


def _wait(folder: Path, n: int, label: str, progress: Progress | None, should_stop: ShouldStop | None,
          tag: str) -> IO:
    """Queue a ticket and poll until it is first in line and a slot is free."""
    name = f"ticket-{time.time_ns():020d}-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, me = folder / f".{name}", folder / name
    ticket = _try_lock(tmp)  # locked before it gets its name: nobody can take it for a dead waiter's
    assert ticket is not None  # a fresh, unique name
    last = None
    try:
        ticket.write(label[:200])
        ticket.flush()
        tmp.rename(me)
        while True:
            line = _live_tickets(folder)
            position = line.index(me) + 1 if me in line else 1
            if position == 1:
                slot = _take_slot(folder, n)
                if slot is not None:
                    _mark_served(folder, tag)  # before the ticket goes: the next in line sees this turn taken
                    return slot
            state = (position, len(line))
            if state != last:
                report(progress, QUEUE_STAGE, position, max(len(line), 1))
                last = state
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while waiting in the queue",
                                "start it again when the machine is free; nothing was computed")
            time.sleep(POLL_S)
    finally:
        me.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        ticket.close()


def waiting(folder: Path | None = None) -> int:
    """How many runs wait in this host's queue now."""
    return len(_live_tickets(folder or queue_dir()))
