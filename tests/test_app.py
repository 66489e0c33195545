"""AppTest for every page of the dashboard at tiny engine settings (real engine, tiny sizes: DDAUDIT_TINY=1)."""
from __future__ import annotations

import json
import os

import pytest
from streamlit.testing.v1 import AppTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "app.py")


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDAUDIT_TINY", "1")
    monkeypatch.chdir(ROOT)


def open_page(page: str | None = None, timeout: float = 180) -> AppTest:
    """Run the app, optionally switch to pages/<page>.py, and return the AppTest."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    return at


def ok(at: AppTest) -> None:
    """No exception element and no st.error on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def wait(key: str, timeout: float):
    """Block until the registry's job with this key is done or the timeout passes."""
    import time
    from ui import jobs
    end = time.time() + timeout
    job = jobs.registry().get(key)
    while job is not None and not job.done and time.time() < end:
        time.sleep(0.05)
    return job


def wait_jobs(timeout: float = 400) -> None:
    """Wait until every background job of the registry is done."""
    from ui import jobs
    reg = jobs.registry()
    for job in reg.jobs():
        wait(job.key, timeout)
        assert job.done, f"job {job.label} still running after {timeout} s"
        assert job.status == "finished", (job.label, job.status, job.error)


def metric(at: AppTest, label: str) -> str:
    """The value of the metric with this label."""
    return next(m for m in at.metric if m.label == label).value


# --------------------------------------------------------------------------- Dataset + sidebar

def test_dataset_page_default() -> None:
    at = open_page()
    ok(at)
    assert at.title[0].value == "Dataset"
    assert metric(at, "conflicting (train)") == "70"  # colored-digits at 5%: exact per-class rounding
    assert metric(at, "training images") == "1,442"
    assert at.sidebar.selectbox(key="sb_dataset").value == "colored-digits"
    assert any("Device: cpu" in c.value for c in at.sidebar.caption)
    # the counts' two heatmaps and two sample grids, after the demo panel's bundled curve and three grids
    assert len(at.get("plotly_chart")) == 3
    assert len(at.get("image")) == 5


def test_sidebar_ratio_changes_counts() -> None:
    at = open_page()
    at.sidebar.select_slider(key="sb_ratio").set_value(0.01).run()
    ok(at)
    assert int(metric(at, "conflicting (train)")) < 70


def test_unavailable_dataset_says_how_to_get_it() -> None:
    from engine import data
    missing = [n for n in data.REGISTRY if not data.dataset_status(n)["available"]]
    if not missing:
        pytest.skip("every dataset is available on this machine")
    at = open_page()
    options = at.sidebar.selectbox(key="sb_dataset").options
    assert f"{missing[0]} (not available)" in options
    at.sidebar.selectbox(key="sb_dataset").set_value(missing[0]).run()
    assert not at.exception
    assert at.error and "**Fix:**" in at.error[0].value and "colored-digits" in at.error[0].value
    for page in ("embeddings", "distill"):  # every page that needs data says the same, no traceback
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception and at.error and "**Fix:**" in at.error[0].value


def test_every_page_draws_the_shared_frame() -> None:
    """Whether Streamlit runs a page through app.py's navigation or alone (a fresh server's deep link,
    which AppTest reproduces on every switch), the page draws the sidebar and its links, and keeps state."""
    at = open_page()
    at.sidebar.select_slider(key="sb_ratio").set_value(0.02).run()
    for page, title in (("runs", "Runs"), ("results", "Results"), ("distill", "Distill"), ("dataset", "Dataset")):
        at.switch_page(f"pages/{page}.py").run()
        ok(at)
        assert at.title[0].value == title
        assert at.sidebar.select_slider(key="sb_ratio").value == 0.02
        assert at.sidebar.selectbox(key="sb_dataset").value == "colored-digits"


