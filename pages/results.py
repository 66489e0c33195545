"""Results page: per-method metrics, class x attribute accuracy heatmaps on one scale, bars, downloads."""
from __future__ import annotations

import json

import streamlit as st

from engine import figures
from ui import import_jobs, jobs, roles, run_store, state
from ui.result_sources import (amplification_table, build_report, grids_side_by_side, image_sizes, is_audit, load,
                               sources, verdict_text)


def evaluation_note(seeds: object) -> str:
    """How many evaluation trainings the ± columns rest on."""
    if not isinstance(seeds, list) or not seeds:
        return ""
    if len(seeds) == 1:
        return " · 1 evaluation training per set (no ± spread; raise it on the Distill page)"
    return f" · mean ± std over {len(seeds)} evaluation trainings per set"


def trajectory_panel(res: dict, key: str, src: dict[str, tuple[str, str]]) -> None:
    """The run's trajectories (engine.trajectory) against iterations, optionally beside other runs'."""
    traj = res.get("trajectory")
    st.subheader("During distillation")
    if not traj:
        st.caption("This run has no trajectory (run before tracking existed, or with --track-every 0): run it "
                   "again to see how each set moved while it was distilled.")
        return
    metrics = figures.trajectory.available_metrics(traj)
    others = {lab: v for lab, v in src.items() if v[1] != key}
    c1, c2 = st.columns([1, 2])
    metric = c1.selectbox("Metric", metrics, format_func=lambda k: figures.trajectory.METRICS[k],
                          key=f"res_traj_metric_{key}",
                          help="Accuracies appear when the run was tracked with --track-eval (one short "
                               "evaluation training per point).")
    compare = c2.multiselect("Compare with runs", list(others), key=f"res_traj_cmp_{key}",
                             help="Dashed lines: the same metric in other runs (e.g. a shared start vs each "
                                  "method's own start).")
    runs = {"this run": traj}
    for lab in compare:
        other = load(*others[lab])[0].get("trajectory")
        if other:
            runs[others[lab][1]] = other
    ref = res.get("real_aligned_share") if metric == "aligned_share" else None
    st.plotly_chart(figures.trajectory.trajectory_curves(runs, metric, ref), key=f"res_traj_{key}")
    amp = amplification_table(res)
    if amp is not None:
        st.dataframe(amp, key=f"res_amp_{key}")
        st.caption("Aligned share minus the real data's share at the start, at its peak and at the end: "
                   "positive is amplification.")


def records_panel(res: dict, key: str) -> None:
    """What the backbone recorded per method (DREAM: the aligned share of the real batches its k-means picked)."""
    records = figures.trajectory.record_points(res.get("records") or {})
    for name in figures.trajectory.available_metrics(records):
        st.plotly_chart(figures.trajectory.trajectory_curves({"this run": records}, name, res.get("real_aligned_share")),
                        key=f"res_rec_{name}_{key}")
        st.caption("What the matcher saw: each method's picked real batch, against the real data's share (dotted).")


