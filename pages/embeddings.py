"""Embeddings page: UMAP of SupCon embeddings, live KDE weights, diagnostics and a selection grid."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine import figures
from ui import jobs, maps, roles, run_store, state

COLOUR_BY = ("class", "attribute", "aligned / conflicting", "KDE density", "KDE weight")
QUICK_SELECT = ("map selection (lasso / box)", "all conflicting", "50 highest weights", "50 lowest weights")
TEMPERATURES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
GRID_MAX = 60


def controls(key: str, suggested: float) -> tuple[str, float, float]:
    """Colour-by, kernel variance and temperature widgets: (colour, kernel variance, temperature), the
    variance unrounded when the slider sits on the suggestion (what a run then uses)."""
    opts, mid = maps.kernel_variance_options(suggested)
    c1, c2, c3 = st.columns([2, 2, 1.2])
    colour = c1.radio("Colour by", COLOUR_BY, index=4, horizontal=True, key="emb_colour")
    s2 = c2.select_slider("Kernel variance s² (log scale)", options=opts, value=mid, key=f"emb_s2|{key}",
                          format_func=lambda v: f"{v:.3g}" + (" (suggested)" if v == mid else ""),
                          help="Gaussian KDE variance on the L2-normalised embeddings. Small: every sample "
                               "its own bump; large: one smooth blob per class.")
    temp = c3.select_slider("Temperature T", options=TEMPERATURES, value=1.0, key="emb_temperature",
                            help="w ∝ f^(-1/T): T = 1 is plain inverse density, large T tends to uniform.")
    chosen = maps.kde_choice(s2, mid)
    state.set_kde_choice(state.current(), chosen, temp)
    return colour, suggested if chosen is None else chosen, temp


def colour_values(colour: str, train, rows: np.ndarray, wres: dict) -> dict:
    """Arguments for figures.embedding_scatter for the chosen colouring."""
    if colour == "class":
        return dict(values=train.targets.numpy()[rows], kind="categorical", label="class",
                    categories=list(train.class_names))
    if colour == "attribute":
        return dict(values=train.attributes.numpy()[rows], kind="categorical", label="attribute",
                    categories=list(train.attribute_names))
    if colour == "aligned / conflicting":
        return dict(values=(~train.aligned.numpy()[rows]).astype(int), kind="categorical", label="sample",
                    categories=["aligned", "conflicting"])
    if colour == "KDE density":
        return dict(values=wres["log_density"][rows], kind="continuous", label="log KDE density")
    rel = figures.relative_weights(wres["weights"], train.targets.numpy())
    return dict(values=rel[rows], kind="continuous", label="weight × class size", log_colour=True)


def diagnostics_panel(train, wres: dict) -> None:
    """Conflict weight mass, ESS and the weight histogram."""
    d = wres["diagnostics"]
    n = int(d.get("n", len(train)))
    frac, mass = float(d["conflict_fraction"]), float(d["conflict_weight_mass"])
    ess = float(d["effective_sample_size"])
    c1, c2 = st.columns(2)
    c1.metric("conflict weight mass", f"{mass:.1%}", f"{mass / frac:.1f}× count share" if frac > 0 else None,
              delta_color="off", delta_arrow="off",
              help=f"Share of the total weight that the bias-conflicting samples receive; by count they are "
                   f"{frac:.2%} of the training set.")
    c2.metric("effective sample size", f"{ess:,.0f}", f"{ess / max(1, n):.0%} of {n:,}", delta_color="off",
              delta_arrow="off",
              help="Kish ESS (Σw)²/Σw² of the weights: how many equally weighted samples they are worth.")
    st.plotly_chart(figures.weight_histogram(wres["weights"], train.targets.numpy(), train.aligned.numpy()),
                    key="emb_hist")
    with st.expander("Per class"):
        per = pd.DataFrame(d.get("per_class", []))
        if len(per):
            per["class"] = [train.class_names[c] for c in per["class"]]
            ess_pc = d.get("effective_sample_size_per_class")
            if ess_pc and len(ess_pc) == len(per):
                per["ESS"] = np.round(ess_pc, 1)
            st.dataframe(per.set_index("class").style.format(
                {"conflict_fraction": "{:.1%}", "conflict_weight_mass": "{:.1%}"}))


def overlay_controls(s: state.Settings, key: str) -> tuple[str | None, list[str], bool, bool]:
    """Which stored run's synthetic sets go on the map, which methods, paths, thumbnails."""
    src = maps.overlay_sources(s)
    with st.expander("Synthetic sets on the map", expanded=bool(st.session_state.get("emb_overlay"))):
        if not src:
            st.caption("No finished run of this dataset, ratio and seed yet: distill one on the Distill page and "
                       "its synthetic images appear here, on the same map.")
            return None, [], False, False
        label = st.selectbox("Run", ["none"] + list(src), key="emb_overlay")
        if label == "none":
            return None, [], False, False
        c1, c2, c3 = st.columns([3, 1, 1])
        methods = run_store.stored_methods(src[label])
        chosen = c1.multiselect("Methods", methods, default=methods, key=f"emb_overlay_methods|{src[label]}")
        paths = c2.checkbox("Paths", value=True, key="emb_overlay_paths",
                            help="Each image's way from its start (open circle) through the track points to its "
                                 "final position (star).")
        thumbs = c3.checkbox("Images", value=False, key="emb_overlay_thumbs",
                             help="Draw the final synthetic images themselves at their positions.")
        st.caption("Synthetic images are embedded by the map's SupCon encoder and placed at the inverse-distance "
                   "weighted mean of the positions of their 10 nearest real images (a real image lands on its own "
                   "point). Select stars with the lasso or box to see the images below.")
        return src[label], chosen, paths, thumbs


