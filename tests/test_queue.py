"""The machine's run queue (engine.store.queue): at most DDAUDIT_MAX_RUNS compute at once across threads and
processes, the rest wait in order of arrival with their position, cancel works while waiting, and a killed
holder or waiter frees its place."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import Cancelled, InvalidArgument
from engine.store import queue

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DDAUDIT_HOME", str(tmp_path))
    monkeypatch.setenv(queue.MAX_RUNS_ENV, "1")
    monkeypatch.setattr(queue, "POLL_S", 0.05)
    return tmp_path


def test_capacity_from_environment(monkeypatch):
    monkeypatch.setenv(queue.MAX_RUNS_ENV, "3")
    assert queue.capacity() == 3
    monkeypatch.delenv(queue.MAX_RUNS_ENV)
    assert queue.capacity() == max(1, (os.cpu_count() or 1) // queue.CORES_PER_RUN)
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv(queue.MAX_RUNS_ENV, bad)
        with pytest.raises(InvalidArgument, match=queue.MAX_RUNS_ENV) as err:
            queue.capacity()
        assert "whole number" in err.value.fix


def _worker(name: str, log: list, hold: threading.Event, events: list | None = None):
    def body():
        progress = (lambda ev: events.append((name, ev.stage, ev.step, ev.total))) if events is not None else None
        with queue.compute_slot(name, progress):
            log.append(("start", name))
            hold.wait(10)
            log.append(("end", name))
    t = threading.Thread(target=body)
    t.start()
    return t


def _until(cond, timeout=10.0):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_one_at_a_time_in_order_of_arrival(home):
    log, events = [], []
    holds = {n: threading.Event() for n in "abc"}
    ta = _worker("a", log, holds["a"])
    _until(lambda: ("start", "a") in log)
    tb = _worker("b", log, holds["b"], events)
    _until(lambda: ("b", "queue", 1, 1) in events)  # b has reported its place before c arrives
    tc = _worker("c", log, holds["c"], events)
    _until(lambda: queue.waiting() == 2)
    # b is first in line, c second; nobody but a computes
    _until(lambda: ("c", "queue", 2, 2) in events)
    assert log == [("start", "a")] and queue.busy_slots() == 1
    holds["a"].set()
    _until(lambda: ("start", "b") in log)
    assert ("start", "c") not in log
    _until(lambda: ("c", "queue", 1, 1) in events)  # c moved up
    holds["b"].set()
    holds["c"].set()
    for t in (ta, tb, tc):
        t.join(10)
    assert log == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b"), ("start", "c"), ("end", "c")]
    assert queue.waiting() == 0 and queue.busy_slots() == 0


def test_two_slots_let_two_compute(home, monkeypatch):
    monkeypatch.setenv(queue.MAX_RUNS_ENV, "2")
    log, holds = [], {n: threading.Event() for n in "abc"}
    threads = [_worker(n, log, holds[n]) for n in "ab"]
    _until(lambda: len(log) == 2)
    threads.append(_worker("c", log, holds["c"]))
    _until(lambda: queue.waiting() == 1)
    assert ("start", "c") not in log and queue.busy_slots() == 2
    for h in holds.values():
        h.set()
    for t in threads:
        t.join(10)
    assert sorted(e for e in log if e[0] == "start") == [("start", n) for n in "abc"]


def test_cancel_while_waiting(home):
    log, hold = [], threading.Event()
    ta = _worker("a", log, hold)
    _until(lambda: ("start", "a") in log)
    stop = threading.Event()
    seen = []

    def waiter():
        try:
            with queue.compute_slot("b", should_stop=stop.is_set):
                seen.append("computed")
        except Cancelled as exc:
            seen.append(exc.problem)
    tb = threading.Thread(target=waiter)
    tb.start()
    _until(lambda: queue.waiting() == 1)
    stop.set()
    tb.join(10)
    assert seen == ["cancelled while waiting in the queue"] and queue.waiting() == 0
    hold.set()
    ta.join(10)


HOLDER = """
import sys, time
from engine.store import queue
with queue.compute_slot("holder"):
    print("holding", flush=True)
    time.sleep(60)
"""

WAITER = """
import sys, time
from engine.store import queue
queue.POLL_S = 0.05
with queue.compute_slot("waiter", progress=lambda ev: print("queued", ev.step, flush=True)):
    print("got it", flush=True)
