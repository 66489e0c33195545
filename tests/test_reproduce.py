"""`reproduce`: the published tables as data, the agreement rule, missing data, and a tiny reproduction on a real
local Ray whose numbers are the stored audits' (a second call computes nothing); the report and the page."""
from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import pytest

from engine import cli, data, distill, reproduce
from engine.figures import reproduce as fig
from engine.reproduce import Published
from engine.report import EVAL_NOISE, reproduction_html
from engine.results import BASELINES
from engine.store import RunStore
from engine.sweep import ray_run

pytestmark = pytest.mark.usefixtures("fresh_home")


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------- the data


def test_every_published_row_parses_and_names_what_the_registries_hold() -> None:
    tables = reproduce.load_tables()
    assert {"kde", "fairdd-table1", "fairdd-appendix", "cobra-mtt"} <= set(tables)
    rows = [r for t in tables.values() for r in t.rows]
    with open(reproduce.TABLES_DIR / "published.csv", encoding="utf-8") as f:
        assert len(rows) == sum(1 for _ in csv.DictReader(f))  # every line became a row
    for r in rows:
        assert data.get_spec(r.dataset).name == r.dataset, r
        assert r.stand_in is None or data.get_spec(r.stand_in).name == r.stand_in
        assert r.method in distill.REGISTRY or r.method in BASELINES, r
        assert r.ipc >= 1 and 0 < r.conflict_ratio < 1 and r.published, r
        for p in r.published.values():
            assert math.isfinite(p.value) and 0 <= p.value <= 100 and p.rounding > 0
    assert {r.algorithm for r in rows} <= set(distill.BACKBONES)  # DREAM's rows included
    # a stand-in is only ever colored-digits for C-MNIST (FG)
    assert {(r.dataset, r.stand_in) for r in rows if r.stand_in} == {("cmnist", "colored-digits")}
    # one row per (paper, table, dataset, backbone, method, IPC, ratio)
    idents = [(r.table, r.source, r.dataset, r.algorithm, r.method, r.ipc, r.conflict_ratio) for r in rows]
    assert len(idents) == len(set(idents))


def test_a_spot_check_of_the_published_numbers_against_docs_references() -> None:
    """Two cells, as docs/REFERENCES.md prints them (the table file is the data, REFERENCES.md its source)."""
    t1 = reproduce.get_table("fairdd-table1")
    row = next(r for r in t1.rows if (r.dataset, r.algorithm, r.method, r.ipc) == ("bg-fmnist", "dm", "fairdd", 10))
    refs = (Path(__file__).parents[1] / "docs" / "REFERENCES.md").read_text(encoding="utf-8")
    line = next(x for x in refs.splitlines() if x.startswith("| C-FMNIST (BG) | 10 | 22.26"))
    assert f"{row.published['accuracy'].value:.2f} / {row.published['deo_m'].value:.2f} / " \
           f"{row.published['deo_a'].value:.2f}" in line
    assert row.conflict_ratio == 0.1  # bias ratio 0.9


