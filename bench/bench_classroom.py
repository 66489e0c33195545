"""A class on one server, in real Chromium: `python -m engine serve` on loopback, one browser, a context per
session. Guests browse every page and press the demo; starters (guests too) start runs, the first several;
the owner signs in and removes a run at the end. Measured: every guest run's numbers against the same
request run alone by the CLI in an empty home, whether the queue served the sessions in turn (the order the
runs began computing, from the store), p50/p95 page-load times under load, the server's memory over time,
and every page error (st.exception, st.error, uncaught JavaScript errors).
`python -m bench.bench_classroom [--guests 25] [--starters 5] [--first-runs 3] [--out FILE]`

While the starters click, the bench holds the machine's one compute slot (as a long run would), so every
run waits in line and the order they then compute in is the queue's choice, not the clicks' timing.
DDAUDIT_TINY=1 by default: the guests' "quick" form runs the engine's tiny preset (`--real-presets` for the
real quick preset: minutes per run on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench import serve
from bench.bench_load import alone, no_errors, numbers, rss_mb

LONG = 900_000  # ms
SECRET = "bench-classroom-owner-secret"
PAGES = (("", "Dataset"), ("embeddings", "Embeddings"), ("results", "Results"), ("runs", "Runs"),
         ("sweeps", "Sweeps"), ("distill", "Distill"))


def load_page(page, url: str, path: str, title: str) -> float:
    """Open a page by URL; seconds until its title shows and the script run is over."""
    t0 = time.time()
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=title).first.wait_for()
    page.wait_for_timeout(200)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=LONG)
    return time.time() - t0


def set_ipc(page, ipc: int) -> None:
    box = page.locator("[data-testid='stNumberInput']").filter(has_text="Images per class").locator("input")
    box.fill(str(ipc))
    box.press("Enter")
    page.wait_for_timeout(800)


def start_run(page, url: str, ipc: int) -> None:
    """A starter's click: Distill with its IPC, Start, and wait until the run shows its place in the queue."""
    load_page(page, url, "distill", "Distill")
    set_ipc(page, ipc)
    page.get_by_role("button", name="Start distillation").click()
    page.get_by_text("in the queue").first.wait_for()


def press_demo(page, url: str) -> tuple[str, float]:
    """A guest opens the Dataset page and presses "Run the demo" (or finds it running or done): what it found
    and the page's load time."""
    seconds = load_page(page, url, "", "Dataset")
    button = page.get_by_role("button", name="Run the demo")
    if button.count():
        button.click()
        page.wait_for_timeout(500)
        return "pressed", seconds
    return "already running or done", seconds


def remove_run(page, url: str, ipc: int) -> bool:
    """The owner signs in, picks the run of IPC `ipc` on the Runs page by its readable label and removes it."""
    load_page(page, url, "runs", "Runs")
    page.get_by_text("Owner sign-in").first.click()
    page.get_by_label("Owner's secret").fill(SECRET)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as the owner").first.wait_for()
    box = page.locator("[data-testid='stMultiSelect']").filter(has_text="Compare runs")
    box.get_by_role("button", name="Clear all").click()  # no run picked
    page.wait_for_timeout(800)
    box.locator("input").fill(f"· IPC {ipc} · colored-digits")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)
    page.get_by_role("button", name="Remove this run").click()
    page.get_by_role("button", name="Yes, remove").click()
    page.wait_for_timeout(1500)
    return True


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 2)


