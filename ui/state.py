"""The frame every page draws (page config, navigation, sidebar), session settings, cached engine calls."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import streamlit as st

from engine import data
from engine.errors import DDAuditError
from ui import roles

# (script, title, icon, url path): app.py's navigation and the sidebar's links read this one list
PAGES = (
    ("pages/dataset.py", "Dataset", ":material/dataset:", "dataset"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:", "embeddings"),
    ("pages/distill.py", "Distill", ":material/science:", "distill"),
    ("pages/results.py", "Results", ":material/leaderboard:", "results"),
    ("pages/runs.py", "Runs", ":material/history:", "runs"),
    ("pages/sweeps.py", "Sweeps", ":material/grid_on:", "sweeps"),
    ("pages/reproduce.py", "Reproduce", ":material/fact_check:", "reproduce"),
)
DEFAULT_RATIO = 0.05
RATIO_CHOICES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)

def tiny() -> bool:
    """DDAUDIT_TINY=1 shrinks every engine setting the UI chooses (tests, demos)."""
    return os.environ.get("DDAUDIT_TINY", "") not in ("", "0", "false", "False")


@dataclass(frozen=True)
class Settings:
    """What the sidebar chose: the dataset, its conflict ratio and the seed."""

    dataset: str
    ratio: float
    seed: int


def show_error(exc: BaseException, what: str = "") -> None:
    """One st.error with the problem and its fix; never a traceback."""
    if isinstance(exc, OSError):
        from engine.errors import from_os_error
        exc = from_os_error(exc)
    if isinstance(exc, DDAuditError):
        msg = f"{what}{exc.problem}" + (f"\n\n**Fix:** {exc.fix}" if exc.fix else "")
    else:
        msg = (f"{what}unexpected error: {type(exc).__name__}: {exc}\n\n**Fix:** try other settings; "
               "if it persists, report it with these settings")
    st.error(roles.scrub(msg), icon=":material/error:")


def statuses() -> dict[str, dict]:
    """dataset_status for every registered dataset (cheap; cached per data folder and home)."""
    return _statuses(os.environ.get("DDAUDIT_DATA"), os.environ.get("DDAUDIT_HOME"))


@st.cache_data(show_spinner=False)
def _statuses(data_env: str | None, home: str | None) -> dict[str, dict]:
    out = {}
    for name in data.REGISTRY:
        try:
            out[name] = data.dataset_status(name)
        except DDAuditError as exc:
            out[name] = {"name": name, "available": False, "source": exc.problem}
    return out


def how_to_get(name: str) -> str:
    """The instructions that make a dataset available."""
    how = data.REGISTRY[name].source.how_to
    return how.replace("pass --data-root DIR", "start the app with DDAUDIT_DATA=DIR")


@st.cache_resource(show_spinner=False)
def warm_up_umap() -> threading.Thread:
    """Once per server: compile UMAP's numba kernels in the background while the user reads the Dataset page."""
    def work() -> None:
        try:
            from engine.projection import warm_up
            warm_up()
        except Exception:  # an optimisation only: the first map compiles them itself
            pass
    thread = threading.Thread(target=work, name="ddaudit-umap-warm-up", daemon=True)
    thread.start()
    return thread


def load_pair(name: str, ratio: float, seed: int) -> tuple[data.BiasedSplit, data.BiasedSplit]:
    """Cached (train, test) splits; shared read-only across sessions."""
    return _load_pair(name, ratio, seed, os.environ.get("DDAUDIT_DATA"), os.environ.get("DDAUDIT_HOME"))


@st.cache_resource(show_spinner=False, max_entries=6)
def _load_pair(name: str, ratio: float, seed: int, data_env: str | None, home: str | None):
    return data.load_pair(name, ratio, seed)


def device_label() -> str:
    """The compute device, in words (or why it cannot be used)."""
    from engine import device
    try:
        return device.describe(device.pick_device())
    except DDAuditError as exc:
        return f"unusable: {exc.problem}"


def _keep(name: str) -> None:
    """Copy a sidebar widget's value into its persistent session key (survives page switches)."""
    st.session_state[name] = st.session_state[f"sb_{name}"]


