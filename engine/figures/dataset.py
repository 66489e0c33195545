"""Pure figure builders of the Dataset and Embeddings pages: the split's counts, the map of the SupCon
embeddings coloured by KDE density and weight, the weights' histogram. Data in, plotly figure out."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .. import images
from .common import ALIGNED_COLOURS, CONTINUOUS, LAYOUT, _discrete_scale, categorical_colours


tile_images = images.tile  # the engine's one tiler (uint8 N x C x H x W -> H' x W' x 3)
png_bytes = images.png_bytes


def count_heatmap(counts: np.ndarray, class_names: Sequence[str], attribute_names: Sequence[str],
                  title: str, aligned_attribute: Sequence[int] | None = None) -> go.Figure:
    """Class x attribute count heatmap (log colour so the few conflicting cells show); aligned cells boxed."""
    counts = np.asarray(counts)
    z = np.log10(counts.astype(float) + 1.0)
    # the scale starts at 0 images: a balanced split (34, 35, 36 per cell) looks balanced, not contrasted
    fig = go.Figure(go.Heatmap(
        z=z, x=list(attribute_names), y=list(class_names), text=counts.astype(int), texttemplate="%{text}",
        customdata=counts, colorscale=CONTINUOUS, showscale=True, zmin=0, zmax=max(float(z.max()), 1.0),
        colorbar=dict(title="count", tickvals=[0, 1, 2, 3, 4], ticktext=["0", "9", "99", "999", "9999"]),
        hovertemplate="class %{y}<br>attribute %{x}<br>%{customdata} images<extra></extra>"))
    if aligned_attribute is not None:
        for c, a in enumerate(aligned_attribute):
            fig.add_shape(type="rect", x0=a - 0.5, x1=a + 0.5, y0=c - 0.5, y1=c + 0.5,
                          line=dict(color="#D55E00", width=2))
    fig.update_layout(title=title, xaxis_title="bias attribute", yaxis_title="class",
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category"),
                      height=420, **LAYOUT)
    return fig


def map_emphasis(rel_weights: np.ndarray, conflicting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(draw order, marker sizes) that keep the map's story visible: points are drawn aligned first, then
    conflicting, each by rising weight (later points sit on top), and sized 4 px at or below the uniform
    weight up to 12 px at 30x it; a conflicting point is never smaller than 8 px."""
    rel = np.asarray(rel_weights, float)
    conflicting = np.asarray(conflicting, bool)
    order = np.lexsort((rel, conflicting))  # last key first: conflicting, then weight
    grow = np.clip(np.log10(np.clip(rel, 1e-12, None)) / np.log10(30.0), 0.0, 1.0)
    sizes = 4.0 + 8.0 * grow
    sizes = np.where(conflicting, np.maximum(sizes, 8.0), sizes)
    return order, sizes


def class_zoom(coords: np.ndarray, labels: np.ndarray, cls: int, margin: float = 0.08, tail: float = 0.0
               ) -> tuple[list[float], list[float]] | None:
    """Axis ranges (x, y) framing one class's points with a margin, leaving out the `tail` share of points
    farthest out on each side (a stray point elsewhere on the map would otherwise zoom out to all of it);
    None when the class has no point."""
    pts = np.asarray(coords, float)[np.asarray(labels) == cls]
    if not len(pts):
        return None
    lo, hi = np.quantile(pts, tail, axis=0), np.quantile(pts, 1 - tail, axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0])], [float(lo[1] - pad[1]), float(hi[1] + pad[1])]


def embedding_scatter(coords: np.ndarray, row_ids: np.ndarray, values: np.ndarray, *, kind: str,
                      label: str, categories: Sequence[str] | None = None,
                      hover: Mapping[str, Sequence] | None = None, log_colour: bool = False,
                      sizes: np.ndarray | float = 5) -> go.Figure:
    """UMAP map as ONE Scattergl trace; customdata[:, 0] = stable row id; kind 'categorical' or 'continuous';
    points drawn in the given order (the last on top), `sizes` per point (map_emphasis) or one size."""
    coords = np.asarray(coords, float)
    row_ids = np.asarray(row_ids)
    values = np.asarray(values)
    extra = list(hover or {})
    custom = np.column_stack([row_ids] + [np.asarray(hover[k], dtype=object) for k in extra]) if extra else row_ids[:, None]
    hovertemplate = "row %{customdata[0]}" + "".join(
        f"<br>{k} %{{customdata[{i + 1}]}}" for i, k in enumerate(extra)) + "<extra></extra>"
    if kind == "categorical":
        cats = list(categories or sorted({str(v) for v in values}))
        colours = categorical_colours(len(cats))
        k = len(cats)
        marker = dict(color=values.astype(float), colorscale=_discrete_scale(colours), cmin=-0.5, cmax=k - 0.5,
                      size=sizes, opacity=0.8,
                      colorbar=dict(title=label, tickvals=list(range(k)), ticktext=cats, len=0.9))
    else:
        v = values.astype(float)
        shown = np.log10(np.clip(v, 1e-300, None)) if log_colour else v
        marker = dict(color=shown, colorscale=CONTINUOUS, size=sizes, opacity=0.85,
                      colorbar=dict(title=("log10 " if log_colour else "") + label, len=0.9))
    fig = go.Figure(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", marker=marker,
                                 customdata=custom, hovertemplate=hovertemplate, name="samples"))
    fig.update_layout(xaxis=dict(title="UMAP 1", showticklabels=False, zeroline=False),
                      yaxis=dict(title="UMAP 2", showticklabels=False, zeroline=False),
                      dragmode="lasso", height=640, title=f"coloured by {label}", **LAYOUT)
    return fig


def relative_weights(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """weight x class size: 1 means the uniform weight of the sample's class."""
    weights = np.asarray(weights, float)
    labels = np.asarray(labels)
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
    return weights * sizes[labels] if labels.size else weights


def weight_histogram(weights: np.ndarray, labels: np.ndarray, aligned: np.ndarray, bins: int = 40) -> go.Figure:
    """Histogram of log10(weight x class size) for aligned vs conflicting samples (each normalised)."""
    rel = relative_weights(weights, labels)
    aligned = np.asarray(aligned, bool)
    logw = np.log10(np.clip(rel, 1e-12, None))
    lo, hi = (float(logw.min()), float(logw.max())) if logw.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for name, mask in (("aligned", aligned), ("conflicting", ~aligned)):
        counts, _ = np.histogram(logw[mask], bins=edges)
        share = counts / max(1, mask.sum())
        fig.add_bar(x=centres, y=share, name=f"{name} ({int(mask.sum())})", marker_color=ALIGNED_COLOURS[name],
                    opacity=0.75, width=(edges[1] - edges[0]),
                    hovertemplate=f"{name}<br>log10 rel. weight %{{x:.2f}}<br>share %{{y:.1%}}<extra></extra>")
    fig.add_vline(x=0.0, line_dash="dot", line_color="#555", annotation_text="uniform")
    fig.update_layout(barmode="overlay", title="weights: aligned vs conflicting",
                      xaxis_title="log10(weight × class size)", yaxis_title="share of group", yaxis_tickformat=".0%",
                      legend=dict(orientation="h", y=-0.25), height=330, **LAYOUT)
    return fig


def sample_indices(targets: np.ndarray, mask: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Up to `per_class` seeded row indices per class among rows where mask is true, class by class."""
    targets = np.asarray(targets)
    mask = np.asarray(mask, bool)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(targets):
        idx = np.flatnonzero((targets == c) & mask)
        out.append(np.sort(rng.permutation(idx)[:per_class]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