def in_turn(rounds: list[int]) -> bool:
    """Sessions served in turn: the runs began computing in rounds (each session's k-th run in round k), never a
    session's next run before another's earlier one, i.e. the rounds of the order they began in never go down."""
    return all(a <= b for a, b in zip(rounds, rounds[1:]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_classroom")
    ap.add_argument("--chromium", default=os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--guests", type=int, default=25, help="sessions that browse every page and press the demo")
    ap.add_argument("--starters", type=int, default=5, help="sessions that start runs")
    ap.add_argument("--first-runs", type=int, default=3, help="runs the first starter starts (the others one each)")
    ap.add_argument("--dwell", type=float, default=4.0, help="seconds between two page views of one guest")
    ap.add_argument("--real-presets", action="store_true", help="no DDAUDIT_TINY: the real quick preset")
    ap.add_argument("--out", default="bench_classroom.json", help="the JSON report (default bench_classroom.json)")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -r requirements-dev.txt)", flush=True)
        return {}
    from engine.store import RunStore, queue
    ipcs = {s: ([1 + k for k in range(args.first_runs)] if s == 0 else [args.first_runs + s])
            for s in range(args.starters)}  # a different request per run: IPC 1..n
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="ddaudit-class-") as home, \
            tempfile.TemporaryDirectory(prefix="ddaudit-alone-") as alone_home:
        env = {**os.environ, "DDAUDIT_HOME": home, "DDAUDIT_MAX_RUNS": "1", "DDAUDIT_OWNER_SECRET": SECRET}
        if not args.real_presets:
            env["DDAUDIT_TINY"] = "1"
        os.environ["DDAUDIT_HOME"] = home
        proc, url = serve.start_serve(env)
        memory, loads, errors, js_errors = [], [], [], []
        stop = threading.Event()
        try:
            if not serve.wait_healthy(proc, url, 120):
                raise SystemExit("engine serve did not become healthy in 120 s")
            t0 = time.time()

            def sample() -> None:
                while not stop.is_set():
                    memory.append((round(time.time() - t0, 1), round(rss_mb(proc.pid), 1)))
                    time.sleep(1.0)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=serve.CHROMIUM_ARGS)

                def session():
                    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
                    page.set_default_timeout(LONG)
                    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
                    return page
                starters = [session() for _ in range(args.starters)]
                guests = [session() for _ in range(args.guests)]
                owner = session()
                slot = queue._take_slot(queue.queue_dir(), 1)  # the machine is busy while the starters click
                order_clicked = []
                try:
                    for s, wanted in ipcs.items():  # the first starter's runs all arrive before the others'
                        for ipc in wanted:
                            start_run(starters[s], url, ipc)
                            order_clicked.append(ipc)
                    deadline = time.time() + 60  # the last Start's job queues its ticket a moment after the click
                    while queue.waiting() < len(order_clicked) and time.time() < deadline:
                        time.sleep(0.2)
                    waiting_at_release = queue.waiting()
                finally:
                    slot.close()
                t_release = time.time()
                demo: list[str] = []
                n, views = 0, {i: 0 for i in range(args.guests)}
                store = RunStore()
                total_runs = sum(len(v) for v in ipcs.values())

                def finished() -> int:
                    return len(store.list(kind="audit", status="finished"))
                # every guest tours every page (the Dataset page first, pressing the demo), and the guests go on
                # browsing until every run and the demo finished
                while ((finished() < total_runs + 1 or min(views.values()) < len(PAGES))
                       and time.time() - t_release < 3600):
                    g = n % args.guests
                    page = guests[g]
                    path, title = PAGES[views[g] % len(PAGES)]
                    try:
                        if views[g] == 0:
                            found, seconds = press_demo(page, url)
                            demo.append(found)
                            loads.append(seconds)
                        else:
                            loads.append(load_page(page, url, path, title))
                        errors.extend(no_errors(page))
                    except Exception as exc:  # reported with the rest
                        errors.append(f"{type(exc).__name__}: {exc}")
                    views[g] += 1
                    n += 1
                    time.sleep(max(0.0, args.dwell / args.guests))
                for page in starters:
                    errors.extend(no_errors(page))
                rows = store.list(kind="audit")  # before the owner removes one
                results = {r["id"]: store.open(r["id"]).results() for r in rows}
                removed_ipc = ipcs[0][-1]
                remove_run(owner, url, removed_ipc)
                errors.extend(no_errors(owner))
                browser.close()
            wall = time.time() - t0
        finally:
            stop.set()
            peak = rss_mb(proc.pid, "VmHWM")
            serve.stop(proc)
        left = {r["id"] for r in RunStore().list(kind="audit")}
        by_ipc = {(r["config"].get("distill") or {}).get("ipc"): r for r in rows
                  if not (r["config"].get("distill") or {}).get("init") == "noise"}  # the demo starts from noise
        created = {r["id"]: r["created"] for r in rows}
        runs = {}  # run id -> (session, round, ipc), every starter run still in the store or removed by the owner
        for s, wanted in ipcs.items():
            for k, i in enumerate(wanted):
                if i in by_ipc:
                    runs[by_ipc[i]["id"]] = (s, k, i)
        began = sorted(runs, key=created.get)
        checks = []
        for s, wanted in ipcs.items():
            for i in wanted:
                run_id, res = alone_ipc(i, alone_home, "quick" if args.real_presets else "tiny")
                here = results.get(run_id)
                checks.append({"session": s, "ipc": i, "run_id": run_id, "same_run_id_as_alone": here is not None,
                               "same_numbers_as_alone": here is not None and numbers(here) == numbers(res),
                               "removed_by_the_owner": run_id not in left})
        report = {
            "guests": args.guests, "starters": args.starters, "runs": total_runs, "tiny": not args.real_presets,
            "wall_s": round(wall, 1), "waiting_when_the_slot_was_freed": waiting_at_release,
            "clicked_ipcs": order_clicked,
            "began_computing": [{"session": runs[r][0], "round": runs[r][1], "ipc": runs[r][2]} for r in began],
            "sessions_served_in_turn": in_turn([runs[r][1] for r in began]),
            "demo": {"pressed": demo.count("pressed"), "found_running_or_done": len(demo) - demo.count("pressed")},
            "guest_page_views": sum(views.values()), "fewest_views_of_a_guest": min(views.values()),
            "page_loads": len(loads), "page_load_p50_s": pct(loads, 0.5), "page_load_p95_s": pct(loads, 0.95),
            "page_load_max_s": pct(loads, 1.0),
            "server_rss_mb": {"start": memory[0][1] if memory else None, "peak_vmhwm": round(peak, 1),
                              "end": memory[-1][1] if memory else None,
                              "every_30_samples": memory[::30]},
            "owner_removed_run": {"ipc": removed_ipc, "gone": any(c["removed_by_the_owner"] for c in checks
                                                                  if c["ipc"] == removed_ipc)},
            "page_errors": errors, "javascript_errors": js_errors, "runs_checked": checks,
        }
    report["ok"] = (all(c["same_numbers_as_alone"] for c in checks)
                    and report["sessions_served_in_turn"] and not errors and not js_errors
                    and report["owner_removed_run"]["gone"])
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "server_rss_mb"}, indent=2), flush=True)
    print("OK" if report["ok"] else "FAILED: see above", flush=True)
    return report


def alone_ipc(ipc: int, home: str, preset: str) -> tuple[str, dict]:
    """The dashboard's default audit at this IPC (the Distill form's defaults), run alone by the CLI."""
    return alone(None, home, ipc=ipc, preset=preset)


if __name__ == "__main__":
    main(None)