def test_a_broken_table_file_is_one_clear_error(tmp_path) -> None:
    shutil.copy(reproduce.TABLES_DIR / "tables.json", tmp_path / "tables.json")
    text = (reproduce.TABLES_DIR / "published.csv").read_text(encoding="utf-8").splitlines()
    text[3] = text[3].replace("25.01", "25,01x")
    (tmp_path / "published.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(reproduce.CorruptArtifact, match="line 4"):
        reproduce.load_tables(tmp_path)


# --------------------------------------------------------------------------------------------- the rule


def test_the_agreement_rule_on_hand_made_numbers() -> None:
    p = Published(50.0, None, 0.005)
    assert reproduce.agrees(p, 52.0, 1.0, 3) is True          # 2 x 1.0 + 0.005
    assert reproduce.agrees(p, 47.996, 1.0, 3) is True
    assert reproduce.agrees(p, 52.01, 1.0, 3) is False
    with_std = Published(50.0, 1.5, 0.005)                      # 2 x sqrt(1.5^2 + 1^2) + 0.005 = 3.61
    assert reproduce.agrees(with_std, 53.6, 1.0, 3) is True and reproduce.agrees(with_std, 53.62, 1.0, 3) is False
    # one training has no spread of its own: the measured one-training noise stands in for it
    assert reproduce.agrees(p, 50 + 2 * EVAL_NOISE, 0.0, 1) is True
    assert reproduce.agrees(p, 50 + 2 * EVAL_NOISE + 0.01, 0.0, 1) is False
    assert reproduce.agrees(Published(100.0, None, 0.05), 100.0, 0.0, 3) is True   # exact, no spread
    assert reproduce.agrees(Published(100.0, None, 0.05), 99.9, 0.0, 3) is False
    assert reproduce.agrees(p, None, None, 3) is None and reproduce.agrees(p, float("nan"), 1.0, 3) is None
    assert reproduce.verdict([True, True]) == "agrees" and reproduce.verdict([True, False, None]) == "partly"
    assert reproduce.verdict([False, None]) == "differs" and reproduce.verdict([None]) is None


def test_compare_puts_published_ours_and_the_difference_side_by_side() -> None:
    row = reproduce.Row("t", "DM", "X", "bg-fmnist", None, "dm", "fairdd", 10, 0.1,
                        {"accuracy": Published(71.10, None, 0.005), "deo_m": Published(33.05, 2.0, 0.005)})
    res = {"eval_seeds": [0, 1, 2], "methods": {"fairdd": {"accuracy": 70.0, "accuracy_std": 0.4, "deo_m": 37.0,
                                                           "deo_m_std": 1.0, "deo_a": 20.0, "deo_a_std": 1.0}}}
    c = reproduce.compare(row, res)
    acc, deo_m, deo_a = (c["metrics"][m] for m in ("accuracy", "deo_m", "deo_a"))
    assert acc["difference"] == pytest.approx(-1.1) and acc["agrees"] is False          # 1.1 > 0.805
    assert deo_m["difference"] == pytest.approx(3.95) and deo_m["agrees"] is True       # 2 x sqrt(2^2 + 1) = 4.47
    assert deo_a["published"] is None and deo_a["agrees"] is None and deo_a["ours"] == 20.0
    assert c["agreement"] == "partly" and c["evaluations"] == 3
    assert reproduce.compare(row, None)["agreement"] is None


# --------------------------------------------------------------------------------------------- filters, plans


def test_filters_and_unknown_names_are_clear_errors(capsys) -> None:
    t1 = reproduce.get_table("fairdd-table1")
    rows = reproduce.select(t1, reproduce.parse_filter("dataset=bg-fmnist,ipc=10,algorithm=dm,backbone=dc"))
    assert {(r.algorithm, r.method) for r in rows} == {("dm", "vanilla"), ("dm", "fairdd"), ("dc", "vanilla"),
                                                       ("dc", "fairdd"), ("dc", "full")}
    assert {r.ipc for r in rows} == {10}
    for argv, message in ((["reproduce", "nope"], "unknown table 'nope'"),
                          (["reproduce", "fairdd-table1", "--rows", "dataset=imagenet"], "no row with dataset=imagenet"),
                          (["reproduce", "fairdd-table1", "--rows", "colour=red"], "bad row filter"),
                          (["reproduce", "fairdd-table1", "--preset", "huge"], "unknown preset"),
                          (["reproduce"], "no table given")):
        rc, _, err = _cli(argv, capsys)
        assert rc == 2 and message in err and "fix:" in err and err.count("error:") == 1, err
    assert RunStore().list() == []
    rc, out, _ = _cli(["reproduce", "--list", "--json"], capsys)
    assert rc == 0 and {t["table"] for t in json.loads(out)} == set(reproduce.tables())


def test_a_missing_dataset_is_listed_with_where_to_put_it(capsys) -> None:
    status = data.dataset_status("cmnist-bg")
    if status["available"]:
        pytest.skip("MNIST is on disk here: the missing-data path cannot be shown")
    t1 = reproduce.get_table("fairdd-table1")
    plan = reproduce.make_plan(t1, reproduce.select(t1, {"dataset": {"cmnist-bg"}, "algorithm": {"dm"}}))
    assert plan.audits == [] and len(plan.missing) == 2
    assert all(m["fix"] == status["how_to"] and m["stand_in"] is None for m in plan.missing)
    result = reproduce.reproduce(plan)
    assert [c["status"] for c in result["rows"]] == ["data not on disk"] * 2
    assert all(c["fix"] == status["how_to"] and c["agreement"] is None for c in result["rows"])
    rc, out, err = _cli(["reproduce", "fairdd-table1", "--rows", "dataset=cmnist-bg,algorithm=dm"], capsys)
    assert rc == 0 and "data not on disk" in out and status["how_to"] in out
    rc, out, _ = _cli(["reproduce", "fairdd-table1", "--rows", "dataset=cmnist-bg", "--dry-run"], capsys)
    assert rc == 0 and "data missing" in out and status["how_to"] in out and "0 audit(s)" in out
    assert RunStore().list() == []  # nothing ran, nothing written


def test_a_stand_in_runs_only_when_asked_and_is_never_the_row() -> None:
    if data.dataset_status("cmnist")["available"]:
        pytest.skip("MNIST is on disk here: no stand-in is needed")
    t1 = reproduce.get_table("fairdd-table1")
    rows = reproduce.select(t1, {"dataset": {"cmnist"}, "algorithm": {"dm"}, "ipc": {"10"}})
    assert reproduce.make_plan(t1, rows, "tiny").audits == []
    plan = reproduce.make_plan(t1, rows, "tiny", stand_ins=True)
    (audit,) = plan.audits
    assert audit.stand_in == "colored-digits" and audit.cell.plan.request.dataset == "colored-digits"
    result = reproduce.collect(plan, {})
    assert [c["status"] for c in result["rows"]] == ["data not on disk"] * 2  # the rows themselves: not measured
    assert len(result["stand_ins"]) == 2 and all(c["agreement"] is None for c in result["stand_ins"])
    res = {"eval_seeds": [0, 1, 2], "methods": {m: {k: 50.0 for k in ("accuracy", "accuracy_std", "deo_m", "deo_m_std",
                                                                       "deo_a", "deo_a_std")}
                                                for m in ("vanilla", "fairdd")}}
    ran = reproduce.collect(plan, {audit.cell.run_id: res})
    for c in ran["stand_ins"]:  # the stand-in's numbers are shown, never compared with the published row's
        assert c["stand_in"] == "colored-digits" and c["agreement"] is None and "stand-in" in c["status"]
        assert all(v["ours"] == 50.0 and v["difference"] is None and v["agrees"] is None for v in c["metrics"].values())
    assert all(c["metrics"]["accuracy"]["ours"] is None for c in ran["rows"])


def test_dry_run_of_a_whole_table_prints_every_audit_and_an_estimate(capsys) -> None:
    t1 = reproduce.get_table("fairdd-table1")
    rc, out, err = _cli(["reproduce", "fairdd-table1", "--preset", "paper", "--dry-run", "--stand-ins", "--json"],
                        capsys)
    assert rc == 0, err
    planned = json.loads(out)
    plan = reproduce.make_plan(t1, list(t1.rows), "paper", stand_ins=True)
    assert [a["run_id"] for a in planned["audits"]] == [a.cell.run_id for a in plan.audits] and plan.audits
    for a in planned["audits"]:
        assert a["stored"] is False and "--preset paper" in a["command"]
        if a["seconds"] is None:  # a stand-in too small to start (DREAM at IPC 50 needs 200 images per class)
            assert a["estimate"].startswith("cannot run") and a["fix"] and "colored-digits" in a["command"]
        else:
            assert a["seconds"] > 0
    assert sum(a["seconds"] is not None for a in planned["audits"]) > len(planned["audits"]) // 2
    # the whole-set evaluation (cached by content) is counted once per split, not once per audit
    splits = [a["command"].split("--methods")[0] for a in planned["audits"]]
    for split in set(splits):
        same = [a for a, s in zip(planned["audits"], splits) if s == split]
        assert sum("evaluate full" in a["estimate"] for a in same) == 1, same
    answered = sum(a["rows"] for a in planned["audits"]) + len(planned["unsupported"])
    answered += sum(1 for m in planned["missing"] if m["stand_in"] is None)
    assert answered == len(t1.rows)  # every row: run, run on its stand-in, or listed with the reason
    assert RunStore().list() == []


# --------------------------------------------------------------------------------------------- end to end


def _tiny_tables(folder: Path) -> dict:
    """A table of ours on colored-digits (offline everywhere), hand-made published numbers."""
    folder.mkdir()
    (folder / "tables.json").write_text(json.dumps({"toy": {"title": "toy", "citation": "nobody", "note": ""}}),
                                        encoding="utf-8")
    src = reproduce.TABLES_DIR / "published.csv"
    head = src.read_text(encoding="utf-8").splitlines()[0]
    lines = [head, "toy,DM,digits,colored-digits,,dm,vanilla,2,0.1,30.0,1.0,100.0,,99.0,,",
             "toy,DM,digits,colored-digits,,dm,fairdd,2,0.1,60.0,,40.0,,20.0,,"]
    (folder / "published.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return reproduce.load_tables(folder)


def test_tiny_reproduction_from_the_page_then_a_second_call_computes_nothing(tmp_path, monkeypatch, request) -> None:
    """The Reproduce page runs the missing audit (a real local Ray, in a background job, the CLI's path); the
    table's numbers are the stored audit's, and `reproduce` again computes nothing and starts no Ray."""
    from streamlit.testing.v1 import AppTest

    from ui import jobs
    table = _tiny_tables(tmp_path / "tables")["toy"]
    plan = reproduce.make_plan(table, list(table.rows), "tiny")
    (audit,) = plan.audits
    assert audit.cell.plan.methods == ("vanilla", "fairdd") and not audit.cell.plan.request.baseline
    monkeypatch.setattr(reproduce.published, "TABLES_DIR", tmp_path / "tables")  # the page reads the toy table
    reproduce.published.tables.cache_clear()
    request.addfinalizer(reproduce.published.tables.cache_clear)  # before monkeypatch restores TABLES_DIR
    monkeypatch.setenv("DDAUDIT_TINY", "1")
    monkeypatch.setenv("DDAUDIT_EXAMPLE", "0")
    at = AppTest.from_file(str(Path(__file__).parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/reproduce.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[0].value == "0 of 2" and "python -m engine reproduce toy --preset tiny" in at.code[0].value
    at.button(key="rp_start").click().run()
    for job in jobs.registry().jobs("reproduce"):
        deadline = time.time() + 300
        while not job.done and time.time() < deadline:
            time.sleep(0.5)
        assert job.status == "finished", (job.status, job.error)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[0].value == "2 of 2" and not [b for b in at.button if b.key == "rp_start"]
    store = RunStore()
    stored = store.open(audit.cell.run_id).results()
    monkeypatch.setattr(ray_run, "_init_ray", lambda *a, **k: pytest.fail("a second call started Ray"))
    again = reproduce.reproduce(plan)
    assert again["computed"] == 0 and again["reused"] == 1
    for c in again["rows"]:
        entry = stored["methods"][c["method"]]
        assert c["status"] == "measured" and c["run_id"] == audit.cell.run_id
        for m in reproduce.METRICS:
            assert c["metrics"][m]["ours"] == entry[m] and c["metrics"][m]["ours_std"] == entry[f"{m}_std"]
        acc = c["metrics"]["accuracy"]
        assert acc["difference"] == pytest.approx(entry["accuracy"] - acc["published"])
    shown = at.dataframe[0].value
    assert list(shown["Acc ours"]) == [fig.cell_text(c["metrics"]["accuracy"], c["evaluations"])[1]
                                       for c in again["rows"]]
    html = reproduction_html(again)
    for c in again["rows"]:
        assert fig.COLOURS[c["agreement"]] in html and f"{c['metrics']['accuracy']['ours']:.1f}" in html
    assert "<script" not in html


def test_the_markdown_and_frame_builders_on_a_hand_made_result() -> None:
    metric = {"published": 71.1, "published_std": None, "ours": 61.44, "ours_std": 0.66, "difference": -9.66,
              "agrees": False}
    blank = {"published": None, "published_std": None, "ours": None, "ours_std": None, "difference": None,
             "agrees": None}
    row = {"source": "DM", "paper_dataset": "C-FMNIST (BG)", "dataset": "bg-fmnist", "algorithm": "dm",
           "method": "fairdd", "ipc": 10, "conflict_ratio": 0.1, "status": "measured", "run_id": "audit-x",
           "agreement": "differs", "metrics": {"accuracy": metric, "deo_m": blank, "deo_a": blank}}
    result = {"rows": [row], "stand_ins": []}
    assert fig.cell_text(metric) == ("71.10", "61.4 ± 0.7", "-9.7")
    assert fig.cell_text(metric, 1)[1] == "61.4 (1 training)"  # one training has no spread, not a spread of 0
    md = fig.markdown(result)
    assert "| C-FMNIST (BG), DM, fairdd, IPC 10 | 71.10 | 61.4 ± 0.7 | -9.7 |" in md and "differs" in md
    assert fig.colours(result) == [fig.COLOURS["differs"]]
    assert list(fig.frame(result)["agreement"]) == ["differs"]


def test_a_run_report_gets_the_published_rows_of_its_own_setting() -> None:
    """report: the published column follows the run's dataset (or the one it stands in for), backbone and IPC,
    and says how the setting differs; the rows a run answers exactly are shown side by side with the rule."""
    label, pub = reproduce.published_for({"dataset": "colored-digits", "algorithm": "dm", "ipc": 10,
                                          "conflict_ratio": 0.05})
    assert "colored-digits stands in for cmnist" in label and "this run is at 5.0%" in label
    assert pub["vanilla"] == "25.01 / 100.0 / 99.96" and pub["kde"].startswith("90.42 / 34.77 / 18.46 (appendix E")
    label, pub = reproduce.published_for({"dataset": "cifar10-s", "algorithm": "idc", "ipc": 10, "conflict_ratio": 0.1})
    assert label == "CIFAR10-S, IDC, IPC 10, 10.0% conflicting" and pub["fairdd"] == "56.40 / 19.90 / 5.28"
    assert reproduce.published_for({"dataset": "bg-fmnist", "algorithm": "idc", "ipc": 10, "conflict_ratio": 0.1}) is None
    entry = {k: 60.0 for k in ("accuracy", "deo_m", "deo_a")} | {f"{k}_std": 1.0 for k in ("accuracy", "deo_m", "deo_a")}
    res = {"dataset": "bg-fmnist", "algorithm": "dm", "ipc": 10, "conflict_ratio": 0.1, "preset": "quick",
           "eval_seeds": [0, 1, 2], "methods": {"fairdd": entry, "kde": entry}}
    answered = reproduce.answered_by(res)
    assert [c["method"] for c in answered["rows"]] == ["fairdd"]  # vanilla was not run, kde is not published here
    assert answered["rows"][0]["metrics"]["accuracy"]["difference"] == pytest.approx(60.0 - 71.10)
    html = reproduction_html(answered)
    assert "60.0 ± 1.0" in html and fig.COLOURS[answered["rows"][0]["agreement"]] in html
    assert reproduce.answered_by({**res, "conflict_ratio": 0.05}) is None  # another setting answers no row


def test_a_backbone_this_version_lacks_is_listed_not_failed(tmp_path, capsys) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "tables.json").write_text(json.dumps({"t": {"title": "t", "citation": "c", "note": ""}}), encoding="utf-8")
    head = (reproduce.TABLES_DIR / "published.csv").read_text(encoding="utf-8").splitlines()[0]
    (folder / "published.csv").write_text(head + "\nt,RDD,digits,colored-digits,,rdd,vanilla,10,0.1,50.0,,,,,,\n",
                                          encoding="utf-8")
    table = reproduce.load_tables(folder)["t"]
    assert "rdd" not in distill.BACKBONES
    plan = reproduce.make_plan(table, list(table.rows), "tiny")
    assert plan.audits == [] and plan.missing == [] and "backbone 'rdd' is not in this version" in \
        plan.unsupported[0]["problem"]
    result = reproduce.reproduce(plan)
    assert result["computed"] == 0 and result["rows"][0]["status"] == "not in this version"
    assert RunStore().list() == []