def sidebar() -> Settings:
    """Draw the shared sidebar and return the chosen settings."""
    stat = statuses()
    names = list(data.REGISTRY)
    ss = st.session_state
    ss.setdefault("dataset", data.DEFAULT_DATASET)
    ss.setdefault("ratio", DEFAULT_RATIO)
    ss.setdefault("seed", 0)
    for name in ("dataset", "ratio", "seed"):  # widgets start from the persistent values
        ss[f"sb_{name}"] = ss[name]
    with st.sidebar:
        st.markdown("### ddaudit")
        st.caption("Bias amplification in dataset distillation")
        st.selectbox("Dataset", names, key="sb_dataset", on_change=_keep, args=("dataset",),
                     format_func=lambda n: n if stat[n]["available"] else f"{n} (not available)",
                     help="Biased benchmarks; colored-digits always works offline.")
        folders = stat.get(ss["sb_dataset"], {}).get("conflict_ratios")
        if folders:  # a DFA release: only its <pct> folders exist, so only they are offered
            if ss["sb_ratio"] not in folders:
                ss["ratio"] = ss["sb_ratio"] = min(folders, key=lambda r: abs(r - float(ss["sb_ratio"])))
            st.selectbox("Conflict ratio", folders, key="sb_ratio", on_change=_keep, args=("ratio",),
                         format_func=lambda r: f"{r:.1%}", help="The release's folders on disk: each is a split.")
        else:
            if ss["sb_ratio"] not in RATIO_CHOICES:
                ss["ratio"] = ss["sb_ratio"] = DEFAULT_RATIO
            st.select_slider("Conflict ratio", options=RATIO_CHOICES, key="sb_ratio", on_change=_keep,
                             args=("ratio",), format_func=lambda r: f"{r:.1%}",
                             help="Fraction of training images whose attribute conflicts with their class.")
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="sb_seed", on_change=_keep,
                        args=("seed",))
        st.caption(f"Device: {device_label()}")
        if tiny():
            st.caption("Tiny mode (DDAUDIT_TINY=1): engine settings shrunk for tests.")
    return Settings(ss["dataset"], float(ss["ratio"]), int(ss["seed"]))


def current() -> Settings:
    """The settings chosen in the sidebar (defaults before the sidebar ran)."""
    ss = st.session_state
    return Settings(ss.get("dataset", data.DEFAULT_DATASET), float(ss.get("ratio", DEFAULT_RATIO)),
                    int(ss.get("seed", 0)))


def require_dataset(s: Settings) -> tuple[data.BiasedSplit, data.BiasedSplit] | None:
    """The splits of the chosen dataset, or an st.error saying how to get it (None)."""
    stat = statuses().get(s.dataset, {})
    if not stat.get("available", False):
        st.error(roles.scrub(f"Dataset **{s.dataset}** is not available on this machine ({stat.get('source', 'unknown')}).\n\n"
                 f"**Fix:** {how_to_get(s.dataset)}; or pick colored-digits in the sidebar."), icon=":material/error:")
        return None
    try:
        with st.spinner(f"Loading {s.dataset} (conflict ratio {s.ratio:.1%}, seed {s.seed})..."):
            return load_pair(s.dataset, s.ratio, s.seed)
    except DDAuditError as exc:
        show_error(exc, f"Could not load {s.dataset}: ")
        return None


def navigation_pages() -> list:
    """The st.Page objects of app.py's navigation (Dataset is the default page)."""
    return [st.Page(script, title=title, icon=icon, url_path=url, default=(i == 0))
            for i, (script, title, icon, url) in enumerate(PAGES)]


def frame(title: str) -> Settings:
    """What every page draws first: page config, the navigation links and the shared sidebar.

    A page draws it itself (rather than app.py around it) because a fresh server's first request
    for a deep link such as /runs runs the page script alone: Streamlit treats a pages/ folder as
    a legacy multipage app until app.py's st.navigation has run once in the process. Drawn by the
    page, the frame is the same either way, and no Streamlit internal is touched (docs/DESIGN.md).
    """
    st.set_page_config(page_title=f"{title} · ddaudit", page_icon=":material/balance:", layout="wide",
                       initial_sidebar_state="expanded")
    with st.sidebar:
        for script, label, icon, _ in PAGES:
            st.page_link(script, label=label, icon=icon)
        st.divider()
        roles.banner()  # on a classroom server: guest or owner, and how the owner signs in
    return sidebar()


def page(title: str, draw: Callable[[Settings], None]) -> None:
    """A page script's body: the frame, then draw(settings); errors become st.error, never a traceback."""
    guarded(lambda: draw(frame(title)))


def guarded(fn: Callable[[], None]) -> None:
    """Run a page body; any error becomes an st.error instead of a traceback."""
    try:
        fn()
    except DDAuditError as exc:
        show_error(exc)
    except Exception as exc:  # the UI never shows a traceback (st.stop/st.rerun are BaseExceptions)
        show_error(exc)


# --------------------------------------------------------------------------- engine settings chosen by the UI

def preset(name: str = "quick") -> str:
    """The engine preset the UI runs: `name`, or the engine's "tiny" preset in tiny mode."""
    return "tiny" if tiny() else name


def map_points() -> int:
    """Cap on the points of the UMAP map."""
    return 600 if tiny() else 5000


def set_kde_choice(s: Settings, kernel_variance: float | None, temperature: float) -> None:
    """Remember the Embeddings page's KDE knobs for these settings (the Distill page's kde method uses them);
    kernel_variance None: the engine's suggestion, as the CLI's default request."""
    st.session_state["kde_choice"] = {"settings": (s.dataset, s.ratio, s.seed),
                                      "kernel_variance": None if kernel_variance is None else float(kernel_variance),
                                      "temperature": float(temperature)}


def kde_choice(s: Settings) -> tuple[float | None, float]:
    """(kernel variance or None = engine's suggestion, temperature) chosen on the Embeddings page for s."""
    c = st.session_state.get("kde_choice") or {}
    if tuple(c.get("settings", ())) != (s.dataset, s.ratio, s.seed):
        return None, 1.0
    return c["kernel_variance"], c["temperature"]
