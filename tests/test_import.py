"""Sets made elsewhere: each public format written by the public code's own save call, imported and audited
with the native protocol (the same numbers as the native audit of the same set), and every bad input
refused with one `error: ... fix:` line, exit 2 and nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine import cache, cli, evaluate, pipeline, results, stored
from engine.images import to_float, to_uint8
from engine.errors import InvalidArgument
from engine.store import RunStore

SPLIT = dict(dataset="colored-digits", conflict_ratio=0.05, seed=3)
BASE = ["audit-set", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--seed", "3", "--preset", "tiny",
        "--eval-seeds", "2"]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A tiny native audit of vanilla (IPC 2, two evaluation trainings) and its stored set."""
    res, run = stored.audit_stored(pipeline.Request(**SPLIT, methods="vanilla", ipc=2, preset="tiny", eval_seeds=2))
    return res, run, run.sets()["vanilla"]


def _same_numbers(a: dict, b: dict) -> None:
    for k in (*results.METRICS, *(f"{m}_std" for m in results.METRICS), results.SHARE, "group_accuracy"):
        assert a[k] == b[k], (k, a[k], b[k])


def test_every_public_format_round_trips_to_the_native_numbers(native, tmp_path):
    res, run, s = native
    cache_dir = cache.cache_dir("evaluations")
    shutil.rmtree(cache_dir, ignore_errors=True)  # the imported sets are trained again, not read back
    images, label_syn = s.images.clone(), s.labels.clone()
    # DatasetCondensation, main_DM.py lines 203-204 (VICO-UoE/DatasetCondensation @ 53f63a6):
    #   data_save.append([copy.deepcopy(image_syn.detach().cpu()), copy.deepcopy(label_syn.detach().cpu())])
    #   torch.save({'data': data_save, 'accs_all_exps': accs_all_exps, }, os.path.join(args.save_path, ...))
    dc = tmp_path / "res_DM_colored-digits_ConvNet_2ipc.pt"
    torch.save({"data": [[images.detach().cpu(), label_syn.detach().cpu()]], "accs_all_exps": {"ConvNet": [0.5]}}, dc)
    # FairDD's fork writes the same dict, one pair per experiment (zqhang/FairDD @ 5e6af8e, main_DM.py line 196);
    # two experiments here: the default takes the last
    fairdd = tmp_path / "res_DM_fairdd.pt"
    torch.save({"data": [[torch.zeros_like(images), label_syn], [images, label_syn]], "accs_all_exps": {}}, fairdd)
    # COBRA, train_dm.py lines 274-282 (mhmoslemi/COBRA @ aa567ff; train_dc.py and train_idc.py the same):
    #   data_save.append([copy.deepcopy(image_syn.detach().cpu()), copy.deepcopy(label_syn.detach().cpu()), ])
    #   torch.save({"data": data_save, "accs_all_exps": accs_all_exps}, ckpt)
    cobra = tmp_path / "res_DM_colored-digits_ConvNet_2ipc_cobra.pt"
    torch.save({"data": [[images.detach().cpu(), label_syn.detach().cpu()]], "accs_all_exps": {"ConvNet": []}}, cobra)
    # MTT, distill.py lines 242-243 (GeorgeCazenavette/mtt-distillation @ 50dccea):
    #   torch.save(image_save.cpu(), os.path.join(save_dir, "images_best.pt".format(it)))
    #   torch.save(label_syn.cpu(), os.path.join(save_dir, "labels_best.pt".format(it)))
    (tmp_path / "mtt").mkdir()
    torch.save(images.cpu(), tmp_path / "mtt" / "images_best.pt")
    torch.save(label_syn.cpu(), tmp_path / "mtt" / "labels_best.pt")
    req = pipeline.SetRequest(**SPLIT, sets=(f"{run.dir / 'vanilla'}=own", f"{dc}=dm", f"{fairdd}=fairdd-dm",
                                             f"{cobra}=cobra-dm", f"{tmp_path / 'mtt' / 'images_best.pt'}=mtt"),
                              preset="tiny", eval_seeds=2)
    got, imported = stored.audit_sets_stored(req)
    assert imported.kind == "import" and got["eval_seeds"] == res["eval_seeds"]
    assert list(got["methods"]) == ["own", "dm", "fairdd-dm", "cobra-dm", "mtt", "random"]
    assert not got["methods"]["own"]["eval_cached"]  # trained again, not read from the cache
    for name in ("own", "dm", "fairdd-dm", "cobra-dm", "mtt"):
        _same_numbers(got["methods"][name], res["methods"]["vanilla"])
    # the evaluation cache is keyed by the bytes of the set (and its labels and standardisation): the other
    # formats were read back as exactly the bytes the first one trained on
    assert all(got["methods"][n]["eval_cached"] for n in ("dm", "fairdd-dm", "cobra-dm", "mtt"))
    _same_numbers(got["methods"]["random"], res["methods"]["random"])
    assert got["imported"]["dm"]["format"] == "datasetcondensation" and got["imported"]["fairdd-dm"]["experiment"] == 1
    assert got["imported"]["mtt"]["format"] == "mtt" and got["imported"]["own"]["format"] == "ddaudit"
    # a stored run like a native audit: the Results page and the report read it through Run
    assert imported.methods() == ["own", "dm", "fairdd-dm", "cobra-dm", "mtt"] and set(imported.grids()) == set(imported.methods())
    again, rerun = stored.audit_sets_stored(req)  # keyed by content: the identical request is reused
    assert rerun.reused and rerun.id == imported.id and again == got


