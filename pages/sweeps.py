"""Sweeps page: define a grid of audits, run it on a local Ray in the background, plot outcome against
kernel variance beside the weight-only view, and amplification against the conflict ratio."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine import distill, figures, sweep
from ui import jobs, roles, run_store, state, sweep_jobs

KV_CHOICES = ("0.01", "0.03", "0.1", "0.3", "1", "3", "10", sweep.SUGGESTED)


def form(s: state.Settings) -> sweep.Grid | None:
    """The grid's widgets and its estimated time (plain widgets: the estimate follows every change); a
    checked Grid when Start is pressed."""
    folders = state.statuses().get(s.dataset, {}).get("conflict_ratios")
    ratios_all = list(folders or state.RATIO_CHOICES)
    with st.container(border=True):
        c1, c2 = st.columns(2)
        ratios = c1.multiselect("Conflict ratios", ratios_all, default=[r for r in ratios_all if r == s.ratio][:1]
                                or ratios_all[:1], format_func=lambda r: f"{r:.1%}", key="sw_ratios")
        kvs = c2.multiselect("Kernel variances s²", KV_CHOICES, default=["0.1", "1", sweep.SUGGESTED],
                             key="sw_kvs", help="'suggested' is the median heuristic of each ratio's embeddings "
                                                "(the Embeddings page shows its value).")
        c3, c4, c5, c6 = st.columns(4)
        methods = c3.multiselect("Methods", list(distill.METHODS), default=["vanilla", "kde"], key="sw_methods")
        seeds = c4.number_input("Seeds", 1, 10, 2, key="sw_seeds", help="0, 1, ...: the spread over seeds")
        ipc = c5.number_input("IPC", 1, 100, 5, key="sw_ipc")
        presets = ("tiny", "quick", "paper")
        preset = c6.selectbox("Preset", presets, index=0 if state.tiny() else 1, key="sw_preset")
        try:
            grid, cells = sweep_jobs.grid(s, ratios, kvs, methods, ipc, seeds, preset) if ratios and kvs and methods \
                else (None, [])
        except state.DDAuditError as exc:
            grid, cells = None, []
            state.show_error(exc, "This grid cannot run: ")
        if grid is not None:
            st.caption(f"{len(cells)} cells (vanilla and the other weight-free methods once per ratio and seed). "
                       f"Estimated time: {sweep_jobs.estimate_text(cells)}", help=sweep_jobs.ESTIMATE_HELP)
        go = st.button("Start sweep", type="primary", key="sw_start", disabled=grid is None)
    return grid if go else None


def plots(summary: dict) -> None:
    """Outcome and weight diagnostics against s², amplification against the ratio, and the way to a run."""
    rows = summary["rows"]
    metric = st.radio("Outcome", list(figures.sweep.METRIC_LABELS), horizontal=True, key="sw_metric",
                      format_func=lambda m: figures.sweep.METRIC_LABELS[m])
    left, right = st.columns(2)
    left.plotly_chart(figures.sweep.metric_vs_kernel_variance(rows, metric), key="sw_metric_fig")
    right.plotly_chart(figures.sweep.weights_vs_kernel_variance(rows), key="sw_weights_fig")
    st.caption("Left: what each kernel variance does to the distilled set (mean ± std over seeds; weight-free "
               "methods as flat lines). Right: the weight-only view of the same variances: does it predict the left?")
    best = pd.DataFrame([{k: b[k] for k in ("conflict_ratio", "ipc", "method", "best_by_conflicting_accuracy",
                                              "best_by_worst_group_accuracy")} for b in summary["best_kernel_variance"]])
    if not best.empty:
        st.dataframe(best, hide_index=True, key="sw_best")
    st.plotly_chart(figures.sweep.amplification_vs_ratio(summary), key="sw_amp_fig")
    choices = figures.sweep.point_choices(rows)
    c1, c2 = st.columns([3, 1])
    point = c1.selectbox("A point of the plots", list(choices), key="sw_point")
    if c2.button("Open its run", key="sw_open") and point:
        st.session_state["runs_pick"] = [choices[point]]
        st.switch_page("pages/runs.py")
    st.download_button("sweep.csv", sweep.to_csv(rows).encode(), "sweep.csv", "text/csv", key="sw_csv")


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Sweeps")
    st.caption(f"A grid of audits on {s.dataset}, each an ordinary stored run (reused when identical), run on a "
               "local Ray; `python -m engine sweep --address ...` sends the same grid to a cluster.")
    refusal = roles.may_sweep()
    if refusal:
        roles.refuse(refusal)
    grid = form(s) if not refusal else None
    if grid is not None:
        refusal = roles.may_start(dataset=grid.dataset, preset=grid.preset, algorithm=grid.algorithm,
                                  methods=list(grid.methods), ipc=max(grid.ipcs), eval_seeds=grid.eval_seeds or 1)
        if refusal:
            roles.refuse(refusal)
        else:
            job = sweep_jobs.start(grid)
            roles.remember(job)
            st.session_state["sweep_job"] = job.id
    job = jobs.registry().by_id(st.session_state.get("sweep_job", ""))
    if job is not None and not job.done:
        st.markdown(f"**{job.label}**")
        jobs.live(job.id, sweep_jobs.cells_text, cancel="Cancel sweep",
                  cancelling="Cancelling: finished cells are kept; starting the same sweep again resumes.")
    elif job is not None and job.status != "finished":
        problem, fix = jobs.error_text(job)
        (st.warning if job.status == "cancelled" else st.error)(f"{problem}\n\n**Next:** {fix}")
    done = run_store.sweep_summaries()
    if not done:
        st.info("No finished sweep yet: define a grid above and start it.", icon=":material/info:")
        return
    labels = {i: f"{d['dataset']} · {d['cells']} cells · {i}" for i, d in done.items()}
    default = job.result["run_id"] if job is not None and job.status == "finished" and job.result else next(iter(done))
    picked = st.selectbox("Sweep", list(done), index=list(done).index(default) if default in done else 0,
                          format_func=labels.get, key="sw_pick")
    plots(done[picked])


state.page("Sweeps", draw)