def draw_result(res: dict, run_id: str | None, key: str, src: dict | None = None) -> None:
    """Everything about one audit result."""
    classes, attrs = figures.class_attribute_names(res)
    ratio = res.get("conflict_ratio")
    st.markdown(f"**{res.get('dataset', '?')}** · conflict ratio "
                f"{f'{ratio:.1%}' if isinstance(ratio, (int, float)) else '?'} · "
                f"{str(res.get('algorithm', '')).upper()} · IPC {res.get('ipc', '?')} · preset {res.get('preset', '?')}"
                + (f" · {res['seconds']:.0f} s" if isinstance(res.get("seconds"), (int, float)) else "")
                + evaluation_note(res.get("eval_seeds")))
    head = st.columns(3)
    pa = res.get("probe_accuracy")
    head[0].metric("attribute probe accuracy", f"{pa:.1f}%" if isinstance(pa, (int, float)) else "–",
                   help="How well the probe that labels synthetic images predicts the bias attribute on the test set.")
    ras = res.get("real_aligned_share")
    head[1].metric("real aligned share", f"{ras:.1f}%" if isinstance(ras, (int, float)) else "–",
                   help="Share of real training images whose attribute is their class's aligned one.")
    w = res.get("weights") or {}
    if isinstance(w.get("conflict_weight_mass"), (int, float)):
        head[2].metric("KDE conflict weight mass", f"{w['conflict_weight_mass']:.1%}",
                       help=f"kernel variance {w.get('kernel_variance', '?'):.3g}, temperature "
                            f"{w.get('temperature', '?')}" if isinstance(w.get("kernel_variance"), (int, float))
                       else None)
    said = verdict_text(res)
    if said:
        st.info(said, icon=":material/gavel:")
    df = figures.metrics_frame(res)
    st.subheader("Metrics per method (%)")
    st.dataframe(figures.metrics_text(df), key=f"res_table_{key}")
    if "random" not in res["methods"]:
        st.caption("No random-real baseline in this run: tick “Also evaluate a random-real baseline” on the "
                   "Distill page and run again to see what IPC random real images per class score.")
    st.caption("Accuracies on the balanced test set; DEO = spread of accuracy across attributes within a class "
               "(max: DEO_M, mean: DEO_A; lower is fairer); synthetic aligned share = how many synthetic images the "
               "attribute probe sees as their class's aligned attribute (amplification when above the real share).")
    group = {m: figures.group_matrix((v or {}).get("group_accuracy"), len(classes), len(attrs))
             for m, v in res["methods"].items() if isinstance(v, dict) and (v or {}).get("group_accuracy") is not None}
    if group:
        st.plotly_chart(figures.accuracy_heatmaps(group, classes, attrs), key=f"res_heat_{key}")
    b1, b2 = st.columns(2)
    b1.plotly_chart(figures.metrics_bars(df), key=f"res_bars_{key}")
    b2.plotly_chart(figures.aligned_share_bars(df), key=f"res_share_{key}")
    trajectory_panel(res, key, src or {})
    records_panel(res, key)
    grids = run_store.grids(run_id) if run_id else {}
    if grids:
        st.subheader("Synthetic sets")
        if grids_side_by_side(image_sizes(grids)):
            for col, (m, p) in zip(st.columns(len(grids)), grids.items()):
                col.image(str(p), caption=m, width="content")
        else:  # wide grids (IDC, DREAM: IPC x factor^2 images a row): one under another, each at its own size
            for m, p in grids.items():
                st.image(str(p), caption=m, width="content")
    st.subheader("Downloads")
    d1, d2, d3, d4 = st.columns(4)
    d1.download_button("Metrics (CSV)", df.to_csv().encode(), "metrics.csv", "text/csv", key=f"dl_csv_{key}")
    d2.download_button("Full results (JSON)", json.dumps(res, indent=2, default=str).encode(), "results.json",
                       "application/json", key=f"dl_json_{key}")
    if group:
        d3.download_button("Heatmaps (PNG)", figures.heatmaps_png(group, classes, attrs), "group_accuracy.png",
                           "image/png", key=f"dl_png_{key}")
    for m, p in list(grids.items())[:1]:
        d4.download_button(f"{m} synthetic grid (PNG)", p.read_bytes(), f"{m}_grid.png", "image/png",
                           key=f"dl_grid_{key}")
    if run_id:
        report_panel(run_id)


def report_panel(run_id: str) -> None:
    """Build the run's shareable HTML report on demand (also saved into the run's folder), then offer it."""
    made = run_store.report_path(run_id)
    if made is None:  # removed since this session computed it
        return
    if run_store.is_example(run_id):
        st.caption("A bundled example run: its report was built with it (`make assets`).")
    elif st.button("Build shareable report (HTML)", key=f"rep_build_{run_id}",
                 help="One self-contained file that opens offline in any browser: verdict, setting, data, KDE "
                      "diagnostics, grids, metrics with published numbers, heatmaps, probe accuracy."):
        with st.spinner("Building the report..."):
            build_report(run_id)
    if made.is_file():
        st.download_button("Download report (HTML)", made.read_bytes(), f"{run_id}.html", "text/html",
                           key=f"rep_dl_{run_id}")
        st.caption(f"Saved with the run: `{made}` ({made.stat().st_size / 2 ** 20:.1f} MB).")


