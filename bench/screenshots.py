"""README's screenshots: each page of the dashboard showing the bundled example, taken in real Chromium.

Starts `streamlit run app.py` with an empty DDAUDIT_HOME (so the pages show the bundled example only),
visits each page, waits for what makes it worth a picture and saves assets/screenshots/<n>-<page>.png.
`make screenshots` (python -m bench.screenshots [--out assets/screenshots] [--chromium /usr/bin/chromium])
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import serve

OUT = Path(__file__).resolve().parents[1] / "assets" / "screenshots"
WAIT_MS = 120_000


def shoot(page, out: Path, name: str, full: bool = False) -> Path:
    """Save the viewport (or the full page) once Streamlit has stopped running the script."""
    page.wait_for_timeout(1500)  # plotly's first draw
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(f"{path} ({path.stat().st_size / 1024:.0f} KB)", flush=True)
    return path


def pick(page, label: str, text: str) -> None:
    """Choose the option of a Streamlit selectbox that typing `text` filters to first."""
    page.locator(f"input[aria-label='{label}']").first.click()
    page.wait_for_timeout(1000)
    page.keyboard.type(text)
    page.wait_for_timeout(500)
    page.keyboard.press("Enter")


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(prog="bench.screenshots")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--chromium", default=os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory(prefix="ddaudit-screens-") as home:
        env = {**os.environ, "DDAUDIT_HOME": home}
        env.pop("DDAUDIT_TINY", None)
        proc, url = serve.start_app(env)
        try:
            if not serve.wait_healthy(proc, url, 120):
                raise SystemExit("streamlit did not become healthy in 120 s; run `make app` to see why")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=serve.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.set_default_timeout(WAIT_MS)
                nav = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink-NavLink']")
                page.goto(url)
                page.get_by_text("Its finished form, from the bundled example").first.wait_for()
                shots.append(shoot(page, out, "1-dataset-demo"))
                nav.get_by_text("Embeddings", exact=True).click()
                page.get_by_text("conflict weight mass").first.wait_for()
                page.get_by_text("Synthetic sets on the map").first.click()
                page.locator("input[aria-label='Run']").first.wait_for()
                page.wait_for_timeout(1000)
                pick(page, "Run", "cobra")  # the five-method audit
                page.get_by_text("Selected synthetic images").or_(page.get_by_text("Select stars")).first.wait_for()
                page.wait_for_timeout(4000)
                page.get_by_text("Paths", exact=True).first.click()  # stars only: the map stays readable
                page.wait_for_timeout(3000)
                page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
                shots.append(shoot(page, out, "2-embeddings-map"))
                pick(page, "Zoom to class", "3")
                page.wait_for_timeout(3000)
                page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
                shots.append(shoot(page, out, "2b-embeddings-zoom"))
                nav.get_by_text("Distill", exact=True).click()
                page.get_by_text("Estimated time:").first.wait_for()
                shots.append(shoot(page, out, "3-distill-form"))
                nav.get_by_text("Results", exact=True).click()
                page.get_by_text("Metrics per method").first.wait_for()
                shots.append(shoot(page, out, "4-results"))
                page.get_by_text("Synthetic sets", exact=True).first.scroll_into_view_if_needed()
                shots.append(shoot(page, out, "5-results-grids"))
                nav.get_by_text("Runs", exact=True).click()
                page.get_by_text("bundled example").first.wait_for()
                shots.append(shoot(page, out, "6-runs"))
                nav.get_by_text("Sweeps", exact=True).click()
                page.get_by_text("sweep.csv").first.wait_for()
                page.get_by_text("Outcome").first.scroll_into_view_if_needed()
                shots.append(shoot(page, out, "7-sweeps"))
                browser.close()
        finally:
            serve.stop(proc)
    return shots


if __name__ == "__main__":
    t0 = time.time()
    main(None)
    print(f"done in {time.time() - t0:.0f} s", flush=True)
