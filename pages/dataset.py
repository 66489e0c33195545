"""Dataset page: class x attribute counts (train, test), aligned / conflicting samples, headline numbers."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.data import BiasedSplit
from engine import example, figures
from ui import distill_jobs, distill_view, jobs, roles, run_store, state

DEMO_STORY = """In **colored-digits** 95% of each digit's training images are drawn in that digit's own colour: colour
predicts the class. The demo distils five synthetic images per digit from pure **noise** with three methods side by
side. **Vanilla** distribution matching copies what dominates: within a few dozen iterations nearly all its images
take their digit's colour (the curve: its share of bias-aligned images, read by an attribute probe, jumps from
about 10% to the real data's level, the dotted line, or above) and a network trained on them fails on digits of
other colours. **KDE** reweighting (no
bias labels: it up-weights rare-looking images) and **FairDD** (bias labels: every colour group weighs the same)
keep the colours mixed."""


def headline(train: BiasedSplit, test: BiasedSplit) -> None:
    """The numbers a user checks first."""
    n_conf = int((~train.aligned).sum())
    counts = train.counts()
    cols = st.columns(5)
    cols[0].metric("training images", f"{len(train):,}")
    cols[1].metric("conflicting (train)", f"{n_conf:,}", f"{n_conf / max(1, len(train)):.2%} of train",
                   delta_color="off", delta_arrow="off")
    cols[2].metric("test images (balanced)", f"{len(test):,}")
    cols[3].metric("classes × attributes", f"{train.num_classes} × {train.num_attributes}")
    per_class = counts.sum(1)
    cols[4].metric("images per class (train)", f"{per_class.min():,}–{per_class.max():,}")


def demo_job() -> jobs.Job | None:
    """The demo run this server has (running or done), newest first."""
    return next((j for j in jobs.registry().jobs("distill") if j.config.get("demo")), None)


def bundled_demo() -> None:
    """The demo's finished form from the bundled example: aligned share against iterations and the grids."""
    rid = run_store.example_run("demo")
    res = run_store.results(rid) if rid else {}
    if not res.get("trajectory"):
        st.caption("Press the button to run it (no bundled example installed to show its finished form).")
        return
    st.caption("Its finished form, from the bundled example (`make assets` ran it):")
    left, right = st.columns([1, 1])
    left.plotly_chart(figures.trajectory.trajectory_curves({"demo": res["trajectory"]}, "aligned_share",
                                                           res.get("real_aligned_share")), key="demo_bundled_curve")
    grids = run_store.grids(rid)
    for col, (m, p) in zip(right.columns(max(1, len(grids))), grids.items()):
        acc = (res.get("methods", {}).get(m) or {}).get("conflicting_accuracy")
        col.image(str(p), caption=f"{m}" + (f" · {acc:.0f}% on conflicting" if isinstance(acc, (int, float)) else ""))


def demo_panel() -> None:
    """"Watch the bias amplify": the story, one button that runs the noise-start demo live, its result."""
    job = demo_job()
    with st.expander("Watch the bias amplify: a demo for teaching (about a minute or two on 2 cores)", expanded=True):
        st.markdown(DEMO_STORY)
        req = example.demo_request(state.preset("quick"))
        if job is None or job.status in ("failed", "cancelled"):
            if job is not None:
                problem, fix = jobs.error_text(job)
                st.warning(f"{problem}\n\n**Next:** {fix}", icon=":material/stop_circle:")
            if st.button("Run the demo", type="primary", key="demo_start",
                         help="colored-digits at 5% conflicting, seed 0, noise start, 200 iterations, the aligned "
                              "share every 40, one evaluation training per set (the same request as "
                              "`python -m engine audit --dataset colored-digits --conflict-ratio 0.05 --methods "
                              "vanilla,kde,fairdd --ipc 5 --init noise --iterations 200 --track-every 40 "
                              "--eval-seeds 1 --no-baseline`)."):
                try:
                    train = state.load_pair(req.dataset, req.conflict_ratio, req.seed)[0]
                    job = distill_jobs.start_request(req, "audit", train, label="Watch the bias amplify (demo)",
                                                     claimant=roles.claimant())
                    job.config["demo"] = True
                except state.DDAuditError as exc:
                    state.show_error(exc, "Could not start the demo: ")
                    return
                st.rerun()
            bundled_demo()
        elif not job.done:
            jobs.live(job.id, jobs.progress_text, distill_view.live_curves, cancel="Cancel demo",
                      note="Watch the right-hand curve: vanilla's share of bias-aligned images rises while KDE's "
                           "and FairDD's stay low. Other pages stay usable.")
        else:
            distill_view.show_result(job)


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Dataset")
    demo_panel()
    stat = state.statuses().get(s.dataset, {})
    st.caption(roles.scrub(f"**{s.dataset}**: {stat.get('description', '')} · source: {stat.get('source', '?')}"))
    pair = state.require_dataset(s)
    if pair is None:
        return
    train, test = pair
    headline(train, test)

    left, right = st.columns(2)
    left.plotly_chart(figures.count_heatmap(train.counts(), train.class_names, train.attribute_names,
                                            f"train: class × attribute (ratio {s.ratio:.1%})",
                                            train.aligned_attribute), key="counts_train")
    right.plotly_chart(figures.count_heatmap(test.counts(), test.class_names, test.attribute_names,
                                             "test: class × attribute (balanced)", test.aligned_attribute),
                       key="counts_test")
    st.caption("Boxed cells are each class's bias-aligned attribute; colour is log-scaled so the few "
               "conflicting images stay visible.")

    per_class = st.slider("Samples per class", 1, 8, 3, key="ds_per_class")
    targets = train.targets.numpy()
    aligned = train.aligned.numpy()
    images = train.images.numpy()
    a, c = st.columns(2)
    with a:
        st.subheader("Bias-aligned samples")
        idx = figures.sample_indices(targets, aligned, per_class, s.seed)
        st.image(figures.tile_images(images[idx], ncols=per_class * 2, scale=2),
                 caption=f"{len(idx)} aligned images, {per_class} per class, class by class")
    with c:
        st.subheader("Bias-conflicting samples")
        idx = figures.sample_indices(targets, ~aligned, per_class, s.seed)
        if len(idx):
            st.image(figures.tile_images(images[idx], ncols=per_class * 2, scale=2),
                     caption=f"{len(idx)} conflicting images (up to {per_class} per class)")
        else:
            st.info("No conflicting images in this split.")
    with st.expander("Counts as a table"):
        df = pd.DataFrame(train.counts(), index=list(train.class_names), columns=list(train.attribute_names))
        st.dataframe(df)
        st.download_button("Download train counts (CSV)", df.to_csv().encode(), "train_counts.csv", "text/csv")


state.page("Dataset", draw)
