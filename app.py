"""ddaudit dashboard: shared sidebar + five pages (Dataset, Embeddings, Distill, Results, Runs)."""
from __future__ import annotations

import streamlit as st

from pages import state

st.set_page_config(page_title="ddaudit", page_icon=":material/balance:", layout="wide",
                   initial_sidebar_state="expanded")
st.session_state[state.APP_MARKER] = True  # pages check it: they only ever run through this navigation

PAGES = [
    st.Page("pages/dataset.py", title="Dataset", icon=":material/dataset:", default=True),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:", url_path="embeddings"),
    st.Page("pages/distill.py", title="Distill", icon=":material/science:", url_path="distill"),
    st.Page("pages/results.py", title="Results", icon=":material/leaderboard:", url_path="results"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
]

state.warm_up_umap()  # background, once per server: the Embeddings page's first map skips numba's JIT
nav = st.navigation(PAGES)
state.sidebar()
deep_link = st.session_state.pop(state.DEEP_LINK, None)
if deep_link and deep_link in {p.url_path for p in PAGES}:
    st.switch_page(f"pages/{deep_link}.py")
nav.run()