def test_an_image_folder_is_the_set_in_8_bits(native, tmp_path):
    """PNG holds 8 bits a pixel: the imported folder scores exactly what the native set rounded to 8 bits does."""
    res, run, s = native
    u8 = to_uint8(s.unit())
    for i, (img, c) in enumerate(zip(u8, s.labels.tolist())):
        from PIL import Image
        folder = tmp_path / "set" / f"{c:02d}_digit"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    got, _ = stored.audit_sets_stored(pipeline.SetRequest(**SPLIT, sets=(f"{tmp_path / 'set'}=png",), preset="tiny",
                                                           eval_seeds=2, baseline=False))
    p = pipeline.plan_sets(pipeline.SetRequest(**SPLIT, sets=("x",), preset="tiny", eval_seeds=2))
    from engine.data import load_split
    test = load_split("colored-digits", 0.05, "test", 3)
    order = torch.argsort(s.labels, stable=True)
    ref = evaluate.evaluate_synthetic(to_float(u8[order], s.mean, s.std), s.labels[order], test, p.eval_cfg, p.seeds,
                                      mean=s.mean, std=s.std, device="cpu", flip=False)
    assert got["methods"]["png"]["accuracy"] == ref["accuracy"]
    assert got["methods"]["png"]["group_accuracy"] == ref["group_accuracy"]


def test_the_cli_audits_a_set_and_copies_the_run(native, tmp_path, capsys):
    _, run, s = native
    torch.save({"images": s.images, "labels": s.labels}, tmp_path / "set.pt")
    rc, out, err = _cli(BASE + ["--set", f"{tmp_path / 'set.pt'}=mine", "--no-baseline", "--out", str(tmp_path / "o"),
                                "--json"], capsys)
    assert rc == 0, err
    printed = json.loads(out)
    assert printed == json.loads((tmp_path / "o" / "results.json").read_text(encoding="utf-8"))
    assert set(printed["methods"]) == {"mine"} and (tmp_path / "o" / "mine" / "grid.png").is_file()
    assert printed["evaluation"]["dsa"] is True and printed["evaluation"]["trainings"] == 2
    rc, out, err = _cli(BASE + ["--set", f"{tmp_path / 'set.pt'}=mine", "--no-baseline", "--eval-dsa", "off",
                                "--out", str(tmp_path / "o2"), "--json"], capsys)
    assert rc == 0 and json.loads(out)["evaluation"]["dsa"] is False  # the protocol is settable, and another run


