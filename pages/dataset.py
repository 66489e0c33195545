"""Dataset page: class x attribute counts (train, test), aligned / conflicting samples, headline numbers."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.data import BiasedSplit
from engine import figures
from ui import state


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


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Dataset")
    stat = state.statuses().get(s.dataset, {})
    st.caption(f"**{s.dataset}**: {stat.get('description', '')} · source: {stat.get('source', '?')}")
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
