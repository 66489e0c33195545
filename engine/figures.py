"""Pure figure and table builders: data in, plotly figure (or array / frame) out; no streamlit."""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import data, distill, images
from .results import LABELS, ordered

# Okabe-Ito + Paul Tol "safe": colour-blind-safe categorical colours (12).
SAFE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
        "#88CCEE", "#882255", "#44AA99", "#999933")
ALIGNED_COLOURS = {"aligned": "#56B4E9", "conflicting": "#D55E00"}
CONTINUOUS = "Viridis"
BASELINE_COLOURS = {"random": "#CC79A7", "full": "#009E73"}
NO_SPREAD = "none (1 training)"  # the ± std cell of a set evaluated once: no spread, not a spread of 0
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")


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
                      height=420, **_LAYOUT)
    return fig


tile_images = images.tile  # the engine's one tiler (uint8 N x C x H x W -> H' x W' x 3)
png_bytes = images.png_bytes


def categorical_colours(n: int) -> list[str]:
    """n colour-blind-safe colours (cycled when n > 12)."""
    return [SAFE[i % len(SAFE)] for i in range(n)]


def _discrete_scale(colours: Sequence[str]) -> list[list]:
    """A stepped colorscale mapping integer codes 0..k-1 to colours."""
    k = len(colours)
    scale = []
    for i, c in enumerate(colours):
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale


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
                      dragmode="lasso", height=640, title=f"coloured by {label}", **_LAYOUT)
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
                      legend=dict(orientation="h", y=-0.25), height=330, **_LAYOUT)
    return fig


def method_colour(method: str, i: int = 0) -> str:
    """A stable colour per method name: the registry's, the baselines', else one of the safe palette."""
    if method in distill.REGISTRY:
        return distill.REGISTRY[method].colour
    return BASELINE_COLOURS.get(method, SAFE[(i + 4) % len(SAFE)])


def loss_curves(history: Mapping[str, Sequence[tuple[int, float]]]) -> go.Figure:
    """Loss vs iteration, one line per method; log y whenever every loss is positive, so methods whose
    losses differ 10x (FairDD ~400, vanilla ~30 on colored-digits) each keep their shape."""
    fig = go.Figure()
    allv = []
    for i, (method, pts) in enumerate(history.items()):
        if not pts:
            continue
        steps, losses = zip(*pts)
        allv += [v for v in losses if v is not None and np.isfinite(v)]
        fig.add_scatter(x=list(steps), y=list(losses), mode="lines", name=method,
                        line=dict(color=method_colour(method, i), width=2))
    positive = [v for v in allv if v > 0]
    log_y = len(positive) == len(allv) and len(positive) > 1
    fig.update_layout(title="matching loss", xaxis_title="iteration", yaxis_title="loss",
                      yaxis_type="log" if log_y else "linear", height=320,
                      legend=dict(orientation="h", y=-0.3), **_LAYOUT)
    return fig


def metrics_frame(results: Mapping) -> pd.DataFrame:
    """Per-method metrics table (percent) from an audit result dict; index = method."""
    methods = results.get("methods", {}) or {}
    rows = []
    for m in ordered(list(methods)):
        r = methods[m] or {}
        row = {"method": m}
        for key, col in LABELS.items():
            v = r.get(key)
            row[col] = float(v) if isinstance(v, (int, float)) and v is not None else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["method", *LABELS.values()]).set_index("method")
    seeds = results.get("eval_seeds")
    if isinstance(seeds, list) and len(seeds) < 2:
        df["± std"] = np.nan  # one training has no spread: shown as NO_SPREAD, never as "0.0"
    real = results.get("real_aligned_share")
    if real is not None:
        df["real aligned share"] = float(real)
    return df