def test_no_streamlit_internal_is_written() -> None:
    """The UI code uses Streamlit's public API only (the pages/ workaround is gone)."""
    import pathlib
    root = pathlib.Path(ROOT)
    for path in [root / "app.py", *(root / "pages").glob("*.py"), *(root / "ui").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "PagesManager" not in text and "streamlit.runtime" not in text, path


# --------------------------------------------------------------------------- Embeddings

def test_embeddings_page_live_weights_and_selection() -> None:
    at = open_page("embeddings")
    assert not at.exception
    wait_jobs()
    at.run()
    ok(at)
    assert at.title[0].value == "Embeddings"
    mass = metric(at, "conflict weight mass")
    assert mass.endswith("%")
    ess = metric(at, "effective sample size")
    # a smaller kernel variance changes the weights, hence the diagnostics
    s2 = next(s for s in at.select_slider if s.label.startswith("Kernel variance"))
    s2.set_value(s2.options[2] if isinstance(s2.options[2], float) else float(s2.options[2].split(" ")[0])).run()
    ok(at)
    assert (metric(at, "conflict weight mass"), metric(at, "effective sample size")) != (mass, ess)
    at.radio(key="emb_colour").set_value("class").run()
    ok(at)
    # quick selection: every conflicting sample in the image grid, with a CSV of ids
    mode_key = "emb_select_mode" if any(r.key == "emb_select_mode" for r in at.radio) else "emb_select_mode_nomap"
    at.radio(key=mode_key).set_value("all conflicting").run()
    ok(at)
    assert any("Selection: 70 images (70 conflicting)" in h.value for h in at.subheader)
    assert at.get("download_button")
    assert at.session_state["kde_choice"]["kernel_variance"] > 0  # used by the Distill page's kde method


# --------------------------------------------------------------------------- Distill, Results, Runs

def start_run(methods: list[str], evaluate: bool, eval_seeds: int | None = None, baseline: bool = False,
              algorithm: str | None = None) -> AppTest:
    """Start a tiny run on the Distill page and wait for it."""
    at = open_page("distill")
    ok(at)
    at.multiselect(key="dst_methods").set_value(methods)
    if algorithm is not None:
        at.selectbox(key="dst_algorithm").set_value(algorithm)
    at.number_input(key="dst_ipc").set_value(2)
    at.checkbox(key="dst_evaluate").set_value(evaluate)
    if eval_seeds is not None:
        at.number_input(key="dst_eval_seeds").set_value(eval_seeds)
    at.checkbox(key="dst_baseline").set_value(baseline)
    at.button[0].click()  # the form's submit button
    at.run()
    ok(at)
    wait_jobs()
    at.run()
    ok(at)
    return at


def test_distill_page_runs_tiny_distillation() -> None:
    at = start_run(["vanilla", "fairdd"], evaluate=False)
    assert at.success, "finished message"
    assert len(at.get("image")) == 2  # one synthetic grid per method, side by side
    assert len(at.get("download_button")) == 2
    loss, share = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    assert {t["name"] for t in share["data"]} == {"vanilla", "fairdd"}
    assert share["data"][0]["x"] == [0, 1, 2, 3, 4]  # tiny: 4 iterations, a point at each
    assert "aligned share" in share["layout"]["title"]["text"]


def test_distill_page_runs_idc_and_shows_its_decoded_sets() -> None:
    """IDC from the Distill form: each grid shows the decoded set (IPC 2 x 2^2 images per class)."""
    from engine.store import RunStore
    at = start_run(["vanilla", "cobra"], evaluate=False, algorithm="idc")
    assert at.success, "finished message"
    assert len(at.get("image")) == 2 and len(at.get("download_button")) == 2
    run = next(r for r in RunStore().list(status="finished") if r["kind"] == "distill"
               and ((r.get("config") or {}).get("distill") or {}).get("algorithm") == "idc")
    store = RunStore()
    s = store.open(run["id"]).sets()["cobra"]
    assert len(s.labels) == 10 * 2 * 4 and s.formation.shape[0] == 10 * 2


def test_distill_page_runs_mtt_with_its_experts() -> None:
    """MTT from the Distill form: the experts are trained (or read back), each method's set is shown, and the
    stored sets carry their learned student step size."""
    from engine.store import RunStore
    at = start_run(["vanilla", "kde"], evaluate=False, algorithm="mtt")
    assert at.success, "finished message"
    assert len(at.get("image")) == 2
    run = next(r for r in RunStore().list(status="finished") if r["kind"] == "distill"
               and ((r.get("config") or {}).get("distill") or {}).get("algorithm") == "mtt")
    store = RunStore()
    sets = store.open(run["id"]).sets()
    assert set(sets) == {"vanilla", "kde"} and all(s.meta["syn_lr"] > 0 for s in sets.values())


def test_embeddings_page_puts_a_runs_synthetic_sets_on_the_map() -> None:
    from engine.store import RunStore
    if not [r for r in RunStore().list(status="finished") if r["kind"] in ("distill", "audit")
            and (r.get("config") or {}).get("conflict_ratio") == 0.05]:
        start_run(["vanilla", "fairdd"], evaluate=False)
    at = open_page("embeddings")
    wait_jobs()
    at.run()
    ok(at)
    label = next(o for o in at.selectbox(key="emb_overlay").options if o != "none")
    at.selectbox(key="emb_overlay").set_value(label).run()
    ok(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t.get("name") for t in spec["data"]]
    stars = [t for t in spec["data"] if str(t.get("name", "")).endswith(" synthetic")]
    # every image of the chosen run's sets: 10 classes x IPC 2 (x 4 for an IDC run's decoded images)
    store = RunStore()
    shown = store.open(label.split(" · ")[0]).sets()
    assert stars and all(len(t["customdata"]) == len(shown[t["name"].removesuffix(" synthetic")].labels)
                         for t in stars), names
    assert {len(s.labels) for s in shown.values()} <= {10 * 2, 10 * 2 * 4}
    assert any(str(n).endswith(" path") for n in names) and any(str(n).endswith(" start") for n in names)
    at.checkbox(key="emb_overlay_thumbs").check().run()
    ok(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(spec["layout"]["images"]) == sum(len(t["customdata"]) for t in stars)


def test_distill_refuses_empty_methods() -> None:
    at = open_page("distill")
    at.multiselect(key="dst_methods").set_value([])
    at.button[0].click()
    at.run()
    assert not at.exception
    assert at.error and "Fix" in at.error[0].value


def test_results_page_after_tiny_audit() -> None:
    at = start_run(["vanilla", "kde", "fairdd"], evaluate=True, baseline=True)
    assert len(at.get("image")) == 3
    at.switch_page("pages/results.py")
    at.run()
    ok(at)
    assert at.title[0].value == "Results"
    table = at.dataframe[0].value
    assert {"vanilla", "kde", "fairdd", "random"} <= set(table.index)
    assert "conflicting" in table.columns
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # heatmaps (one shared scale), bars, aligned share, the trajectory
    traj = json.loads(charts[3].proto.spec)
    assert {"vanilla", "kde", "fairdd"} <= {t["name"] for t in traj["data"]}
    assert all(t["x"][0] == 0 for t in traj["data"])  # every curve starts at iteration 0
    assert any(h.value == "During distillation" for h in at.subheader)
    assert "synthetic aligned share (%)" in at.selectbox(key=next(k for k in (w.key for w in at.selectbox)
                                                  if k and k.startswith("res_traj_metric"))).options
    names = {b.label for b in at.get("download_button")}
    assert {"Metrics (CSV)", "Full results (JSON)", "Heatmaps (PNG)"} <= names
    next(b for b in at.button if b.label.startswith("Build shareable report")).click()
    at.run()
    ok(at)
    report = next(b for b in at.get("download_button") if b.label == "Download report (HTML)")
    assert report is not None and any("Saved with the run" in c.value for c in at.caption)


def test_evaluation_trainings_follow_the_form() -> None:
    at = open_page("distill")
    assert at.number_input(key="dst_eval_seeds").value == 1  # the dashboard's quick default
    assert at.checkbox(key="dst_baseline").value is False    # the baseline is opt-in in the dashboard
    at = start_run(["vanilla"], evaluate=True, eval_seeds=2)
    at.switch_page("pages/results.py")
    at.run()
    ok(at)
    header = " ".join(m.value for m in at.markdown)
    assert "mean ± std over 2 evaluation trainings per set" in header
    assert set(at.dataframe[0].value.index) == {"vanilla"}
    assert any("random-real baseline" in c.value for c in at.caption)


def test_runs_page_lists_and_compares() -> None:
    from engine.store import RunStore
    if len(RunStore().list()) < 2:
        start_run(["vanilla"], evaluate=False)
        start_run(["vanilla", "fairdd"], evaluate=False)
    at = open_page("runs")
    ok(at)
    assert len(at.multiselect(key="runs_pick").value) == 2
    assert at.dataframe and len(at.get("image")) >= 2


def test_distill_live_progress_and_cancel() -> None:
    import time

    from ui import jobs
    at = open_page("distill")
    at.multiselect(key="dst_methods").set_value(["vanilla", "fairdd"])
    at.number_input(key="dst_iterations").set_value(5000)
    at.checkbox(key="dst_evaluate").set_value(False)
    at.button[0].click()
    at.run()
    ok(at)
    job = jobs.registry().by_id(at.session_state["distill_job"])
    end = time.time() + 120
    while time.time() < end and not job.done and job.latest.stage != "distill":
        time.sleep(0.2)
    at.run()
    ok(at)
    assert not job.done
    assert at.get("progress"), "progress bar while running"
    cancel = next(b for b in at.button if b.label == "Cancel run")
    cancel.click()
    at.run()
    wait(job.key, 120)
    assert job.status == "cancelled"
    at.run()
    assert not at.exception
    jobs.registry().forget(job.key)  # later tests wait on every job of the registry
    assert any("cancelled" in w.value for w in at.warning)


def test_a_second_sessions_run_waits_in_the_queue_and_cancels_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sessions, two different requests, one slot: the second waits with its position shown (it is not
    refused), its cancel works while it waits, and the Runs page shows the queue."""
    import time

    from ui import jobs
    monkeypatch.setenv("DDAUDIT_MAX_RUNS", "1")
    first, second = open_page("distill"), open_page("distill")
    for at, methods in ((first, ["vanilla"]), (second, ["fairdd"])):
        at.multiselect(key="dst_methods").set_value(methods)
        at.number_input(key="dst_iterations").set_value(5000)
        at.checkbox(key="dst_evaluate").set_value(False)
    first.button(key="dst_start").click().run()
    job1 = jobs.registry().by_id(first.session_state["distill_job"])
    end = time.time() + 120
    while time.time() < end and job1.latest.stage != "distill":
        time.sleep(0.2)
    second.button(key="dst_start").click().run()
    ok(second)
    job2 = jobs.registry().by_id(second.session_state["distill_job"])
    assert job2 is not job1
    while time.time() < end and job2.latest.stage != "queue":
        time.sleep(0.1)
    second.run()
    ok(second)
    bar = second.get("progress")[0]
    assert "waiting for a free compute slot: position 1 in the queue" in bar.proto.text, bar.proto.text
    assert job1.latest.stage == "distill" and not job1.done  # only the first computes
    runs = open_page("runs")
    assert any("1 of 1 slot(s) computing, 1 run(s) waiting" in c.value for c in runs.caption), \
        [c.value for c in runs.caption]
    next(b for b in second.button if b.label == "Cancel run").click().run()
    wait(job2.key, 60)
    assert job2.status == "cancelled" and job2.error.problem == "cancelled while waiting in the queue"
    job1.cancel()
    wait(job1.key, 120)
    for job in (job1, job2):
        jobs.registry().forget(job.key)  # later tests wait on every job of the registry


# --------------------------------------------------------------------------- one stored-run path

def _cli(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    from engine import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def _job_run_id(at: AppTest) -> str:
    from ui import jobs
    job = jobs.registry().by_id(at.session_state["distill_job"])
    assert job.status == "finished", (job.status, job.error)
    return job.result["run_id"]


def test_a_dashboard_distillation_is_reused_by_the_cli(tmp_path) -> None:
    """The Distill page (tiny mode = the engine's tiny preset) and `distill --preset tiny` are one run."""
    at = start_run(["vanilla", "kde"], evaluate=False)
    run_id = _job_run_id(at)
    rc, out, err = _cli(["distill", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods",
                         "vanilla,kde", "--ipc", "2", "--preset", "tiny", "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0, err
    assert json.loads(out)["run_id"] == run_id and "reused" in err


def test_a_cli_audit_is_reused_by_the_dashboard(tmp_path) -> None:
    """`audit --preset tiny` first, then the same request from the Distill page: no second run."""
    from engine.store import RunStore
    rc, out, err = _cli(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods",
                         "vanilla,fairdd", "--ipc", "2", "--seed", "5", "--preset", "tiny", "--eval-seeds", "1",
                         "--no-baseline", "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0 and "computed" in err, err
    cli_run = err.split("run ", 1)[1].split(" ", 1)[0]
    before = len(RunStore().list(kind="audit"))
    at = open_page()
    at.sidebar.number_input(key="sb_seed").set_value(5).run()
    at.switch_page("pages/distill.py").run()
    at.multiselect(key="dst_methods").set_value(["vanilla", "fairdd"])
    at.number_input(key="dst_ipc").set_value(2)
    at.checkbox(key="dst_evaluate").set_value(True)
    at.button[0].click()
    at.run()
    wait_jobs()
    assert _job_run_id(at) == cli_run
    assert len(RunStore().list(kind="audit")) == before


def _dashboard_kde_audit(seed: int) -> str:
    """Visit Embeddings with the sidebar's seed (sliders untouched), then start a KDE audit on Distill: its run."""
    at = open_page()
    at.sidebar.number_input(key="sb_seed").set_value(seed).run()
    at.switch_page("pages/embeddings.py").run()
    wait_jobs()
    at.run()
    ok(at)
    assert at.session_state["kde_choice"]["kernel_variance"] is None  # the suggestion, not its rounded value
    at.switch_page("pages/distill.py").run()
    assert any("suggested by the engine" in c.value for c in at.caption)
    at.multiselect(key="dst_methods").set_value(["kde"])
    at.number_input(key="dst_ipc").set_value(2)
    at.checkbox(key="dst_evaluate").set_value(True)
    at.button[0].click()
    at.run()
    wait_jobs()
    return _job_run_id(at)


def _cli_kde_audit(seed: int, tmp_path) -> tuple[str, str]:
    """The CLI's default KDE audit (no --kernel-variance) matching the dashboard's tiny form: (run id, stderr)."""
    rc, out, err = _cli(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--methods", "kde",
                         "--ipc", "2", "--seed", str(seed), "--preset", "tiny", "--eval-seeds", "1", "--no-baseline",
                         "--out", str(tmp_path / f"o{seed}"), "--json"])
    assert rc == 0, err
    return err.split("run ", 1)[1].split(" ", 1)[0], err


def test_a_dashboard_kde_run_after_embeddings_is_the_clis_default(tmp_path) -> None:
    """The default kernel variance from the dashboard is the same request as the CLI's default."""
    dashboard = _dashboard_kde_audit(11)
    cli_run, err = _cli_kde_audit(11, tmp_path)
    assert cli_run == dashboard and "reused" in err


def test_a_cli_default_kde_run_is_reused_by_the_dashboard_after_embeddings(tmp_path) -> None:
    from engine.store import RunStore
    cli_run, err = _cli_kde_audit(12, tmp_path)
    assert "computed" in err
    before = len(RunStore().list(kind="audit"))
    assert _dashboard_kde_audit(12) == cli_run
    assert len(RunStore().list(kind="audit")) == before


# --------------------------------------------------------------------------- image-folder datasets

@pytest.fixture
def folder_data(tmp_path, monkeypatch: pytest.MonkeyPatch):
    from tests.fakes import make_dfa, make_utkface
    root = make_dfa(tmp_path / "raw", "cmnist", 10, 10, 28, {"1pct": 1, "5pct": 3})
    make_utkface(root)
    monkeypatch.setenv("DDAUDIT_DATA", str(root))
    monkeypatch.setenv("DDAUDIT_HOME", str(tmp_path / "home"))
    return root


def test_dataset_page_offers_a_dfa_release_only_its_folders(folder_data) -> None:
    at = open_page()
    at.sidebar.selectbox(key="sb_dataset").set_value("cmnist-dfa").run()
    ok(at)
    ratio = at.sidebar.selectbox(key="sb_ratio")
    assert list(ratio.options) == ["1.0%", "5.0%"] and ratio.value == 0.05  # the default 5% has a folder
    assert metric(at, "conflicting (train)") == "30" and metric(at, "training images") == "100"
    ratio.set_value(0.01).run()
    ok(at)
    assert metric(at, "conflicting (train)") == "10"


def test_dataset_page_draws_64x64_faces(folder_data) -> None:
    at = open_page()
    at.sidebar.selectbox(key="sb_dataset").set_value("utkface").run()
    ok(at)
    assert metric(at, "classes × attributes") == "3 × 4"
    assert len(at.get("image")) == 2 + 3 and len(at.get("plotly_chart")) == 2 + 1  # + the bundled demo's


# --------------------------------------------------------------------------- Sweeps

def test_sweeps_page_runs_a_grid_on_ray_and_plots_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DDAUDIT_EXAMPLE", "0")  # no bundled sweep: this one is the only one
    at = open_page("sweeps")
    ok(at)
    assert any("No finished sweep yet" in i.value for i in at.info)
    assert any("Estimated time: about" in c.value for c in at.caption)
    at.multiselect(key="sw_kvs").set_value(["0.1"])
    at.number_input(key="sw_seeds").set_value(1)
    at.number_input(key="sw_ipc").set_value(2)
    at.button(key="sw_start").click().run()
    ok(at)
    wait_jobs(400)
    at.run()
    ok(at)
    from engine.store import RunStore
    sweeps = RunStore().list(kind="sweep")
    assert len(sweeps) == 1 and sweeps[0]["status"] == "finished"
    assert at.selectbox(key="sw_pick").value == sweeps[0]["id"]
    assert len(at.get("plotly_chart")) == 3
    points = at.selectbox(key="sw_point").options
    assert len(points) == 3 and any(p.startswith("kde s²=0.1") for p in points)  # kde, vanilla, random
    at.button(key="sw_open").click().run()
    assert at.session_state["runs_pick"] and at.session_state["runs_pick"][0].startswith("audit-")


def test_results_page_shows_a_64x64_face_audit(folder_data) -> None:
    """A UTKFace audit from the CLI (tiny presets) on the Results page: metrics, 3 x 4 heatmaps, 64x64 grids."""
    from PIL import Image

    from engine import cli
    from engine.store import RunStore
    rc = cli.main(["audit", "--dataset", "utkface", "--conflict-ratio", "0.2", "--preset", "tiny", "--ipc", "2",
                   "--methods", "vanilla,kde", "--out", str(folder_data.parent / "out")])
    assert rc == 0
    run_id = RunStore().list(kind="audit")[0]["id"]
    grid = Image.open(folder_data.parent / "out" / "vanilla" / "grid.png")
    assert grid.size[0] >= 2 * 64 and grid.size[1] >= 3 * 64  # IPC 2 columns, one row per age bucket
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["results_run"] = run_id
    at.run()
    at.switch_page("pages/results.py")
    at.session_state["results_run"] = run_id
    at.run()
    ok(at)
    assert len(at.get("image")) >= 2 and len(at.get("plotly_chart")) >= 1


# --------------------------------------------------------------------------- the newcomer's first minutes (#30)

def test_dataset_page_offers_the_demo_with_the_bundled_finished_form() -> None:
    from engine import example
    at = open_page()
    ok(at)
    assert any(e.label.startswith("Watch the bias amplify") for e in at.expander)
    assert "Vanilla" in at.markdown[0].value or any("Vanilla" in m.value for m in at.markdown)
    assert at.button(key="demo_start").label == "Run the demo"
    assert any("bundled example" in c.value for c in at.caption)
    rid = example.read_manifest()["roles"]["demo"]
    assert rid in {r["id"] for r in example.install().list()}


def test_demo_button_runs_the_demo_live_and_shows_its_grids() -> None:
    at = open_page()
    at.button(key="demo_start").click().run()
    ok(at)
    wait_jobs()
    at.run()
    ok(at)
    assert any("Finished Watch the bias amplify (demo)" in s.value for s in at.success)
    assert len(at.get("image")) == 3 + 2  # the demo's three grids, then the page's two sample grids
    from ui import jobs
    job = next(j for j in jobs.registry().jobs("distill") if j.config.get("demo"))
    assert set(job.result["synthetic"]) == {"vanilla", "kde", "fairdd"}
    assert job.result["audit"]["trajectory"]["vanilla"], "the demo tracks the aligned share"


def test_distill_form_shows_an_estimate_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDAUDIT_TINY")  # the real quick preset's estimate (nothing is started)
    at = open_page("distill")
    ok(at)
    assert at.multiselect(key="dst_methods").value == ["vanilla", "kde", "fairdd"]
    est = [c.value for c in at.caption if c.value.startswith("Estimated time:")]
    assert len(est) == 1 and "about" in est[0] and "distill" in est[0] and "evaluate" in est[0], est
    first = est[0]
    at.multiselect(key="dst_methods").set_value(["vanilla"]).run()
    after = [c.value for c in at.caption if c.value.startswith("Estimated time:")][0]
    assert after != first  # it follows the choice before Start


def test_results_and_runs_show_the_bundled_example_read_only() -> None:
    from engine import example
    m = example.read_manifest()
    at = open_page("results")
    ok(at)
    labels = at.selectbox(key="res_source").options
    assert any(lab.startswith("bundled example: an audit") for lab in labels), labels
    pick = next(lab for lab in labels if lab.startswith("bundled example: an audit"))
    at.selectbox(key="res_source").set_value(pick).run()
    ok(at)
    assert any("within the evaluation noise" in i.value or "best remedy" in i.value for i in at.info)
    at = open_page("runs")
    at.multiselect(key="runs_pick").set_value([m["roles"]["audit"]]).run()
    ok(at)
    assert any("Bundled example: read-only" in c.value for c in at.caption)


def test_the_dashboard_listens_on_loopback_only(tmp_path) -> None:
    """`make app` and the app's own config bind 127.0.0.1: started without --server.address (the config
    alone), every listening socket of the server is on loopback."""
    import os
    import re
    import subprocess
    import sys

    from bench import serve
    from .procs import descendants, is_loopback, listeners
    from pathlib import Path
    make = (Path(ROOT) / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"streamlit run app\.py --server\.address 127\.0\.0\.1", make)
    port = serve.free_port()
    env = {**os.environ, "DDAUDIT_HOME": str(tmp_path), "DDAUDIT_EXAMPLE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert serve.wait_healthy(proc, f"http://127.0.0.1:{port}", 120), "the app did not start"
        found = listeners({proc.pid: "streamlit", **descendants(proc.pid)})
        assert any(p == port for _, _, p in found), found  # the check sees the server's socket
        assert all(is_loopback(addr) for _, addr, _ in found), found
    finally:
        serve.stop(proc)


def test_the_amplification_table_shows_points_to_one_decimal() -> None:
    """Aligned shares are shares of whole images: the Results page's table read -83.1456 (a float's noise)."""
    from ui.result_sources import amplification_table
    res = {"real_aligned_share": 95.1456, "trajectory": {"vanilla": [{"iteration": 0, "aligned_share": 90.0},
                                                                     {"iteration": 10, "aligned_share": 92.0}]}}
    table = amplification_table(res)
    assert table is not None and list(table.index) == ["vanilla"]
    assert table.to_numpy().tolist() == [[-5.1, -3.1, -3.1]]


def test_wide_synthetic_grids_go_one_under_another(tmp_path) -> None:
    """DM's grids (IPC images a row) sit side by side; IDC's (IPC x 4 a row) would shrink to strips in a fifth of
    the page, so the Results page stacks them (ui.result_sources.grids_side_by_side, sizes read from the files;
    an unreadable file counts as 1 x 1)."""
    from PIL import Image
    from ui.result_sources import grids_side_by_side, image_sizes
    paths = {}
    for name, size in (("dm", (170, 340)), ("idc", (408, 340)), ("broken", None)):
        paths[name] = tmp_path / f"{name}.png"
        if size:
            Image.new("RGB", size).save(paths[name])
        else:
            paths[name].write_bytes(b"not a png")
    sizes = image_sizes(paths)
    assert sizes == {"dm": (170, 340), "idc": (408, 340), "broken": (1, 1)}
    assert grids_side_by_side({f"dm{i}": sizes["dm"] for i in range(5)})  # five DM grids at IPC 5: 850 px
    assert not grids_side_by_side({f"idc{i}": sizes["idc"] for i in range(5)})  # five IDC grids at IPC 3: 2,040 px
    assert grids_side_by_side({"idc": sizes["idc"], "broken": sizes["broken"]})
