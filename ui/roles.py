"""Who may do what on this server. `make app` (one user on loopback) gives every right to everyone; a server
started by `python -m engine serve` (engine/classroom.py) has an owner, who signs in once per browser session
with the server's secret (or through Streamlit's login, when configured, as one of the limits' owner_emails),
and guests. One function per right; each returns None when allowed, else the refusal in words: why, and what
the guest may do instead. Pages ask these and draw the answer; nothing here computes."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
import uuid

import streamlit as st

from engine import classroom

SESSION_KEY = "ddaudit_session"
XSRF_COOKIE = "_streamlit_xsrf"  # set by Streamlit for each browser (XSRF protection is on): lives across reloads
_PATH = re.compile(r"(?<![\w:/.~])(?:/[\w.@+~-]+){2,}/?")  # an absolute path, not a URL's


def serving() -> bool:
    """Whether this is a classroom server (roles apply); False under `make app`."""
    return classroom.serving()


def limits() -> classroom.Limits:
    """This server's limits on guests (read once per limits file)."""
    return _limits(os.environ.get(classroom.LIMITS_ENV, ""))


@st.cache_resource(show_spinner=False)
def _limits(path: str) -> classroom.Limits:
    return classroom.read_limits(path or None)


def session_id() -> str:
    """This browser's id: a hash of its XSRF cookie, so that a reload or a typed URL (each a new Streamlit
    session) stays the same browser session for the queue's turns, the waiting limit and the owner's sign-in;
    without the cookie, this Streamlit session's own id."""
    cookie = None
    try:
        cookie = st.context.cookies.get(XSRF_COOKIE)
    except Exception:  # no request context (a bare script run)
        pass
    if isinstance(cookie, str) and cookie:
        return "browser-" + hashlib.sha256(xsrf_token(cookie)).hexdigest()[:20]
    return st.session_state.setdefault(SESSION_KEY, "session-" + uuid.uuid4().hex)


def xsrf_token(cookie: str) -> bytes:
    """The browser's XSRF token from its cookie: Tornado's version 2 ("2|mask|masked token|time") re-masks the
    same token on every page load, so the token is unmasked; any other form is taken whole."""
    parts = cookie.split("|")
    try:
        if len(parts) == 4 and parts[0] == "2":
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            return bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked))
    except ValueError:
        pass
    return cookie.encode()


class _Sessions:
    """What the server remembers per browser session: who signed in as the owner, and the jobs each started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: set[str] = set()
        self.jobs: dict[str, list] = {}


@st.cache_resource(show_spinner=False)
def _sessions() -> _Sessions:
    return _Sessions()


def claimant() -> str | None:
    """Who a run started here is for in the compute queue: this session on a server, nobody under `make app`."""
    return session_id() if serving() else None


def _signed_in_by_login() -> bool:
    """Streamlit's own login (an identity provider in secrets.toml) as one of the limits' owner_emails."""
    if not limits().owner_emails:
        return False
    try:
        user = st.user
        return bool(user.is_logged_in) and user.get("email") in limits().owner_emails
    except Exception:  # no [auth] configured: st.user has no login
        return False


def is_owner() -> bool:
    """Every right: the one user of `make app`, or the signed-in owner of a server."""
    return not serving() or session_id() in _sessions().owners or _signed_in_by_login()


def is_guest() -> bool:
    return not is_owner()


def sign_in(secret: str) -> bool:
    """Become the owner for this browser session when `secret` is the server's (compared in constant time)."""
    real = os.environ.get(classroom.SECRET_ENV, "")
    ok = bool(real) and hmac.compare_digest(secret.strip().encode(), real.encode())
    with _sessions().lock:
        (_sessions().owners.add if ok else _sessions().owners.discard)(session_id())
    return ok


def sign_out() -> None:
    with _sessions().lock:
        _sessions().owners.discard(session_id())


# --------------------------------------------------------------------------- rights: None = allowed

def may_remove() -> str | None:
    """Removing, keeping or collecting runs."""
    if is_owner():
        return None
    return ("Guests cannot remove runs on this server: every student sees the same runs. You may compare runs, "
            "open them in Results and download their metrics; the owner removes runs.")


def started_jobs() -> list:
    """The jobs (ui.jobs.Job) this browser session started that are still running or waiting (a copy); done ones
    are let go (the job registry keeps their results, not this list)."""
    reg = _sessions()
    with reg.lock:
        live = reg.jobs[session_id()] = [j for j in reg.jobs.get(session_id(), []) if not j.done]
        return list(live)


