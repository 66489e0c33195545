"""A lab's dashboard under load, in real Chromium: 4 sessions each start a different tiny audit while 8 more
browse Results and Runs. Measured: that each run finishes with the numbers of the same request run alone
(the CLI in an empty home), that each session shows its own run, no exception on any page, the queue's
positions as the sessions show them, the most runs computing at once (from the run store, sampled every
0.2 s) against the configured limit, and the server's peak RSS.
`python -m bench.bench_load [--sessions 4] [--browsers 8] [--max-runs 1]`
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import serve

LONG = 900_000  # ms
ITERATIONS = (40, 50, 60, 70, 80, 90, 100, 110)  # session i distils with ITERATIONS[i]: a different request each


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set (VmRSS) or its peak (VmHWM), in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def no_errors(page) -> list[str]:
    """Exceptions and st.error texts on the page (empty when there are none)."""
    found = page.locator("[data-testid='stException']").all_inner_texts()
    found += page.locator("[data-testid='stAlertContentError']").all_inner_texts()
    return found


def open_page(page, url: str, path: str, title: str) -> None:
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=title).first.wait_for()


def start_audit(page, url: str, iterations: int) -> float:
    """One session: Distill with its own iteration count, then Start; returns the click's time."""
    open_page(page, url, "distill", "Distill")
    page.locator("[data-testid='stNumberInput']").filter(has_text="Iterations").locator("input").fill(str(iterations))
    page.keyboard.press("Tab")
    page.wait_for_timeout(800)
    page.get_by_role("button", name="Start distillation").click()
    return time.time()


def watch(page, out: dict) -> bool:
    """One look at a starting session: queue positions shown, errors, finished (returns True when done)."""
    text = " ".join(page.locator("[data-testid='stProgress']").all_inner_texts())
    out.setdefault("positions", set()).update(int(p) for p in re.findall(r"position (\d+) in the queue", text))
    errors = no_errors(page)
    if errors:
        out["errors"] = errors
        return True
    if page.get_by_text("Finished").count():
        out["finished"] = time.time()
        out["label"] = page.get_by_text("Finished").first.inner_text()
        return True
    return False


def browse(page, url: str, n: int, out: dict) -> None:
    """One page view of a browsing session: Results and Runs in turn."""
    path, title = (("results", "Results"), ("runs", "Runs"))[n % 2]
    open_page(page, url, path, title)
    page.wait_for_timeout(300)
    out["errors"] = out.get("errors", []) + no_errors(page)
    out["views"] = out.get("views", 0) + 1


