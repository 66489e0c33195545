"""The classroom server's limits file and request refusals (engine/classroom.py) and `engine serve`'s checks."""
from __future__ import annotations

import json

import pytest

from engine import classroom
from engine.errors import InvalidArgument
from tests.test_runs_cli import run_cli


def test_defaults_and_both_file_formats(tmp_path) -> None:
    d = classroom.read_limits(None)
    assert d.presets == ("quick",) and d.max_waiting == 5 and not d.sweeps and d.guest_disk_bytes == 2 * 2 ** 30
    toml = tmp_path / "limits.toml"
    toml.write_text('presets = ["quick", "paper"]\nmax_ipc = 3\ndatasets = ["colored-digits", "bg-fmnist"]\n'
                    'sweeps = true\nupload_mb = 2\nmax_waiting = 2\nguest_disk = "500M"\n', encoding="utf-8")
    t = classroom.read_limits(toml)
    assert t.presets == ("quick", "paper") and t.max_ipc == 3 and t.sweeps and t.upload_mb == 2
    assert t.guest_disk_bytes == 500 * 2 ** 20 and t.methods == classroom.Limits().methods  # unset: default
    js = tmp_path / "limits.json"
    js.write_text(json.dumps({"backbones": ["dm"], "uploads": False}), encoding="utf-8")
    j = classroom.read_limits(js)
    assert j.backbones == ("dm",) and not j.uploads and j.max_ipc == 10


@pytest.mark.parametrize("raw,problem", [
    ({"max_ipc": "ten"}, "max_ipc must be a whole number >= 1, not 'ten'"),
    ({"max_waiting": 0}, "max_waiting must be a whole number >= 1"),
    ({"presets": ["fast"]}, "presets names 'fast', which is not one of quick, paper"),
    ({"methods": ["vanilla", "magic"]}, "methods names 'magic'"),
    ({"backbones": ["gm"]}, "backbones names 'gm'"),
    ({"datasets": ["imagenet"]}, "datasets names 'imagenet'"),
    ({"sweeps": "yes"}, "sweeps must be true or false"),
    ({"guest_disk": "lots"}, "guest_disk: cannot read the size 'lots'"),
    ({"max_ipcs": 3}, "unknown setting 'max_ipcs'"),
])
def test_bad_limits_are_one_clear_error(raw, problem) -> None:
    with pytest.raises(InvalidArgument) as err:
        classroom.parse_limits(raw, "limits.toml")
    assert problem in err.value.problem and "limits.toml" in err.value.fix


def test_unreadable_or_missing_file(tmp_path) -> None:
    bad = tmp_path / "l.toml"
    bad.write_text("max_ipc = = 3", encoding="utf-8")
    with pytest.raises(InvalidArgument, match="cannot be read"):
        classroom.read_limits(bad)
    with pytest.raises(InvalidArgument, match="no limits file"):
        classroom.read_limits(tmp_path / "nope.toml")


def test_request_refusals_say_why_and_what_instead() -> None:
    lim = classroom.Limits()
    ok = dict(dataset="colored-digits", preset="quick", algorithm="dm", methods=["vanilla", "kde"], ipc=5)
    assert classroom.request_refusal(lim, **ok) is None
    cases = [({"preset": "paper"}, "The paper preset is for the server's owner", "use the quick preset"),
             ({"ipc": 50}, "at most 10 images per class", "lower the IPC"),
             ({"dataset": "bg-fmnist"}, "may not run on bg-fmnist", "pick colored-digits"),
             ({"algorithm": "mtt"}, "may not start mtt runs", "choose dm, dc"),
             ({"iterations": 5000}, "at most 1000 iterations", "lower it"),
             ({"eval_seeds": 9}, "at most 3 evaluation trainings", "lower it")]
    for change, why, instead in cases:
        text = classroom.request_refusal(lim, **{**ok, **change})
        assert why in text and instead in text, text
    narrow = classroom.parse_limits({"methods": ["vanilla"]})
    assert "may not start kde" in classroom.request_refusal(narrow, **ok)