def remember(job) -> None:
    """Count a job this session started (against the limit of runs waiting per session); a job another session
    started, which this Start merely attached to, stays theirs (this session cannot cancel it)."""
    if job.config.get("claimant") not in (None, claimant()):
        return
    reg = _sessions()
    with reg.lock:
        mine = reg.jobs.setdefault(session_id(), [])
        if all(j.id != job.id for j in mine):
            mine.append(job)


def _waiting_refusal() -> str | None:
    live = started_jobs()
    n = limits().max_waiting
    if len(live) >= n:
        return (f"You already have {len(live)} runs waiting or computing (at most {n} per browser session here, so "
                "that every student gets a turn). Wait for one to finish, or cancel one, then start this one.")
    return None


def may_start(*, dataset: str, preset: str, algorithm: str, methods: list[str], ipc: int,
              iterations: int | None = None, eval_seeds: int = 1) -> str | None:
    """Starting a run with these settings (`preset`: the form's quick/paper)."""
    if is_owner():
        return None
    return classroom.request_refusal(limits(), dataset=dataset, preset=preset, algorithm=algorithm,
                                     methods=list(methods), ipc=int(ipc), iterations=iterations,
                                     eval_seeds=int(eval_seeds)) or _waiting_refusal()


def may_map(dataset: str) -> str | None:
    """Computing an Embeddings map (a SupCon network trained on the split, outside the run queue)."""
    if is_owner() or dataset in limits().datasets:
        return None
    return (f"Guests may compute the embedding map of {', '.join(limits().datasets)} here: on {dataset} it trains a "
            "network for minutes. Pick one of those in the sidebar; a map the owner computed is open to everyone.")


def may_sweep() -> str | None:
    """Starting a sweep (a grid of audits)."""
    if is_owner() or limits().sweeps:
        return None
    return ("Guests cannot start sweeps on this server: a sweep is many runs and holds the machine for long. "
            "You may browse the finished sweeps below, and start single runs on the Distill page.")


def may_upload(sizes: list[int] | None = None) -> str | None:
    """Uploading set files (sizes in bytes; None: whether uploads are open at all)."""
    if is_owner():
        return None
    lim = limits()
    if not lim.uploads:
        return ("Guests cannot upload files on this server. You may browse every audited run on this page; the "
                "owner can import sets made elsewhere.")
    big = [s for s in sizes or [] if s > lim.upload_mb * 2 ** 20]
    if big:
        return (f"This file is {big[0] / 2 ** 20:.1f} MB; guests may upload files of at most {lim.upload_mb} MB here. "
                "Upload a smaller set (fewer images per class), or ask the owner to import it.")
    return _waiting_refusal()


def may_cancel(job) -> str | None:
    """Cancelling a running job: a guest only the jobs their own session started."""
    if is_owner() or any(j.id == job.id for j in started_jobs()):
        return None
    return "Only the session that started this run (or the owner) can cancel it."


def scrub(text: str) -> str:
    """What a guest sees of a message: file paths of the server replaced by words (the owner sees them)."""
    if is_owner():
        return text
    return _PATH.sub("(a file on the server)", text)


# --------------------------------------------------------------------------- drawn in every page's sidebar

def banner() -> None:
    """On a server: tells a guest that they are one and how the owner signs in; the owner's sign-out."""
    if not serving():
        return
    if is_owner():
        st.success("Signed in as the **owner**: every right (remove runs, any preset, sweeps, uploads).",
                   icon=":material/verified_user:")
        if session_id() in _sessions().owners and st.button("Sign out", key="role_sign_out"):
            sign_out()
            st.rerun()
        return
    lim = limits()
    st.info(f"You are a **guest** of this class server: browse every page and run, watch the demo, and start "
            f"small runs ({' or '.join(lim.presets)} preset, IPC up to {lim.max_ipc}, {', '.join(lim.datasets)}; "
            f"{lim.max_waiting} at a time). The owner signs in below with the server's secret.",
            icon=":material/school:")
    with st.expander("Owner sign-in"):
        with st.form("role_sign_in", clear_on_submit=True, border=False):
            secret = st.text_input("Owner's secret", type="password", key="role_secret")
            if st.form_submit_button("Sign in"):
                if sign_in(secret):
                    st.rerun()
                time.sleep(1.0)  # a wrong guess costs a second: guessing the secret stays slow
                st.error("That is not this server's secret. Guests keep browsing without one.",
                         icon=":material/lock:")


def refuse(text: str) -> None:
    """Draw a refusal (a warning, not an error: nothing went wrong)."""
    st.warning(text, icon=":material/block:")
