"""ddaudit dashboard: six pages (Dataset, Embeddings, Distill, Results, Runs, Sweeps; ui.state.PAGES);
each draws the shared frame."""
from __future__ import annotations

import streamlit as st

from engine.allocator import tune_cpu_allocator
from ui import state

tune_cpu_allocator()  # keep freed tensor memory: CPU training steps page-fault far less (engine/allocator.py)
# hidden: the sidebar's links are drawn by each page's frame (ui.state.frame), the same in every mode
st.navigation(state.navigation_pages(), position="hidden").run()
# background, once per server, after the first page is drawn (numba's compilation would slow that page): the
# Embeddings page's first map then skips numba's JIT
state.warm_up_umap()