def drive(chromium: str, url: str, sessions: int, browsers: int, dwell_s: float) -> tuple[list[dict], list[dict]]:
    """Every session in one Chromium (a context each), driven in turn from one thread: the starters click Start
    one after another, then each loop looks at every unfinished starter and gives one browsing session a page
    view, so each browsing session views a page every about `dwell_s` seconds or more."""
    from playwright.sync_api import sync_playwright
    starts, browsing = [{} for _ in range(sessions)], [{} for _ in range(browsers)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=serve.CHROMIUM_ARGS)
        pages = []
        for _ in range(sessions + browsers):
            page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
            page.set_default_timeout(LONG)
            pages.append(page)
        for i in range(sessions):
            starts[i]["clicked"] = start_audit(pages[i], url, ITERATIONS[i])
        n, last = 0, time.time()
        while not all("finished" in s or "errors" in s for s in starts):
            for i in range(sessions):
                if "finished" not in starts[i] and "errors" not in starts[i]:
                    watch(pages[i], starts[i])
            if browsers and time.time() - last >= dwell_s / browsers:
                try:
                    browse(pages[sessions + n % browsers], url, n // browsers, browsing[n % browsers])
                except Exception as exc:  # reported with the rest
                    browsing[n % browsers].setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
                n, last = n + 1, time.time()
            time.sleep(0.25)
        browser.close()
    for s in starts:
        s["positions"] = sorted(s.get("positions", ()))
    return starts, browsing


def numbers(result: dict) -> dict:
    """Every number an audit reports per method, its timings left out (they differ between any two runs)."""
    return {m: {k: v for k, v in r.items() if "seconds" not in k and k != "eval_cached"}
            for m, r in result["methods"].items()}


def alone(iterations: int | None, home: str, ipc: int = 2, preset: str = "tiny") -> tuple[str, dict]:
    """The same request as the dashboard's, run alone by the CLI in its own home: (run id, results)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "engine", "audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05",
               "--methods", "vanilla,kde,fairdd", "--ipc", str(ipc), "--preset", preset,
               *(["--iterations", str(iterations)] if iterations is not None else []),
               "--eval-seeds", "1", "--no-baseline", "--out", out, "--json"]
        done = subprocess.run(cmd, cwd=serve.ROOT, env={**os.environ, "DDAUDIT_HOME": home}, capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"the CLI run failed: {done.stderr[-2000:]}")
        run_id = re.search(r"^run (\S+) \(", done.stderr, re.M)
        return (run_id.group(1) if run_id else ""), json.loads(done.stdout)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_load")
    ap.add_argument("--chromium", default=os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--sessions", type=int, default=4, help="sessions that each start a different audit")
    ap.add_argument("--browsers", type=int, default=8, help="sessions browsing Results and Runs meanwhile")
    ap.add_argument("--max-runs", type=int, default=1, help="DDAUDIT_MAX_RUNS of the server (default 1)")
    ap.add_argument("--dwell", type=float, default=5.0, help="seconds a browsing session spends on a page (default 5)")
    args = ap.parse_args(argv)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("skipped: playwright is not installed (pip install -r requirements-dev.txt)", flush=True)
        return {}
    from engine.store import RunStore
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="ddaudit-load-") as home, \
            tempfile.TemporaryDirectory(prefix="ddaudit-alone-") as alone_home:
        env = {**os.environ, "DDAUDIT_HOME": home, "DDAUDIT_TINY": "1", "DDAUDIT_MAX_RUNS": str(args.max_runs)}
        proc, url = serve.start_app(env)
        try:
            if not serve.wait_healthy(proc, url, 120):
                raise SystemExit("streamlit did not become healthy in 120 s")
            os.environ["DDAUDIT_HOME"] = home
            store = RunStore()
            computing, stop_sampling = [0], threading.Event()
            rss = [rss_mb(proc.pid)]

            def sample() -> None:
                while not stop_sampling.is_set():
                    try:
                        n = len([r for r in store.list(kind="audit", status="running")])
                    except Exception:  # the index is created by the first run
                        n = 0
                    computing.append(n)
                    rss.append(rss_mb(proc.pid))
                    time.sleep(0.2)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.time()
            starts, browsing = drive(args.chromium, url, args.sessions, args.browsers, args.dwell)
            wall = time.time() - t0
            stop_sampling.set()
            sampler.join()
            peak = rss_mb(proc.pid, "VmHWM")
        finally:
            serve.stop(proc)
        os.environ["DDAUDIT_HOME"] = home
        stored = {r["id"]: r for r in RunStore().list(kind="audit")}
        checks = []
        for i, s in enumerate(starts):
            run_id, res = alone(ITERATIONS[i], alone_home)
            here = json.loads((RunStore().root / run_id / "results.json").read_text(encoding="utf-8")) \
                if run_id in stored else None
            same = here is not None and numbers(here) == numbers(res)
            own = f"{ITERATIONS[i]} it" in s.get("label", "")
            checks.append({"iterations": ITERATIONS[i], "run_id": run_id, "same_run_id_as_alone": run_id in stored,
                           "same_numbers_as_alone": same,
                           "shows_its_own_run": own, "positions_seen": s.get("positions"),
                           "seconds": round(s.get("finished", 0) - s.get("clicked", 0), 1), "errors": s.get("errors")})
        report = {"sessions": args.sessions, "browsing_sessions": args.browsers, "max_runs": args.max_runs,
                  "dwell_s": args.dwell,
                  "wall_s": round(wall, 1), "most_computing_at_once": max(computing),
                  "server_rss_start_mb": round(rss[0], 1), "server_peak_rss_mb": round(peak, 1),
                  "page_views_while_loaded": sum(b.get("views", 0) for b in browsing),
                  "browsing_errors": [e for b in browsing for e in b.get("errors", [])], "runs": checks}
    print(json.dumps(report, indent=2), flush=True)
    ok = (all(c["same_numbers_as_alone"] and c["shows_its_own_run"] and not c["errors"] for c in checks)
          and not report["browsing_errors"] and report["most_computing_at_once"] <= args.max_runs)
    print("OK" if ok else "FAILED: see above", flush=True)
    return report


if __name__ == "__main__":
    main(None)
