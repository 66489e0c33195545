"""The shareable report: a tiny audit -> `report` -> one HTML file that opens offline in Chromium."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import cli

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("DDAUDIT_CHROMIUM", "/usr/bin/chromium")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory) -> str:
    """A finished tiny audit with every method and the random baseline; its run id."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--ipc", "2", "--preset",
                       "tiny", "--out", str(tmp_path_factory.mktemp("audit")), "--json"])
    assert rc == 0, err.getvalue()
    return err.getvalue().split("run ", 1)[1].split(" ", 1)[0]


def test_report_is_one_file_in_order_and_in_the_run_folder(audit_run: str, tmp_path, capsys) -> None:
    rc, out, err = _run(["report", audit_run, "--out", str(tmp_path / "r.html"), "--json"], capsys)
    assert rc == 0, err
    info = json.loads(out)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert Path(info["run_folder"]).read_text(encoding="utf-8") == html and info["bytes"] == len(html.encode())
    heads = ["Verdict", "Setting", "The data", "KDE diagnostics", "Synthetic sets", "Metrics per method",
             "Accuracy per class and attribute", "During distillation", "How far to trust the aligned share"]
    positions = [html.index(f"<h2>{h}") for h in heads]
    assert positions == sorted(positions)  # in the order a reader needs them
    assert html.count("data:image/png;base64,") >= 5 and "python -m engine audit" in html
    import re
    markup = re.sub(r"<script.*?</script>", "", html, flags=re.S)  # plotly's bundle names URLs it never loads
    assert "src=\"http" not in markup and "href=\"http" not in markup and "url(http" not in markup
    rc, out, _ = _run(["runs", "show", audit_run, "--json"], capsys)
    assert json.loads(out)["report"] == info["run_folder"]  # runs show says where


@pytest.mark.parametrize("argv_tail,words", [
    (["no-such-run"], "no run named"),
    (["{distill}"], "not an audit"),
    (["{audit}", "--out", "/proc/ddaudit-report.html"], "cannot write"),
    (["{audit}", "--out", "{folder}"], "is a folder"),
])
def test_bad_report_input_exits_2(audit_run, tmp_path, capsys, argv_tail, words) -> None:
    rc, out, err = _run(["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--ipc", "1",
                         "--methods", "vanilla", "--preset", "tiny", "--out", str(tmp_path / "d"), "--json"], capsys)
    distill_run = json.loads(out)["run_id"]
    subs = {"{audit}": audit_run, "{distill}": distill_run, "{folder}": str(tmp_path)}
    argv = ["report", *[subs.get(a, a) for a in argv_tail]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "never.html")]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and words in err.lower() and "fix:" in err, err
    assert not (tmp_path / "never.html").exists()