def synthetic_selection(event, placed_images: dict) -> None:
    """The synthetic images picked on the map, in a grid."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    picked = [(m, i) for m, i in figures.trajectory.synthetic_points(points) if m in placed_images]
    if not picked:
        return
    st.subheader(f"Selected synthetic images: {len(picked)}")
    st.image([placed_images[m][i].transpose(1, 2, 0) for m, i in picked[:GRID_MAX]],
             caption=[f"{m} #{i}" for m, i in picked[:GRID_MAX]], width=84)


def selected_rows(event, row_ids: np.ndarray, train, wres: dict, mode: str) -> np.ndarray:
    """Training-row ids picked by the map selection or a quick selection."""
    if mode == "all conflicting":
        return np.flatnonzero(~train.aligned.numpy())
    if mode == "50 highest weights":
        rel = figures.relative_weights(wres["weights"], train.targets.numpy())
        return np.sort(np.argsort(-rel, kind="stable")[:50])
    if mode == "50 lowest weights":
        rel = figures.relative_weights(wres["weights"], train.targets.numpy())
        return np.sort(np.argsort(rel, kind="stable")[:50])
    try:  # the map's own trace is curve 0; synthetic overlays are the other curves
        points = list(event.selection.points) if event is not None else []
        pos = [p["point_index"] for p in points if p.get("curve_number", 0) == 0 and "point_index" in p]
    except (AttributeError, KeyError, TypeError):
        pos = []
    pos = [p for p in pos if 0 <= p < len(row_ids)]
    return np.asarray(row_ids[pos], dtype=np.int64)


def selection_panel(rows: np.ndarray, train, wres: dict) -> None:
    """The selected images in a grid with class, attribute, density and weight; ids as CSV."""
    if len(rows) == 0:
        st.caption("Draw a lasso or a box on the map (toolbar top right of the map) to see those images here.")
        return
    rel = figures.relative_weights(wres["weights"], train.targets.numpy())
    df = pd.DataFrame({
        "row_id": rows,
        "class": [train.class_names[c] for c in train.targets.numpy()[rows]],
        "attribute": [train.attribute_names[a] for a in train.attributes.numpy()[rows]],
        "aligned": train.aligned.numpy()[rows],
        "log_density": wres["log_density"][rows],
        "weight": wres["weights"][rows],
        "weight_x_class_size": rel[rows],
    })
    n_conf = int((~df["aligned"]).sum())
    st.subheader(f"Selection: {len(rows)} images ({n_conf} conflicting)")
    shown = rows[:GRID_MAX]
    imgs = [img.transpose(1, 2, 0) for img in train.images.numpy()[shown]]
    caps = [f"{c}·{a[:6]} w×n {w:.2g}" for c, a, w in
            zip(df["class"][:GRID_MAX], df["attribute"][:GRID_MAX], df["weight_x_class_size"][:GRID_MAX])]
    st.image(imgs, caption=caps, width=84)
    st.caption("Caption: class · attribute, then weight × class size (1 = uniform). Row ids, log densities "
               "and weights are in the table.")
    if len(rows) > GRID_MAX:
        st.caption(f"Showing the first {GRID_MAX} of {len(rows)}; the table and CSV hold all of them.")
    st.dataframe(df.set_index("row_id"), height=240)
    st.download_button("Download selected ids (CSV)", df.to_csv(index=False).encode(), "selection.csv",
                       "text/csv", key="emb_csv")


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Embeddings")
    pair = state.require_dataset(s)
    if pair is None:
        return
    train, _ = pair
    key = maps.map_key(s)
    known = jobs.registry().get(key)
    refusal = roles.may_map(s.dataset) if known is None or known.status != "finished" else None
    if refusal:
        roles.refuse(refusal)
        return
    job = maps.start_map_job(s, train)
    if job.status in ("failed", "cancelled"):
        problem, fix = jobs.error_text(job)
        st.error(f"Could not build the embedding map: {problem}\n\n**Fix:** {fix}", icon=":material/error:")
        if st.button("Retry", key="emb_retry"):
            jobs.registry().forget(key)
            st.rerun()
        return
    if not job.done:
        jobs.live(job.id, jobs.progress_text,
                  note="Training the SupCon surrogate and the UMAP map; other pages stay usable meanwhile. "
                       "Both are cached: next time this is instant.")
        return
    res = job.result
    z, labels, aligned = res["z"], train.targets, train.aligned
    on_map = f"{len(res['row_ids']):,} on the map (every conflicting sample kept)"
    st.caption(f"{len(z):,} SupCon embeddings (dimension {z.shape[1]}), {on_map}. "
               "Sliders recompute the KDE weights live.")
    colour, s2, temp = controls(key, res["suggested"])
    wres = maps.weights_for(key, s2, temp, z, labels, aligned)
    rel_all = figures.relative_weights(wres["weights"], labels.numpy())
    # drawn order: conflicting and high-weight points last (on top) and larger (figures.map_emphasis)
    order, sizes = figures.map_emphasis(rel_all[res["row_ids"]], ~aligned.numpy()[res["row_ids"]])
    rows, coords = res["row_ids"][order], res["coords"][order]
    names_c = np.asarray(train.class_names, dtype=object)[labels.numpy()[rows]]
    names_a = np.asarray(train.attribute_names, dtype=object)[train.attributes.numpy()[rows]]
    fig = figures.embedding_scatter(coords, rows, hover={"class": names_c, "attribute": names_a,
                                                         "w×n": np.round(rel_all[rows], 3)},
                                    sizes=sizes[order], **colour_values(colour, train, rows, wres))
    zoom = st.selectbox("Zoom to class", ["all classes"] + list(train.class_names), key=f"emb_zoom|{key}",
                        help="Frame one class's points (its blob and the conflicting images at its edge; the 2% "
                             "farthest out on each side may fall outside); the map's toolbar zooms freely, "
                             "double-click resets.")
    if zoom != "all classes":
        ranges = figures.class_zoom(coords, labels.numpy()[rows], list(train.class_names).index(zoom), tail=0.02)
        if ranges:
            fig.update_layout(xaxis_range=ranges[0], yaxis_range=ranges[1])
    run_id, methods, paths, thumbs = overlay_controls(s, key)
    images = {}
    if run_id is not None and methods:
        placed, images = maps.placed_sets(key, run_id, train, z[res["row_ids"]], res["coords"], s.seed)
        placed = {m: placed[m] for m in methods if m in placed}
        fig = figures.trajectory.add_synthetic(fig, placed, list(train.class_names), paths=paths,
                                               thumbnails={m: images[m] for m in placed} if thumbs else None)
    left, right = st.columns([3, 2])
    with left:
        event = st.plotly_chart(fig, key=f"emb_map|{key}", on_select="rerun", selection_mode=("lasso", "box"))
    with right:
        diagnostics_panel(train, wres)
    synthetic_selection(event, images)
    mode = st.radio("Show", QUICK_SELECT, horizontal=True, key="emb_select_mode")
    selection_panel(selected_rows(event, rows, train, wres, mode), train, wres)


state.page("Embeddings", draw)
