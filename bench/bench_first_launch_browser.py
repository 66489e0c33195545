"""The dashboard's first launch clicked through in a real browser, timed (no tiny settings, cold caches).

Starts `streamlit run app.py` on a free localhost port with an empty DDAUDIT_HOME, then Playwright
drives Debian's Chromium: Dataset page -> Embeddings (wait for the map's weight diagnostics) ->
Distill (Start with the default form: 3 methods, DM, IPC 10, quick, evaluated once per set; wait for
"Finished") -> Results (wait for the metrics table). Prints the seconds of each step and the total
from the server's start. `python -m bench.bench_first_launch_browser [--chromium /usr/bin/chromium]`
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import serve

LONG = 900_000  # ms


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_first_launch_browser")
    ap.add_argument("--chromium", default=os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--dataset-page-seconds", type=float, default=0.0,
                    help="time a user spends on the Dataset page before opening Embeddings (default 0)")
    ap.add_argument("--home", default=None, help="use (and keep) this empty DDAUDIT_HOME instead of a temporary one")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -r requirements-dev.txt)", flush=True)
        return {}
    if not Path(args.chromium).exists():
        print(f"skipped: no Chromium at {args.chromium} (apt-get install chromium)", flush=True)
        return {}
    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ddaudit-first-launch-") as tmp:
        home = args.home or tmp
        env = {**os.environ, "DDAUDIT_HOME": home}
        env.pop("DDAUDIT_TINY", None)
        t0 = time.perf_counter()
        proc, url = serve.start_app(env)

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            steps[name] = now - since
            print(f"{name:<52} {steps[name]:7.1f} s", flush=True)
            return now

        try:
            if not serve.wait_healthy(proc, url, 120):
                raise SystemExit("streamlit did not become healthy in 120 s (or exited); run `make app` to see why")
            t = lap("server up", t0)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=serve.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.set_default_timeout(LONG)
                page.goto(url)
                page.get_by_text("conflicting (train)").first.wait_for()
                t = lap("Dataset page drawn", t)
                page.wait_for_timeout(int(args.dataset_page_seconds * 1000))
                t = time.perf_counter()
                page.locator("[data-testid='stSidebarNav']").get_by_text("Embeddings", exact=True).click()
                page.get_by_text("conflict weight mass").first.wait_for()
                t = lap("Embeddings: SupCon + UMAP map + weights shown", t)
                page.locator("[data-testid='stSidebarNav']").get_by_text("Distill", exact=True).click()
                page.get_by_role("button", name="Start distillation").click()
                page.get_by_text("Finished").first.wait_for()
                t = lap("Distill: default run, distilled + evaluated", t)
                page.locator("[data-testid='stSidebarNav']").get_by_text("Results", exact=True).click()
                page.get_by_text("Metrics per method").first.wait_for()
                t = lap("Results: metrics shown", t)
                header = page.get_by_text("preset quick").first.inner_text()
                print(f"  results header: {header}", flush=True)
                browser.close()
        finally:
            serve.stop(proc)
    total = sum(steps.values())
    print(f"{'total, server start to results':<52} {total:7.1f} s (waits on the Dataset page excluded)", flush=True)
    return {"steps": steps, "total_s": total}


if __name__ == "__main__":
    main(None)
