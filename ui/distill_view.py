"""What the Distill page and the Dataset page's demo draw of a distillation job: live loss and aligned-share
curves while it runs, then the curves and each method's synthetic grid."""
from __future__ import annotations

import numpy as np
import streamlit as st

from engine import distill, figures
from ui import distill_jobs, jobs


def live_curves(job: jobs.Job) -> None:
    """Live loss curves and, when tracked, each set's aligned share while it is distilled."""
    events = job.snapshot()
    hist = distill_jobs.loss_history(events)
    track, real = distill_jobs.track_points(events)
    left, right = st.columns(2) if track else (st.container(), None)
    if hist:
        left.plotly_chart(figures.loss_curves(hist), key=f"live_loss_{job.id}")
    if track:
        right.plotly_chart(figures.trajectory.trajectory_curves({"run": track}, "aligned_share", real),
                           key=f"live_track_{job.id}")


def show_result(job: jobs.Job) -> None:
    """Loss curves and the synthetic grids side by side, one column per method."""
    res = job.result or {}
    sets = res.get("synthetic", {})
    st.success(f"Finished {job.label} in {job.elapsed():.0f} s."
               + (" Metrics are on the Results page." if res.get("audit") else ""), icon=":material/check_circle:")
    hist = {m: s.loss_history for m, s in sets.items() if getattr(s, "loss_history", None)}
    track = {m: s.trajectory for m, s in sets.items() if getattr(s, "trajectory", None)}
    left, right = st.columns(2) if track else (st.container(), None)
    if hist:
        left.plotly_chart(figures.loss_curves(hist), key=f"final_loss_{job.id}")
    if track:
        real = (res.get("audit") or {}).get("real_aligned_share", distill_jobs.track_points(job.snapshot())[1])
        right.plotly_chart(figures.trajectory.trajectory_curves({"run": track}, "aligned_share", real),
                           key=f"final_track_{job.id}")
        right.caption("The attribute probe's share of bias-aligned images in each synthetic set while it was "
                      "distilled; above the dotted real-data line is amplification. Results shows every tracked metric; "
                      "Embeddings puts the sets and their paths on the map.")
    if not sets:
        return
    st.subheader("Synthetic images (one row per class)")
    cols = st.columns(len(sets))
    for col, (m, s) in zip(cols, sets.items()):
        ipc = int(np.bincount(s.labels.numpy()).max())
        with col:
            st.markdown(f"**{m}** · final loss {s.final_loss:.4g}")
            grid = figures.tile_images(distill.sets.class_rows(s), ncols=ipc, scale=3 if ipc <= 3 else 2)
            st.image(grid, width="content")
            st.download_button(f"{m} grid (PNG)", figures.png_bytes(grid), f"{m}_grid.png", "image/png",
                               key=f"png_{job.id}_{m}")
