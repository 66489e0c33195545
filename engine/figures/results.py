"""Pure figure and table builders of a run's results (Distill, Results and Runs pages, the report): loss
curves, the metrics table and bars, per-group accuracy heatmaps. Data in, plotly figure (or frame) out."""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import data
from ..results import LABELS, ordered
from .common import CONTINUOUS, LAYOUT, NO_SPREAD, SAFE, log_axis, method_colour


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
                      yaxis=log_axis(positive) if log_y else dict(type="linear"), height=320,
                      legend=dict(orientation="h", y=-0.3), **LAYOUT)
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
                      height=380 + 12 * len(class_names), **{**LAYOUT, "margin": dict(l=10, r=10, t=80, b=10)})
    return fig


def metrics_bars(df: pd.DataFrame, columns: Sequence[str] = ("accuracy", "aligned", "conflicting", "worst group")) -> go.Figure:
    """Grouped bar chart: one group per metric, one bar per method."""
    fig = go.Figure()
    cols = [c for c in columns if c in df.columns]
    for i, m in enumerate(df.index):
        fig.add_bar(x=cols, y=[df.loc[m, c] for c in cols], name=str(m), marker_color=method_colour(str(m), i),
                    hovertemplate=f"{m}<br>%{{x}} %{{y:.1f}}%<extra></extra>")
    fig.update_layout(barmode="group", title="accuracy by method (%)", yaxis=dict(range=[0, 100], title="%"),
                      height=360, legend=dict(orientation="h", y=-0.2), **LAYOUT)
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
                      yaxis=dict(range=[0, 100], title="%"), height=320, showlegend=False, **LAYOUT)
    return fig


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
                      legend=dict(orientation="h", y=-0.25), **LAYOUT)
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