def metrics_text(df: pd.DataFrame) -> pd.DataFrame:
    """metrics_frame as the table shows it: one decimal, "–" for a missing number and NO_SPREAD in the
    ± std column of a set evaluated once (a table widget draws a bare NaN as "None")."""
    def cell(v: float, missing: str) -> str:
        return missing if pd.isna(v) else f"{v:.1f}"
    return pd.DataFrame({col: [cell(v, NO_SPREAD if col == "± std" else "–") for v in df[col]] for col in df.columns},
                        index=df.index)


def accuracy_heatmaps(group_acc: Mapping[str, np.ndarray], class_names: Sequence[str],
                      attribute_names: Sequence[str]) -> go.Figure:
    """Class x attribute accuracy heatmaps side by side, ONE shared colour scale 0..100; NaN = empty cell."""
    methods = ordered(list(group_acc))
    n = max(1, len(methods))
    fig = make_subplots(rows=1, cols=n, subplot_titles=methods or ["(no methods)"], shared_yaxes=True,
                        horizontal_spacing=0.02)
    for i, m in enumerate(methods):
        z = np.array(group_acc[m], dtype=float)
        text = np.where(np.isnan(z), "–", np.vectorize(lambda v: f"{v:.0f}")(np.nan_to_num(z)))
        fig.add_trace(go.Heatmap(z=z, x=list(attribute_names), y=list(class_names), coloraxis="coloraxis",
                                 text=text, texttemplate="%{text}", textfont=dict(size=9),
                                 hovertemplate=f"{m}<br>class %{{y}}<br>attribute %{{x}}<br>accuracy %{{z:.1f}}%"
                                               "<extra></extra>"), row=1, col=i + 1)
        fig.update_xaxes(type="category", row=1, col=i + 1)
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=i + 1)
    fig.update_layout(coloraxis=dict(colorscale=CONTINUOUS, cmin=0, cmax=100, colorbar=dict(title="acc %")),
                      title="accuracy per (class, attribute) on the balanced test set",
                      height=380 + 12 * len(class_names), **{**_LAYOUT, "margin": dict(l=10, r=10, t=80, b=10)})
    return fig


def metrics_bars(df: pd.DataFrame, columns: Sequence[str] = ("accuracy", "aligned", "conflicting", "worst group")) -> go.Figure:
    """Grouped bar chart: one group per metric, one bar per method."""
    fig = go.Figure()
    cols = [c for c in columns if c in df.columns]
    for i, m in enumerate(df.index):
        fig.add_bar(x=cols, y=[df.loc[m, c] for c in cols], name=str(m), marker_color=method_colour(str(m), i),
                    hovertemplate=f"{m}<br>%{{x}} %{{y:.1f}}%<extra></extra>")
    fig.update_layout(barmode="group", title="accuracy by method (%)", yaxis=dict(range=[0, 100], title="%"),
                      height=360, legend=dict(orientation="h", y=-0.2), **_LAYOUT)
    return fig


def aligned_share_bars(df: pd.DataFrame) -> go.Figure:
    """Synthetic aligned share per method against the real training set's share (the amplification)."""
    fig = go.Figure()
    if "synthetic aligned share" in df.columns:
        fig.add_bar(x=list(df.index), y=list(df["synthetic aligned share"]),
                    marker_color=[method_colour(str(m), i) for i, m in enumerate(df.index)], name="synthetic")
    if "real aligned share" in df.columns and len(df):
        fig.add_hline(y=float(df["real aligned share"].iloc[0]), line_dash="dash", line_color="#D55E00",
                      annotation_text="real training set")
    fig.update_layout(title="share of synthetic images with their class's aligned attribute (%)",
                      yaxis=dict(range=[0, 100], title="%"), height=320, showlegend=False, **_LAYOUT)
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