# --------------------------------------------------------------------------- bad input

class _Payload:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad(tmp_path: Path, what: str, monkeypatch) -> tuple[list[str], str]:
    """A bad set and the words its error must contain."""
    c = torch.arange(10).repeat_interleave(2)
    ok = torch.rand(20, 3, 32, 32)
    path = tmp_path / f"{what}.pt"
    if what == "pickle":
        torch.save({"images": ok, "labels": c, "extra": _Payload(tmp_path / "pwned")}, path)
        return [str(path)], "pickled"
    if what == "size":
        torch.save({"images": torch.rand(20, 3, 16, 16), "labels": c}, path)
        return [str(path)], "(20, 3, 16, 16)"
    if what == "channels":
        torch.save({"images": torch.rand(20, 1, 32, 32), "labels": c}, path)
        return [str(path)], "(20, 1, 32, 32)"
    if what == "labels":
        torch.save({"images": ok, "labels": c + 1}, path)
        return [str(path)], "0..9"
    if what == "nan":
        bad = ok.clone()
        bad[3, 1, 4, 4] = float("nan")
        torch.save({"images": bad, "labels": c}, path)
        return [str(path)], "NaN"
    if what == "empty":
        torch.save({"images": torch.zeros(0, 3, 32, 32), "labels": torch.zeros(0, dtype=torch.long)}, path)
        return [str(path)], "empty"
    if what == "soft":
        torch.save({"images": ok, "labels": torch.softmax(torch.rand(20, 10), 1)}, path)
        return [str(path)], "soft labels"
    if what == "zca":
        torch.save({"images": ok, "labels": c}, path)
        return [str(path), "--normalization", "zca"], "ZCA"
    if what == "too-big":
        from engine import set_files
        torch.save({"images": ok, "labels": c}, path)
        monkeypatch.setattr(set_files, "MAX_FILE_MB", 0.01)
        return [str(path)], "import limit"
    if what == "native-name":
        torch.save({"images": ok, "labels": c}, path)
        return [f"{path}=vanilla"], "native method"
    if what == "bomb":
        from PIL import Image
        folder = tmp_path / "bomb" / "0"
        folder.mkdir(parents=True)
        Image.new("1", (10_000, 10_000)).save(folder / "x.png")  # 100 M pixels: PIL's bomb warning
        return [str(tmp_path / "bomb")], "decompression bomb"
    if what == "folder-names":
        from PIL import Image
        folder = tmp_path / "named" / "zebra"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(folder / "x.png")
        return [str(tmp_path / "named")], "match no class"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["pickle", "size", "channels", "labels", "nan", "empty", "soft", "zca", "too-big",
                                  "native-name", "bomb", "folder-names"])
