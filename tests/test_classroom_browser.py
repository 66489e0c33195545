"""A classroom server in a real browser (Playwright + Debian's Chromium against `python -m engine serve`, tiny
engine): a guest is told they are one and is refused, each time with its message, removing a run, a paper-preset
audit, an upload over the limit and a sixth waiting run; the owner signs in with the secret and may do each."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import serve
from engine.store import RunStore, queue
from tests.test_browser import CHROMIUM, _missing, goto, idle, nav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "a-teachers-secret-41"
LIMITS = 'upload_mb = 1\nmax_waiting = 5\npresets = ["quick"]\n'


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory):
    """A serve-mode server (one compute slot, held by this test while it wants runs to wait), its home, and
    one finished run in its store; yields (url, home)."""
    home = tmp_path_factory.mktemp("classroom")
    limits = home / "limits.toml"
    limits.write_text(LIMITS, encoding="utf-8")
    env = {**os.environ, "DDAUDIT_TINY": "1", "DDAUDIT_HOME": str(home), "DDAUDIT_DEVICE": "cpu",
           "DDAUDIT_EXAMPLE": "0", "DDAUDIT_MAX_RUNS": "1", "DDAUDIT_OWNER_SECRET": SECRET}
    old = os.environ.get("DDAUDIT_HOME")
    os.environ["DDAUDIT_HOME"] = str(home)
    try:
        run, _ = RunStore().start("audit", {"dataset": "colored-digits", "conflict_ratio": 0.05, "methods": ["vanilla"],
                                            "name": "a finished run"})
        run.finish({"methods": {}})
    finally:
        os.environ.pop("DDAUDIT_HOME") if old is None else os.environ.__setitem__("DDAUDIT_HOME", old)
    log = open(home / "serve.log", "w+", encoding="utf-8")
    proc, url = serve.start_serve(env, log, limits)
    try:
        if not serve.wait_healthy(proc, url, 60):
            log.seek(0)
            pytest.fail(f"engine serve did not become healthy: {log.read()[-2000:]}")
        yield url, home
    finally:
        serve.stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (python) is not installed")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=serve.CHROMIUM_ARGS)
        yield b
        b.close()


def session(browser):
    """A browser session of its own (a new context: its own cookies, its own Streamlit session)."""
    pg = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    pg.set_default_timeout(60_000)
    return pg


def sign_in(pg) -> None:
    pg.get_by_text("Owner sign-in").first.click()
    pg.get_by_label("Owner's secret").fill(SECRET)
    pg.get_by_role("button", name="Sign in").click()
    pg.get_by_text("Signed in as the owner").first.wait_for()
    idle(pg)


def refusal(pg, text: str) -> str:
    """The refusal shown (a warning holding `text`), its whole text."""
    box = pg.locator("[data-testid='stAlertContentWarning']").filter(has_text=text).first
    box.wait_for()
    return box.inner_text()


def no_paths_or_tracebacks(pg, home: Path) -> None:
    body = pg.locator("body").inner_text()
    assert str(home) not in body and "Traceback" not in body
    assert pg.locator("[data-testid='stException']").count() == 0


def set_number(pg, label: str, value: int) -> None:
    box = pg.locator("[data-testid='stNumberInput']").filter(has_text=label).locator("input")
    box.fill(str(value))
    box.press("Enter")
    idle(pg)


def pick(pg, label: str, option: str) -> None:
    pg.get_by_role("combobox", name=label, exact=True).click()
    pg.get_by_role("option", name=option, exact=True).click()
    idle(pg)


def test_guest_banner_and_a_refused_removal_then_the_owner_removes(browser, classroom) -> None:
    url, home = classroom
    guest, owner = session(browser), session(browser)
    try:
        goto(guest, url, "runs", "Runs")
        assert "You are a guest of this class server" in guest.get_by_text("You are a guest").first.inner_text()
        assert any(c["name"] == "_streamlit_xsrf" for c in guest.context.cookies())  # XSRF protection is on
        guest.get_by_text("Owner sign-in").first.wait_for()
        guest.get_by_role("button", name="Remove this run").click()
        text = refusal(guest, "cannot remove runs")
        assert "You may compare runs" in text and "the owner removes runs" in text
        no_paths_or_tracebacks(guest, home)

        goto(owner, url, "runs", "Runs")
        sign_in(owner)
        owner.get_by_text("Guests' runs: 0").first.wait_for()  # the owner sees the store's and guests' sizes
        owner.get_by_role("button", name="Remove this run").click()
        owner.get_by_role("button", name="Yes, remove").click()
        owner.get_by_text("No runs yet").first.wait_for()
    finally:
        guest.context.close()
        owner.context.close()


def test_guest_refused_a_paper_audit_and_a_sixth_waiting_run_the_owner_is_not(browser, classroom) -> None:
    url, home = classroom
    os.environ["DDAUDIT_HOME"], old = str(home), os.environ.get("DDAUDIT_HOME")
    slot = queue._take_slot(queue.queue_dir(), 1)  # the machine's one slot is busy: every run started waits
    assert slot is not None
    guest, owner = session(browser), session(browser)
    try:
        goto(guest, url, "distill", "Distill")
        pick(guest, "Preset", "paper")
        guest.get_by_role("button", name="Start distillation").click()
        text = refusal(guest, "paper preset is for the server's owner")
        assert "You may use the quick preset" in text
        pick(guest, "Preset", "quick")
        for ipc in range(1, 6):  # five different runs, each waiting in the queue, each from a reloaded page
            goto(guest, url, "distill", "Distill")  # (a new Streamlit session: the same browser session)
            set_number(guest, "Images per class", ipc)
            guest.get_by_role("button", name="Start distillation").click()
            guest.get_by_text("position").first.wait_for()
            idle(guest)
        assert queue.waiting() == 5
        goto(guest, url, "distill", "Distill")
        set_number(guest, "Images per class", 6)
        guest.get_by_role("button", name="Start distillation").click()
        text = refusal(guest, "You already have 5 runs waiting or computing")
        assert "at most 5 per browser session" in text and "cancel one" in text
        assert queue.waiting() == 5
        no_paths_or_tracebacks(guest, home)

        goto(owner, url, "runs", "Runs")
        sign_in(owner)
        goto(owner, url, "distill", "Distill")  # still the owner on another page, loaded afresh
        owner.get_by_text("Signed in as the owner").first.wait_for()
        pick(owner, "Preset", "paper")  # tiny mode runs every preset tiny: the owner is not refused
        set_number(owner, "Images per class", 7)
        owner.get_by_role("button", name="Start distillation").click()
        # taken, and placed by fair turns: second in line, after the guest's first (the owner's session has
        # had no turn yet)
        owner.get_by_text("position 2 in the queue").first.wait_for()
        assert owner.locator("[data-testid='stAlertContentWarning']").count() == 0
        assert queue.waiting() == 6
    finally:
        slot.close()
        guest.context.close()
        owner.context.close()
        os.environ.pop("DDAUDIT_HOME") if old is None else os.environ.__setitem__("DDAUDIT_HOME", old)


def test_guest_refused_an_upload_over_the_limit_the_owner_is_not(browser, classroom, tmp_path) -> None:
    import torch

    from engine import data
    url, home = classroom
    train = data.load_split(data.DEFAULT_DATASET, 0.05, "train", 0)
    labels = torch.arange(train.num_classes).repeat_interleave(14)  # 140 float32 images: about 1.6 MB
    images = torch.randn(len(labels), *train.images.shape[1:], generator=torch.Generator().manual_seed(0))
    file = tmp_path / "res_DC_big.pt"
    torch.save({"data": [[images, labels]]}, file)
    assert file.stat().st_size > 2 ** 20
    guest, owner = session(browser), session(browser)
    try:
        for pg in (guest, owner):
            goto(pg, url, "results", "Results")
        sign_in(owner)
        for pg in (guest, owner):
            pg.get_by_text("Import a set made elsewhere").first.click()
            pg.locator("[data-testid='stFileUploader'] input[type=file]").set_input_files(str(file))
        text = refusal(guest, "guests may upload files of at most 1 MB")
        assert "Upload a smaller set" in text and "ask the owner to import it" in text
        no_paths_or_tracebacks(guest, home)
        owner.get_by_text("Read as").first.wait_for(timeout=120_000)  # the owner's upload is read and checked
        assert owner.locator("[data-testid='stAlertContentWarning']").count() == 0
    finally:
        guest.context.close()
        owner.context.close()
