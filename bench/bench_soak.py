"""A long dashboard session, shortened: scripted page switching in real Chromium (Dataset, Embeddings with its
map, Distill, Results with the bundled audit, Runs, Sweeps, round and round) while the server's RSS is read
after every switch. Reports RSS after the warm-up round, at the end, its peak, and the slope over the second
half (MB per 100 switches and per hour-equivalent at one switch every --human-seconds).
`python -m bench.bench_soak [--switches 240] [--human-seconds 15]`
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench import serve
from bench.bench_load import no_errors, open_page, rss_mb

PAGES = (("", "Dataset"), ("embeddings", "Embeddings"), ("distill", "Distill"), ("results", "Results"),
         ("runs", "Runs"), ("sweeps", "Sweeps"))
LONG = 900_000  # ms


def slope(ys: list[float]) -> float:
    """Least-squares slope of ys against their index."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def idle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=LONG)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_soak")
    ap.add_argument("--chromium", default=os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--switches", type=int, default=240, help="page switches (default 240)")
    ap.add_argument("--human-seconds", type=float, default=15.0,
                    help="a person's seconds per page, for the hour-equivalent (default 15: 240 switches = 1 h)")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -r requirements-dev.txt)", flush=True)
        return {}
    rss, errors = [], []
    with tempfile.TemporaryDirectory(prefix="ddaudit-soak-") as home:
        env = {**os.environ, "DDAUDIT_HOME": home}
        env.pop("DDAUDIT_TINY", None)
        proc, url = serve.start_app(env)
        t0 = time.time()
        try:
            if not serve.wait_healthy(proc, url, 120):
                raise SystemExit("streamlit did not become healthy in 120 s")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=serve.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.set_default_timeout(LONG)
                for i in range(args.switches):
                    path, title = PAGES[i % len(PAGES)]
                    open_page(page, url, path, title)
                    if path == "embeddings":
                        page.get_by_text("conflict weight mass").first.wait_for()
                    if path == "results":
                        page.get_by_text("Metrics per method").first.wait_for()
                    idle(page)
                    errors += no_errors(page)
                    rss.append(rss_mb(proc.pid))
                    if i % len(PAGES) == len(PAGES) - 1:
                        print(f"switch {i + 1:4d}  server RSS {rss[-1]:7.1f} MB  {time.time() - t0:6.0f} s", flush=True)
                browser.close()
            peak = rss_mb(proc.pid, "VmHWM")
        finally:
            serve.stop(proc)
    half = rss[len(rss) // 2:]
    per_switch = slope(half)
    report = {"switches": args.switches, "seconds": round(time.time() - t0, 1),
              "rss_after_first_round_mb": round(rss[len(PAGES) - 1], 1), "rss_end_mb": round(rss[-1], 1),
              "peak_rss_mb": round(peak, 1), "slope_second_half_mb_per_100_switches": round(100 * per_switch, 2),
              "slope_mb_per_hour_equivalent": round(per_switch * 3600 / args.human_seconds, 2), "errors": errors}
    print(json.dumps(report, indent=2), flush=True)
    return report


if __name__ == "__main__":
    main(None)