@pytest.mark.browser
@pytest.mark.slow
def test_report_opens_offline_in_chromium(audit_run, tmp_path, capsys) -> None:
    """Every network request blocked: it loads without errors, every chart draws, every image decodes,
    and no request was even attempted; a screenshot is kept with the test artifacts."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed") if os.environ.get("CI") == "true" else pytest.skip("no playwright")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail("no chromium") if os.environ.get("CI") == "true" else pytest.skip("no chromium")
    from bench import serve
    path = tmp_path / "report.html"
    assert _run(["report", audit_run, "--out", str(path)], capsys)[0] == 0
    attempted, errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=serve.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                   else (attempted.append(route.request.url), route.abort()))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        n_plots = page.evaluate("() => document.querySelectorAll('.plotly-graph-div').length")
        page.wait_for_function("(n) => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
                               arg=n_plots, timeout=60_000)
        images = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth])")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert n_plots >= 5  # counts, weight histogram, two bar charts, the heatmaps
    assert images and all(done and width > 0 for done, width in images), images
    assert attempted == [] and errors == [], (attempted, errors)


def test_unfinished_run_is_refused(tmp_path, capsys) -> None:
    from engine.errors import Cancelled
    from engine.store import RunStore
    with pytest.raises(Cancelled):
        with RunStore().run("audit", {"a": "run that was stopped"}) as run:
            raise Cancelled("stopped on purpose", None)
    rc, _, err = _run(["report", run.id, "--out", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and "cancelled, not finished" in err and not (tmp_path / "x.html").exists()


def test_reproduce_command_names_non_default_tracking() -> None:
    from engine import pipeline, report
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, preset="tiny", ipc=2, track_every=2, track_eval=True))
    info = {"config": pipeline.run_key(p, "audit")}
    res = {"dataset": "colored-digits", "conflict_ratio": 0.05, "algorithm": "dm", "ipc": 2, "preset": "tiny",
           "seed": 0, "eval_seeds": p.seeds}
    cmd = report.command(info, res)
    assert "--track-every 2" in cmd and "--track-eval" in cmd
    info = {"config": pipeline.run_key(pipeline.plan(pipeline.Request("colored-digits", 0.05, preset="tiny", ipc=2)),
                                       "audit")}
    assert "--track" not in report.command(info, res)  # the default: about 10 points


def test_verdict_words_follow_the_numbers() -> None:
    from engine import report
    base = {"algorithm": "dm", "real_aligned_share": 95.0, "probe_accuracy": 99.0}
    row = {"conflicting_accuracy": 20.0, "worst_group_accuracy": 0.0, "deo_m": 100.0}
    up = report.verdict({**base, "methods": {"vanilla": {**row, "synthetic_aligned_share": 97.0},
                                             "fairdd": {**row, "synthetic_aligned_share": 12.0,
                                                        "conflicting_accuracy": 90.0}}})
    assert "amplified the bias: 97% " in up and "against 95.0%" in up and "fairdd, brought the share to 12%" in up
    weak = report.verdict({**base, "probe_accuracy": 20.0, "methods": {"vanilla": {**row, "synthetic_aligned_share": 20.0}}})
    assert "did not carry the bias" in weak and "too weak to trust" in weak


def test_report_compares_several_runs(audit_run, tmp_path, capsys) -> None:
    rc, _, err = _run(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--ipc", "2", "--preset",
                       "tiny", "--seed", "1", "--methods", "vanilla,fairdd", "--out", str(tmp_path / "a"), "--json"],
                      capsys)
    other = err.split("run ", 1)[1].split(" ", 1)[0]
    rc, out, err = _run(["report", audit_run, other, "--out", str(tmp_path / "both.html"), "--json"], capsys)
    assert rc == 0, err
    html = (tmp_path / "both.html").read_text(encoding="utf-8")
    assert "<h2>Comparison</h2>" in html and html.count("<h2>Verdict</h2>") == 2
    assert f"<h1>Run {audit_run}</h1>" in html and f"<h1>Run {other}</h1>" in html
    assert "run_folder" not in json.loads(out)  # a comparison is written to --out only


def test_verdict_says_when_remedies_are_within_the_evaluation_noise() -> None:
    """The issue's case: balanced 90.8 vs FairDD and COBRA 90.7 with one training is no 'best remedy'."""
    from engine import report
    base = {"algorithm": "dm", "real_aligned_share": 95.0, "probe_accuracy": 99.0, "eval_seeds": [0]}
    row = {"worst_group_accuracy": 80.0, "deo_m": 20.0, "synthetic_aligned_share": 10.0}
    close = {"balanced": {**row, "conflicting_accuracy": 90.8}, "fairdd": {**row, "conflicting_accuracy": 90.7},
             "cobra": {**row, "conflicting_accuracy": 90.7}, "kde": {**row, "conflicting_accuracy": 80.0}}
    text = report.verdict({**base, "methods": close})
    assert "balanced, fairdd and cobra are within the evaluation noise" in text  # the best first, then the tied
    assert "up to 0.1 points apart with 1 training per set" in text
    assert "no practical number of trainings" in text and "The best remedy" not in text
    # a 3-point gap with 3 trainings of std 1: outside the noise, named the best
    three = {**base, "eval_seeds": [0, 1, 2], "methods": {
        "fairdd": {**row, "conflicting_accuracy": 90.0, "conflicting_accuracy_std": 1.0},
        "kde": {**row, "conflicting_accuracy": 87.0, "conflicting_accuracy_std": 1.0}}}
    assert "The best remedy here, fairdd" in report.verdict(three)
    # 1.5 points apart with std 1 over 3 trainings: tied; 8 * 1 / 1.5^2 -> 4 trainings would separate them
    near = {**three, "methods": {**three["methods"], "kde": {**row, "conflicting_accuracy": 88.5,
                                                               "conflicting_accuracy_std": 1.0}}}
    assert report.within_noise(near["methods"]["fairdd"], near["methods"]["kde"], 3) == (True, 4)
    assert "about 4 trainings per set would separate them" in report.verdict(near)
