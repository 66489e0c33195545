"""A newcomer's first minutes clicked through in a real browser, timed (no tiny settings, cold caches).

Starts `streamlit run app.py` on a free localhost port with an empty DDAUDIT_HOME, then Playwright
drives Debian's Chromium: the Dataset page until the bundled demo's finished form shows, Results until the
bundled audit's metrics show (targets: both <= 10 s after the server is up), Distill: the estimate
shown before Start, then Start with the default form and wait for "Finished" (target <= 90 s from the
click), and the Dataset page's "Run the demo" until it finishes (target <= 3 minutes). Without
--skip-embeddings it first opens Embeddings (the map) as before. Prints each step's seconds.
`python -m bench.bench_first_launch_browser [--chromium /usr/bin/chromium]`
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
    ap.add_argument("--first-look", action="store_true", help="stop after the bundled results are shown")
    ap.add_argument("--embeddings", action="store_true", help="also open the Embeddings page (the map) before Distill")
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
            t = up = lap("server up", t0)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=serve.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.set_default_timeout(LONG)
                page.goto(url)
                page.get_by_text("Its finished form, from the bundled example").first.wait_for()
                t = lap("Dataset page: bundled demo shown", t)
                steps["bundled visible after server up"] = t - up
                page.get_by_text("conflicting (train)").first.wait_for()
                t = lap("Dataset page: counts drawn", t)
                page.wait_for_timeout(int(args.dataset_page_seconds * 1000))
                t = time.perf_counter()
                nav = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink-NavLink']")
                nav.get_by_text("Results", exact=True).click()
                page.get_by_text("Metrics per method").first.wait_for()
                t = lap("Results: bundled audit shown", t)
                print(f"{'  bundled demo visible after the server is up':<52} "
                      f"{steps['bundled visible after server up']:7.1f} s", flush=True)
                if args.first_look:
                    browser.close()
                    return {"steps": steps}
                if args.embeddings:
                    nav.get_by_text("Embeddings", exact=True).click()
                    page.get_by_text("conflict weight mass").first.wait_for()
                    t = lap("Embeddings: SupCon + UMAP map + weights shown", t)
                nav.get_by_text("Distill", exact=True).click()
                page.get_by_text("Estimated time:").first.wait_for()
                said = page.get_by_text("Estimated time:").first.inner_text()
                print(f"  {said}", flush=True)
                t = time.perf_counter()
                page.get_by_role("button", name="Start distillation").click()
                page.get_by_text("Finished").first.wait_for()
                t = lap("Distill: own first result (defaults), from the click", t)
                nav.get_by_text("Dataset", exact=True).click()
                page.get_by_role("button", name="Run the demo").click()
                t = time.perf_counter()
                page.get_by_text("Finished Watch the bias amplify").first.wait_for()
                t = lap("Demo: from the click to its grids", t)
                browser.close()
        finally:
            serve.stop(proc)
    return {"steps": steps}


if __name__ == "__main__":
    main(None)