def import_panel(s: state.Settings) -> None:
    """Upload a set made by other code (DatasetCondensation, MTT, FairDD, ...) and audit it on this split."""
    with st.expander("Import a set made elsewhere", expanded=bool(st.session_state.get("imp_job"))):
        st.caption(f"A synthetic set distilled from {s.dataset} at {s.ratio:.1%} conflicting, seed {s.seed} (the split "
                   "`python -m engine export-split` hands to other code), audited with this page's protocol beside the "
                   "native methods. Formats: a DatasetCondensation/FairDD/COBRA result .pt ({'data': [[images, "
                   "labels]]}), MTT's images_best.pt with labels_best.pt, a .pt/.safetensors with images and labels, "
                   "or ddaudit's synthetic.safetensors. Pickled objects are refused, never run. docs/IMPORT.md.")
        closed = roles.may_upload()
        if closed:
            roles.refuse(closed)
            return
        files = st.file_uploader("Set file(s)", type=list(import_jobs.SUFFIXES), accept_multiple_files=True,
                                 key="imp_files")
        c1, c2, c3 = st.columns([2, 2, 1])
        name = c1.text_input("Name", value="imported", key="imp_name", help="How the set is called in the tables.")
        norm = c2.selectbox("Images are", ("split", "unit"), key="imp_norm",
                            format_func={"split": "standardised with the split's mean/std (meta.json)",
                                         "unit": "pixels in [0, 1]"}.get,
                            help="Image files and uint8 tensors are pixels whatever is chosen; `audit-set "
                                 "--normalization mean=...,std=...` takes other statistics.")
        seeds = c3.number_input("Trainings", 1, 10, import_jobs.UI_EVAL_SEEDS, key="imp_seeds")
        job = jobs.registry().by_id(st.session_state.get("imp_job", ""))
        if job is not None and not job.done:
            jobs.live(job.id, jobs.progress_text, cancel="Cancel import")
            return
        if job is not None and job.status == "finished" and st.session_state.get("imp_shown") != job.id:
            st.session_state["imp_shown"] = st.session_state["results_run"] = job.id  # show it below
        if job is not None and job.status in ("failed", "cancelled"):
            problem, fix = jobs.error_text(job)
            st.error(f"{problem}\n\n**Fix:** {fix}", icon=":material/error:")
        if not files:
            return
        refusal = roles.may_upload([f.size for f in files])
        if refusal:
            roles.refuse(refusal)
            return
        try:
            path = import_jobs.save([import_jobs.Upload(f.name, f.getvalue()) for f in files])
            pair = state.require_dataset(s)
            if pair is None:
                return
            found = import_jobs.preview(path, pair[0], norm, name)
        except state.DDAuditError as exc:
            state.show_error(exc, "Cannot import this set: ")
            return
        src = found.source
        st.caption(f"Read as **{src['format']}**: {src['images']} images of shape "
                   f"{tuple(found.set.images.shape[1:])}, {len(set(found.set.labels.tolist()))} classes, "
                   f"images {norm}." + "".join(f" Warning: {w}." for w in found.warnings))
        if st.button("Audit this set", type="primary", key="imp_start"):
            try:
                job = import_jobs.start(s, path, name, norm, int(seeds), claimant=roles.claimant(),
                                        guest=roles.is_guest())
                roles.remember(job)
                st.session_state["imp_job"] = job.id
            except state.DDAuditError as exc:
                state.show_error(exc, "Cannot import this set: ")
                return
            st.rerun()


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Results")
    import_panel(s)
    src = sources()
    if not src:
        st.info("No evaluated run yet: start one on the Distill page with “Evaluate + audit” ticked.", icon=":material/info:")
        return
    labels = list(src)
    wanted = st.session_state.pop("results_run", None)
    if wanted is not None:
        match = [lab for lab, (k, h) in src.items() if h == wanted]
        if match:
            st.session_state["res_source"] = match[0]
    if st.session_state.get("res_source") not in labels:
        st.session_state["res_source"] = labels[0]
    label = st.selectbox("Results of", labels, key="res_source")
    kind, handle = src[label]
    res, run_id = load(kind, handle)
    if not is_audit(res):
        st.error("This run holds no evaluation results.\n\n**Fix:** pick another run, or run it again with "
                 "“Evaluate + audit” ticked.", icon=":material/error:")
        return
    draw_result(res, run_id, handle, src)


state.page("Results", draw)