def test_serve_checks_its_arguments(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(classroom.SECRET_ENV, raising=False)
    code, out, _ = run_cli("serve", "--address", "127.0.0.1", "--port", "8600", "--check")
    assert code == 0 and "owner secret for this server: " in out and "max_waiting=5" in out
    monkeypatch.setenv(classroom.SECRET_ENV, "short")
    code, _, err = run_cli("serve", "--address", "127.0.0.1", "--check")
    assert code == 2 and "shorter than 8 characters" in err
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret\n", encoding="utf-8")
    code, out, _ = run_cli("serve", "--address", "127.0.0.1", "--secret-file", str(secret), "--check")
    assert code == 0 and f"owner secret from the file {secret}" in out and "a-long-enough" not in out
    bad = tmp_path / "limits.toml"
    bad.write_text("max_ipc = 0\n", encoding="utf-8")
    code, _, err = run_cli("serve", "--address", "127.0.0.1", "--limits", str(bad), "--check")
    assert code == 2 and "max_ipc must be a whole number >= 1" in err and "fix:" in err
    code, _, err = run_cli("serve", "--address", "127.0.0.1", "--port", "0", "--check")
    assert code == 2 and "is not a port" in err


def test_serve_mode_streamlit_options() -> None:
    args = classroom.streamlit_args("0.0.0.0", 8600, classroom.Limits(upload_mb=3, owner_upload_mb=50))
    opts = dict(zip(args[2::2], args[3::2]))
    assert opts["--server.enableXsrfProtection"] == "true" and opts["--server.maxUploadSize"] == "50"
    assert opts["--server.address"] == "0.0.0.0" and opts["--client.showErrorDetails"] == "none"


def test_runs_are_named_in_words_and_a_sweeps_row_has_its_settings() -> None:
    """The Runs page's columns and labels (ui/result_sources): a sweep's ratio, methods and IPC come from its
    grid (they read "None" before), and every run is named by what it is, not only its hashed id."""
    from ui.result_sources import run_label, run_settings
    sweep_cfg = {"dataset": "colored-digits", "grid": {"dataset": "colored-digits", "ratios": [0.01, 0.05],
                                                       "methods": ["vanilla", "kde"], "ipcs": [5], "seeds": [0, 1],
                                                       "algorithm": "dm"}}
    assert run_settings(sweep_cfg) == ("1.0%, 5.0%", "vanilla, kde", "5")
    audit_cfg = {"dataset": "colored-digits", "conflict_ratio": 0.05, "seed": 0, "methods": ["vanilla", "fairdd"],
                 "distill": {"algorithm": "dc", "ipc": 10}}
    assert run_settings(audit_cfg) == ("5.0%", "vanilla, fairdd", "10")
    label = run_label({"id": "audit-1234abcd", "kind": "audit", "config": audit_cfg,
                       "created": "2026-12-07T12:30:05+00:00"})
    assert label == "audit · vanilla+fairdd · DC · IPC 10 · colored-digits @ 5.0% · seed 0 · 2026-12-07 12:30"
    sweep_label = run_label({"id": "sweep-1", "kind": "sweep", "config": sweep_cfg, "created": ""})
    assert sweep_label.startswith("sweep · vanilla+kde · DM · IPC 5 · colored-digits @ 1.0%, 5.0% · 2 seed(s)")



def test_the_bundled_examples_runs_are_told_apart_in_words(fresh_home) -> None:
    """The bundled example's sweep is named by its grid (it read "a sweep cell, , IPC ?"), its cells by the ratio,
    kernel variance and seed that tell them apart, the audit and the demo as before."""
    from engine import example
    from ui.result_sources import example_label
    store = example.install()
    assert store is not None
    labels = {r["id"]: example_label(r.get("config") or {}) for r in store.list()}
    roles = example.roles()
    assert labels[roles["sweep"]] == "the sweep, vanilla+kde, IPC 5, ratios 2.0%, 5.0%, 2 seed(s)"
    assert labels[roles["audit"]] == "an audit, vanilla+kde+fairdd+cobra+balanced, IPC 5"
    assert labels[roles["demo"]] == "the noise-start demo, vanilla+kde+fairdd, IPC 5"
    cells = [v for k, v in labels.items() if k not in roles.values()]
    assert cells and all(v.startswith("a sweep cell, ") and "seed " in v for v in cells)
    assert len(set(cells)) == len(cells)  # no two cells read alike

def test_a_browser_is_known_by_its_xsrf_token_across_reloads() -> None:
    """Tornado re-masks the browser's one XSRF token on every page load (three loads of one Chromium context,
    recorded): unmasked, they are one browser session; another browser's cookie is another."""
    from ui.roles import xsrf_token
    loads = ["2|8e874655|d71e4ff92cb1de55f8aa46ac524f1cda|1796647214",
             "2|3ec5b9e1|675cb04d9cf321e148e8b918e20de36e|1796647214",
             "2|ae621399|f7fb1a350c548b99d84f136072aa4916|1796647214"]
    assert len({xsrf_token(c) for c in loads}) == 1 and len(set(loads)) == 3
    assert xsrf_token("2|00000000|d71e4ff92cb1de55f8aa46ac524f1cda|1796647214") != xsrf_token(loads[0])
    assert xsrf_token("opaque") == b"opaque"


def test_a_guest_sees_no_server_path(monkeypatch) -> None:
    """What a guest reads has the server's file paths replaced by words; a URL stays; the owner sees them."""
    from ui import roles
    text = "the disk is full (writing /tmp/h/runs/audit-1/checkpoint.safetensors); see https://example.org/a/b"
    monkeypatch.setattr(roles, "is_owner", lambda: False)
    assert roles.scrub(text) == ("the disk is full (writing (a file on the server)); see https://example.org/a/b")
    monkeypatch.setattr(roles, "is_owner", lambda: True)
    assert roles.scrub(text) == text


def test_a_guest_computes_maps_of_the_allowed_datasets_only(monkeypatch) -> None:
    """An Embeddings map trains a network outside the run queue: a guest may start one for the limits' datasets."""
    from ui import roles
    monkeypatch.setattr(roles, "is_owner", lambda: False)
    monkeypatch.setattr(roles, "limits", lambda: classroom.Limits())
    assert roles.may_map("colored-digits") is None
    text = roles.may_map("bg-fmnist")
    assert "Guests may compute the embedding map of colored-digits" in text and "Pick one of those" in text
    monkeypatch.setattr(roles, "is_owner", lambda: True)
    assert roles.may_map("bg-fmnist") is None


def test_a_dashboard_runs_end_marks_it_and_keeps_the_guests_under_their_cap(fresh_home) -> None:
    """settle_run, as the dashboard's jobs call it when a run ends: a guest's new run is marked a guest's and the
    guests' older runs are collected to the cap (the new one spared); a run the guest merely reused is not
    marked; a run the owner starts is the owner's and never collected."""
    from engine.store import RunStore, gc
    store = RunStore()

    def run(name: str) -> str:
        r, _ = store.start("audit", {"dataset": "x", "name": name})
        r.path("payload.bin").write_bytes(b"\0" * 300_000)
        r.finish({"name": name})
        return r.id
    owners = run("owner's")
    assert classroom.settle_run(owners, guest=False, existed=False, cap_bytes=0) == []
    first = run("guest 1")
    assert classroom.settle_run(first, guest=True, existed=False, cap_bytes=400_000) == []
    assert gc.is_guest(store, first)
    second = run("guest 2")
    assert classroom.settle_run(second, guest=True, existed=False, cap_bytes=400_000) == [first]
    assert classroom.settle_run(owners, guest=True, existed=True, cap_bytes=0) == [second]  # reused: not marked
    assert not gc.is_guest(store, owners)
    assert {r["id"] for r in store.list()} == {owners}
