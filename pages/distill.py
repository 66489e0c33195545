"""Distill page: choose methods and settings, run in the background, live loss curves, synthetic grids."""
from __future__ import annotations

import numpy as np
import streamlit as st

from engine import distill
from engine import figures, trajectory_figures
from ui import distill_jobs, jobs, state


def form() -> dict | None:
    """The run settings; returns them when Start is pressed."""
    methods_all, algorithms = list(distill.METHODS), list(distill.ALGORITHMS)
    tiny = state.tiny()
    with st.form("distill_form", border=True):
        c1, c2, c3 = st.columns([3, 1, 1])
        methods = c1.multiselect("Methods (distilled side by side)", methods_all, default=methods_all,
                                 key="dst_methods",
                                 help="; ".join(distill.REGISTRY[m].label for m in methods_all) + ".")
        algorithm = c2.selectbox("Algorithm", algorithms, key="dst_algorithm",
                                 format_func=str.upper,
                                 help="DM: distribution matching (with DSA); DC: gradient matching; IDC: gradient "
                                      "matching of multi-formation sets (each stored image holds 2 x 2 "
                                      "images, 4 x 4 for 64-pixel faces), network trained on real data.")
        preset = c3.selectbox("Preset", ("quick", "paper"), key="dst_preset",
                              help="quick: CPU minutes; paper: the published settings (GPU hours).")
        c4, c5, c6, c7 = st.columns(4)
        ipc = c4.number_input("Images per class (IPC)", 1, 500, 2 if tiny else 10, key="dst_ipc")
        default_iters = distill_jobs.default_iterations(preset, algorithm)
        iterations = c5.number_input("Iterations (0 = preset default)", 0, 100000, 0, key="dst_iterations",
                                     help=f"The {preset} preset uses {default_iters} for {algorithm}.")
        eval_seeds = c6.number_input("Evaluation trainings per set", 1, 10, distill_jobs.UI_EVAL_SEEDS,
                                     key="dst_eval_seeds",
                                     help="Fresh ConvNets trained on each set; 2 or more give a ± spread. "
                                          "The dashboard defaults to 1 to keep a CPU run to minutes; "
                                          "the CLI uses the preset's (3 for quick, 5 for paper).")
        evaluate = c7.checkbox("Evaluate + audit after distilling", value=True, key="dst_evaluate",
                               help="Train fresh ConvNets on each synthetic set, measure group accuracies and "
                                    "the attribute probe's aligned share (Results page).")
        baseline = st.checkbox("Also evaluate a random-real baseline", value=distill_jobs.UI_BASELINE,
                               key="dst_baseline",
                               help="IPC random real training images per class, evaluated like the synthetic "
                                    "sets (the 'random' row on Results): what distillation must beat. One more "
                                    "evaluation; the CLI audit always includes it unless --no-baseline.")
        if "kde" in methods:
            kv, temp = state.kde_choice(state.current())
            st.caption(f"KDE uses kernel variance {f'{kv:.3g}' if kv else '(suggested by the engine)'} and "
                       f"temperature {temp:g} (set them on the Embeddings page).")
        go = st.form_submit_button("Start distillation", type="primary")
    if not go:
        return None
    if not methods:
        st.error(f"No method chosen.\n\n**Fix:** pick at least one of {', '.join(methods_all)}.",
                 icon=":material/error:")
        return None
    return {"methods": distill_jobs.order(methods), "algorithm": algorithm, "preset": preset, "ipc": int(ipc),
            "iterations": int(iterations) or None, "evaluate": bool(evaluate), "eval_seeds": int(eval_seeds),
            "baseline": bool(baseline)}


def current_job() -> jobs.Job | None:
    """The run this session started, else the newest run of the server."""
    reg = jobs.registry()
    job = reg.by_id(st.session_state.get("distill_job", ""))
    if job is None:
        runs = reg.jobs("distill")
        job = runs[0] if runs else None
    return job


def live_curves(job: jobs.Job) -> None:
    """Live loss curves and, when tracked, each set's aligned share while it is distilled."""
    events = job.snapshot()
    hist = distill_jobs.loss_history(events)
    track, real = distill_jobs.track_points(events)
    left, right = st.columns(2) if track else (st.container(), None)
    if hist:
        left.plotly_chart(figures.loss_curves(hist), key=f"live_loss_{job.id}")
    if track:
        right.plotly_chart(trajectory_figures.trajectory_curves({"run": track}, "aligned_share", real),
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
        right.plotly_chart(trajectory_figures.trajectory_curves({"run": track}, "aligned_share", real),
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


def start(s: state.Settings, choice: dict, train) -> None:
    """Start the chosen run, or attach this page to the job already computing the same request."""
    try:
        job = distill_jobs.start(s, choice, train)
    except state.DDAuditError as exc:
        state.show_error(exc, "Could not start: ")
        return
    st.session_state["distill_job"] = job.id


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Distill")
    pair = state.require_dataset(s)
    if pair is None:
        return
    train, _ = pair
    st.caption(f"{s.dataset} at conflict ratio {s.ratio:.1%}, seed {s.seed}. "
               + ("Tiny mode: the engine's tiny presets. " if state.tiny() else ""))
    choice = form()
    if choice is not None:
        start(s, choice, train)
    job = current_job()
    if job is None:
        st.caption("No run yet: choose settings and press Start.")
        return
    st.divider()
    st.markdown(f"**{job.label}**")
    if not job.done:
        jobs.live(job.id, jobs.progress_text, live_curves, cancel="Cancel run",
                  note="The run works in the background: other pages stay usable; come back here to watch it.")
    elif job.status == "finished":
        show_result(job)
    else:
        problem, fix = jobs.error_text(job)
        if job.status == "cancelled":
            st.warning(f"{problem}\n\n**Next:** {fix or 'start it again to resume from its checkpoint'}", icon=":material/stop_circle:")
        else:
            st.error(f"{problem}\n\n**Fix:** {fix}", icon=":material/error:")


state.page("Distill", draw)