"""


def _spawn(code: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "DDAUDIT_HOME": str(home), queue.MAX_RUNS_ENV: "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_across_processes_and_sigkill_frees_the_slot(home):
    holder = _spawn(HOLDER, home)
    try:
        assert holder.stdout.readline().strip() == "holding"
        waiter = _spawn(WAITER, home)
        assert waiter.stdout.readline().split() == ["queued", "1"]  # another process holds the only slot
        assert waiter.poll() is None
        os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the dead holder's lock: the waiter goes on
        out, _ = waiter.communicate(timeout=30)
        assert "got it" in out and waiter.returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_waiter_leaves_the_line(home):
    log, hold = [], threading.Event()
    ta = _worker("a", log, hold)
    _until(lambda: ("start", "a") in log)
    dead = _spawn(WAITER, home)
    assert dead.stdout.readline().split() == ["queued", "1"]
    events, hold_b = [], threading.Event()
    tb = _worker("b", log, hold_b, events)
    _until(lambda: ("b", "queue", 2, 2) in events)  # behind the other process
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    _until(lambda: ("b", "queue", 1, 1) in events)  # its ticket is nobody's: b is first now
    assert queue.waiting() == 1
    hold.set()
    ta.join(10)
    _until(lambda: ("start", "b") in log)
    hold_b.set()
    tb.join(10)


def test_the_cli_waits_for_the_dashboards_run_and_says_where_it_stands(home, tmp_path_factory):
    """A CLI audit started while another process computes waits in line, says its position, then runs."""
    out = tmp_path_factory.mktemp("out") / "o"
    holder = _spawn(HOLDER, home)
    try:
        assert holder.stdout.readline().strip() == "holding"
        env = {**os.environ, "DDAUDIT_HOME": str(home), queue.MAX_RUNS_ENV: "1"}
        cli = subprocess.Popen([sys.executable, "-m", "engine", "audit", "--dataset", "colored-digits",
                                "--conflict-ratio", "0.05", "--methods", "vanilla", "--ipc", "1", "--preset", "tiny",
                                "--eval-seeds", "1", "--no-baseline", "--out", str(out)],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        lines = [""]
        while "waiting for a free compute slot" not in lines[-1]:
            lines.append(cli.stderr.readline())
            assert lines[-1], f"the CLI ended without waiting: {''.join(lines)}"
        line = lines[-1]
        assert "position 1 in the queue (0 run(s) ahead; at most 1 run(s) compute at once" in line
        time.sleep(1.0)
        assert cli.poll() is None and not out.exists()  # still waiting: nothing computed
        os.kill(holder.pid, signal.SIGKILL)
        _, err = cli.communicate(timeout=240)
        assert cli.returncode == 0, err
        assert (out / "results.json").is_file()
    finally:
        holder.kill()
        holder.wait()


def _claimed_worker(name: str, claimant: str, log: list, hold: threading.Event, events: list):
    """A worker of one claimant (a browser session) that holds its slot until `hold` is set."""
    def body():
        with queue.compute_slot(name, lambda ev: events.append((name, ev.stage, ev.step, ev.total)),
                                claimant=claimant):
            log.append(name)
            hold.wait(10)
    t = threading.Thread(target=body)
    t.start()
    return t


def test_sessions_take_turns(home):
    """One session's five waiting runs do not all go before another session's first: with 'a' computing
    (session A), A's four more runs and B's two wait; the slot then goes A, B, A, B, A, A (round robin,
    the session served longest ago first), and the positions shown follow that line."""
    log, events, holds, threads = [], [], {}, []

    def start(name, claimant):
        holds[name] = threading.Event()
        threads.append(_claimed_worker(name, claimant, log, holds[name], events))

    start("a1", "session-A")
    _until(lambda: log == ["a1"])
    for i in range(2, 6):
        start(f"a{i}", "session-A")
        _until(lambda: queue.waiting() == i - 1)
    start("b1", "session-B")
    _until(lambda: queue.waiting() == 5)
    start("b2", "session-B")
    _until(lambda: queue.waiting() == 6)
    # B's first run is next in line although A's four arrived before it (A was served last, by a1)
    _until(lambda: ("b1", "queue", 1, 6) in events)
    _until(lambda: ("a2", "queue", 2, 6) in events)
    order = ["a1", "b1", "a2", "b2", "a3", "a4", "a5"]
    for done, nxt in zip(order, order[1:]):
        holds[done].set()
        _until(lambda: nxt in log)
        assert log == order[:order.index(nxt) + 1]
    holds["a5"].set()
    for t in threads:
        t.join(10)
    assert log == order and queue.waiting() == 0


def test_fair_order_by_rounds_then_last_served():
    """The line itself: round k holds each claimant's k-th ticket; within a round the claimant served longest
    ago first, then arrival; runs without a claimant each form their own (first come, first served)."""
    def t(i, tag):
        return Path(f"ticket-{i:020d}-{tag}-1-abcdef12")
    a1, a2, a3, b1, c1 = t(1, "aaa"), t(2, "aaa"), t(3, "aaa"), t(4, "bbb"), t(5, "ccc")
    assert queue.fair_order([a1, a2, a3, b1, c1], {}) == [a1, b1, c1, a2, a3]
    assert queue.fair_order([a1, a2, b1, c1], {"bbb": 10.0, "aaa": 20.0, "ccc": 30.0}) == [b1, a1, c1, a2]
    anon = [t(i, queue.claimant_tag(None)) for i in range(4)]
    assert queue.fair_order(anon, {}) == anon