def test_bad_sets_are_refused_with_one_clear_error(what, tmp_path, capsys, monkeypatch):
    args, words = _bad(tmp_path, what, monkeypatch)
    before = len(RunStore().list())
    rc, out, err = _cli(BASE + ["--set", *args, "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and err.startswith("error:") and "fix:" in err and words in err, err
    assert "Traceback" not in err and out == ""
    assert len(RunStore().list()) == before and not (tmp_path / "out").exists()  # nothing written
    assert not (tmp_path / "pwned").exists()  # the pickle payload never ran


def test_a_class_without_images_is_audited_with_a_warning(tmp_path, capsys):
    c = torch.tensor([0, 0, 1, 1])  # classes 2..9 have no image
    torch.save({"images": torch.rand(4, 3, 32, 32), "labels": c}, tmp_path / "part.pt")
    rc, out, err = _cli(BASE + ["--set", str(tmp_path / "part.pt"), "--normalization", "unit", "--no-baseline",
                                "--out", str(tmp_path / "o"), "--json"], capsys)
    assert rc == 0, err
    assert "warning: 8 class(es) have no image" in err and json.loads(out)["warnings"]


def test_an_imported_run_is_listed_reported_and_compared_like_an_audit(native, tmp_path, capsys):
    """Results, Runs compare and `report` read an audit-set run as they read a native audit of the split."""
    _, native_run, s = native
    torch.save({"images": s.images, "labels": s.labels}, tmp_path / "set.pt")
    rc, _, err = _cli(BASE + ["--set", f"{tmp_path / 'set.pt'}=mine", "--out", str(tmp_path / "o"), "--json"], capsys)
    assert rc == 0, err
    run_id = err.split("run ", 1)[1].split(" ", 1)[0]
    rc, out, err = _cli(["runs", "list", "--kind", "import", "--json"], capsys)
    assert rc == 0 and run_id in out
    rc, out, err = _cli(["runs", "compare", run_id, native_run.id, "--json"], capsys)
    assert rc == 0 and "methods.random.accuracy" in json.loads(out)["metrics"]
    rc, out, err = _cli(["report", run_id, native_run.id, "--out", str(tmp_path / "r.html"), "--json"], capsys)
    assert rc == 0, err
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "python -m engine audit-set" in html and "mine" in html and "python -m engine audit " in html


def test_the_dashboards_import_keeps_checks_and_audits_an_upload(native, tmp_path, monkeypatch):
    """The Results page's import (ui.import_jobs): upload kept by content, refused early, audited in the background."""
    import io
    monkeypatch.setenv("DDAUDIT_TINY", "1")  # the dashboard's tiny mode: the engine's tiny presets
    import time

    from ui import import_jobs, jobs, state
    _, _, s = native
    buf = io.BytesIO()
    torch.save({"images": s.images, "labels": s.labels}, buf)
    path = import_jobs.save([import_jobs.Upload("res_DM.pt", buf.getvalue())])
    assert path.read_bytes() == buf.getvalue() and import_jobs.save([import_jobs.Upload("res_DM.pt", buf.getvalue())]) == path
    with pytest.raises(InvalidArgument, match="not a .pt"):
        import_jobs.save([import_jobs.Upload("set.pkl", b"x")])
    from engine.data import load_split
    found = import_jobs.preview(path, load_split("colored-digits", 0.05, "train", 3), "split", "up")
    assert found.source["format"] == "tensors" and found.source["images"] == len(s.labels)
    job = import_jobs.start(state.Settings("colored-digits", 0.05, 3), path, "up", "split", 2)
    end = time.time() + 300
    while not job.done and time.time() < end:
        time.sleep(0.1)
    assert job.status == "finished", job.error
    assert set(job.result["audit"]["methods"]) == {"up"} and jobs.registry().by_id(job.id) is job
    jobs.registry().forget(job.key)


def test_each_normalization_lands_in_the_splits_space(native, tmp_path):
    """split (as given), unit ([0, 1] pixels) and mean=...,std=... (another standardisation) all read back
    as the same standardised images."""
    from engine.data import load_split
    from engine.set_files import read_set
    _, _, s = native
    train = load_split("colored-digits", 0.05, "train", 3)
    unit = s.images * s.std.view(1, -1, 1, 1) + s.mean.view(1, -1, 1, 1)
    m, sd = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    other = (unit - m.view(1, -1, 1, 1)) / sd.view(1, -1, 1, 1)
    for name, x, norm in (("split", s.images, "split"), ("unit", unit, "unit"),
                          ("explicit", other, "mean=0.5,0.4,0.3,std=0.2,0.25,0.3")):
        torch.save({"images": x, "labels": s.labels}, tmp_path / f"{name}.pt")
        got = read_set(str(tmp_path / f"{name}.pt"), train, norm).set
        assert torch.allclose(got.images, s.images, atol=1e-5), name
        assert torch.equal(got.mean, s.mean) and torch.equal(got.std, s.std)
    with pytest.raises(InvalidArgument, match="normalization"):
        read_set(str(tmp_path / "split.pt"), train, "mean=1,std=0")