def runs_comparison(frames: Mapping[str, pd.DataFrame],
                    metrics: Sequence[str] = ("accuracy", "conflicting", "worst group")) -> go.Figure:
    """Compare runs: one panel per metric, x = method, one bar colour per run."""
    metrics = [m for m in metrics if any(m in df.columns for df in frames.values())] or ["accuracy"]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, shared_yaxes=True)
    for i, (run, df) in enumerate(frames.items()):
        for j, metric in enumerate(metrics):
            if metric not in df.columns:
                continue
            fig.add_bar(x=list(df.index), y=list(df[metric]), name=str(run), legendgroup=str(run),
                        showlegend=j == 0, marker_color=SAFE[i % len(SAFE)], row=1, col=j + 1,
                        hovertemplate=f"{run}<br>%{{x}} {metric} %{{y:.1f}}%<extra></extra>")
    fig.update_yaxes(range=[0, 100])
    fig.update_layout(barmode="group", title="runs compared (%)", height=380,
                      legend=dict(orientation="h", y=-0.25), **_LAYOUT)
    return fig


def group_matrix(values: Sequence | None, rows: int, cols: int) -> np.ndarray:
    """A class x attribute matrix from nested lists with None for empty cells -> float array with NaN."""
    out = np.full((rows, cols), np.nan)
    if values is None:
        return out
    for i, row in enumerate(list(values)[:rows]):
        for j, v in enumerate(list(row)[:cols]):
            if isinstance(v, (int, float)) and v is not None and math.isfinite(float(v)):
                out[i, j] = float(v)
    return out


def heatmaps_png(group_acc: Mapping[str, np.ndarray], class_names: Sequence[str], attribute_names: Sequence[str],
                 cell: int = 28) -> bytes:
    """The accuracy heatmaps as one PNG (PIL, no browser): one shared 0..100 Viridis scale, '-' = empty."""
    from PIL import Image, ImageDraw, ImageFont
    from plotly.colors import sample_colorscale, unlabel_rgb
    methods = ordered(list(group_acc))
    nr, nc = len(class_names), len(attribute_names)
    left, top, gap = 70, 40, 20
    width = left + len(methods) * (nc * cell + gap) + 10
    height = top + nr * cell + 70
    img = Image.new("RGB", (max(width, 200), height), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for r, name in enumerate(class_names):
        d.text((4, top + r * cell + cell // 3), str(name)[:9], fill="black", font=font)
    for k, m in enumerate(methods):
        x0 = left + k * (nc * cell + gap)
        d.text((x0, 10), m, fill="black", font=font)
        z = np.asarray(group_acc[m], dtype=float)
        for r in range(nr):
            for c in range(nc):
                v = z[r, c] if r < z.shape[0] and c < z.shape[1] else np.nan
                box = (x0 + c * cell, top + r * cell, x0 + (c + 1) * cell - 1, top + (r + 1) * cell - 1)
                if np.isnan(v):
                    d.rectangle(box, fill=(235, 235, 235))
                    d.text((box[0] + cell // 3, box[1] + cell // 3), "-", fill="black", font=font)
                    continue
                rgb = tuple(int(x) for x in unlabel_rgb(sample_colorscale(CONTINUOUS, [min(max(v, 0), 100) / 100])[0]))
                d.rectangle(box, fill=rgb)
                light = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) > 140
                d.text((box[0] + 3, box[1] + cell // 3), f"{v:.0f}", fill="black" if light else "white", font=font)
        for c, name in enumerate(attribute_names):
            d.text((x0 + c * cell + 2, top + nr * cell + 4 + (c % 2) * 12), str(name)[:4], fill="black", font=font)
    d.text((left, height - 24), "accuracy % per (class row, attribute column); shared scale 0 (purple) .. 100 (yellow)",
           fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_attribute_names(res: dict) -> tuple[list[str], list[str]]:
    """Class and attribute names of the result's dataset."""
    spec = data.REGISTRY.get(res.get("dataset", ""))
    if spec is not None:
        return list(spec.class_names), list(spec.attribute_names)
    mat = next((np.asarray(v.get("group_accuracy") or [[]], dtype=object) for v in res["methods"].values()
                if isinstance(v, dict)), np.zeros((0, 0)))
    return [str(i) for i in range(mat.shape[0])], [str(j) for j in range(mat.shape[1] if mat.ndim == 2 else 0)]
