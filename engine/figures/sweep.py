"""Pure figure builders for a sweep's tidy rows and summary (engine/sweep.py): data in, plotly out."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import log_axis, method_colour

METRIC_LABELS = {"conflicting_accuracy": "conflicting accuracy (%)", "worst_group_accuracy": "worst-group accuracy (%)",
                 "accuracy": "accuracy (%)", "synthetic_aligned_share": "synthetic aligned share (%)"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def by_kernel_variance(rows: Sequence[dict], metric: str) -> pd.DataFrame:
    """Mean and std over seeds of `metric` per (ratio, IPC, method, kernel variance) of the weighted methods,
    at the kernel variance actually used (a 'suggested' one sits at its resolved value)."""
    df = pd.DataFrame([r for r in rows if r.get("kernel_variance") is not None])
    if df.empty:
        return pd.DataFrame(columns=["conflict_ratio", "ipc", "method", "kernel_variance", "x", "mean", "std", "n"])
    df["kernel_variance"] = df["kernel_variance"].astype(str)
    g = df.groupby(["conflict_ratio", "ipc", "method", "kernel_variance"], sort=True)
    out = g.agg(x=("kernel_variance_used", "mean"), mean=(metric, "mean"), std=(metric, "std"),
                n=(metric, "count")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out.sort_values(["conflict_ratio", "ipc", "method", "x"]).reset_index(drop=True)


def _references(rows: Sequence[dict], metric: str) -> pd.DataFrame:
    """Mean over seeds of the methods that do not depend on the kernel variance (vanilla, random, ...)."""
    df = pd.DataFrame([r for r in rows if r.get("kernel_variance") is None])
    if df.empty:
        return pd.DataFrame(columns=["conflict_ratio", "ipc", "method", "mean"])
    return df.groupby(["conflict_ratio", "ipc", "method"])[metric].mean().rename("mean").reset_index()


def metric_vs_kernel_variance(rows: Sequence[dict], metric: str = "conflicting_accuracy") -> go.Figure:
    """The outcome against the kernel variance (log x), one line per ratio (mean +- std over seeds), and the
    variance-free methods of each ratio as flat dashed lines for reference."""
    table, refs = by_kernel_variance(rows, metric), _references(rows, metric)
    fig = go.Figure()
    ratios = sorted(set(table["conflict_ratio"]) | set(refs["conflict_ratio"]))
    for i, ((ratio, ipc, method), part) in enumerate(table.groupby(["conflict_ratio", "ipc", "method"])):
        dash = DASHES[ratios.index(ratio) % len(DASHES)]
        fig.add_trace(go.Scatter(
            x=part["x"], y=part["mean"], error_y=dict(type="data", array=part["std"], visible=True),
            mode="lines+markers", name=f"{method} @ {ratio:.1%} (IPC {ipc})",
            line=dict(color=method_colour(method, i), dash=dash),
            customdata=part[["kernel_variance", "n"]].to_numpy(),
            hovertemplate="s² %{x:.3g} (%{customdata[0]})<br>%{y:.1f} ± %{error_y.array:.1f} over %{customdata[1]} "
                          "seed(s)<extra></extra>"))
    xs = [x for x in table["x"] if isinstance(x, (int, float)) and x > 0]
    for i, r in refs.iterrows():
        if xs:
            dash = DASHES[ratios.index(r["conflict_ratio"]) % len(DASHES)]
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[r["mean"]] * 2, mode="lines", opacity=0.6,
                                     name=f"{r['method']} @ {r['conflict_ratio']:.1%} (IPC {r['ipc']})",
                                     line=dict(color=method_colour(r["method"], i), dash="dot" if dash == "solid" else dash, width=1)))
    fig.update_layout(xaxis=log_axis(table["x"]), xaxis_title="kernel variance s² (log)",
                      yaxis_title=METRIC_LABELS.get(metric, metric),
                      height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(font=dict(size=10)))
    return fig


def weights_vs_kernel_variance(rows: Sequence[dict]) -> go.Figure:
    """The weight-only view of the same variances: conflict weight mass and effective sample size."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("conflict weight mass", "effective sample size"))
    for col, key in ((1, "weights_conflict_weight_mass"), (2, "weights_effective_sample_size")):
        have = [r for r in rows if r.get(key) is not None]
        table = by_kernel_variance(have, key) if have else pd.DataFrame()
        for i, ((ratio, ipc, method), part) in enumerate(table.groupby(["conflict_ratio", "ipc", "method"])
                                                         if not table.empty else []):
            fig.add_trace(go.Scatter(x=part["x"], y=part["mean"], mode="lines+markers", showlegend=col == 1,
                                     name=f"{method} @ {ratio:.1%} (IPC {ipc})",
                                     line=dict(color=method_colour(method, i))), row=1, col=col)
        fig.update_xaxes(**log_axis(table["x"] if not table.empty else []), title_text="kernel variance s² (log)",
                         row=1, col=col)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def amplification_vs_ratio(summary: dict) -> go.Figure:
    """Synthetic aligned share minus the real share, per method (mean +- std over seeds) against the ratio."""
    fig = go.Figure()
    for i, (label, points) in enumerate(sorted(summary.get("amplification", {}).items())):
        pts = [p for p in points if p.get("mean") is not None]
        for ipc in sorted({p["ipc"] for p in pts}):
            sel = sorted((p for p in pts if p["ipc"] == ipc), key=lambda p: p["conflict_ratio"])
            fig.add_trace(go.Scatter(
                x=[p["conflict_ratio"] for p in sel], y=[p["mean"] for p in sel], mode="lines+markers",
                error_y=dict(type="data", array=[p["std"] or 0.0 for p in sel], visible=True),
                name=f"{label} (IPC {ipc})", line=dict(color=method_colour(label.split("@")[0], i))))
    fig.add_hline(y=0, line=dict(color="#888", dash="dot"), annotation_text="real data's share")
    ratios = [p["conflict_ratio"] for pts in summary.get("amplification", {}).values() for p in pts]
    log_x = len(set(ratios)) > 1 and min(ratios) > 0 and max(ratios) / min(ratios) > 3
    fig.update_layout(xaxis=log_axis(ratios) if log_x else dict(type="linear"), xaxis_tickformat=".1%",
                      xaxis_title="conflict ratio", yaxis_title="amplification (points of aligned share)",
                      height=360, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def point_choices(rows: Sequence[dict]) -> dict[str, str]:
    """A readable label for every cell x method row, pointing at its run."""
    out = {}
    for r in rows:
        kv = "" if r.get("kernel_variance") is None else f" s²={r['kernel_variance']}"
        out[f"{r['method']}{kv} · {r['conflict_ratio']:.1%} · IPC {r['ipc']} · seed {r['seed']}"] = r["run_id"]
    return dict(sorted(out.items()))
