"""Pure figure builders for trajectories (engine/trajectory.py): curves against iterations, sets on the map."""
from __future__ import annotations

import base64
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..images import png_bytes
from ..results import ordered
from .common import LAYOUT, log_axis, method_colour

METRICS = {"aligned_share": "synthetic aligned share (%)", "conflicting_accuracy": "conflicting accuracy (%)",
           "aligned_accuracy": "aligned accuracy (%)", "worst_group_accuracy": "worst-group accuracy (%)",
           "accuracy": "accuracy (%)", "loss": "matching loss (mean since the previous point)",
           "batch_aligned_share": "real batch aligned share (%)"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def available_metrics(trajectories: Mapping[str, Sequence[dict]]) -> list[str]:
    """The METRICS that at least one point of these trajectories has."""
    have = {k for pts in trajectories.values() for p in pts for k, v in p.items() if v is not None}
    return [k for k in METRICS if k in have]


def record_points(records: Mapping[str, Mapping[str, Sequence]]) -> dict[str, list[dict]]:
    """A backbone's records ({method: {name: [(iteration, value), ...]}}, e.g. DREAM's picked batches' aligned
    share) as trajectory points, so trajectory_curves draws them."""
    out: dict[str, list[dict]] = {}
    for method, named in records.items():
        points: dict[int, dict] = {}
        for name, values in named.items():
            for it, v in values:
                points.setdefault(int(it), {"iteration": int(it)})[name] = v
        out[method] = [points[i] for i in sorted(points)]
    return out


def trajectory_curves(runs: Mapping[str, Mapping[str, Sequence[dict]]], metric: str = "aligned_share",
                      reference: float | None = None, reference_label: str = "real data") -> go.Figure:
    """`metric` against iteration, one line per method (its colour) and per run (a dash each), with an
    optional horizontal reference (the real data's aligned share)."""
    fig = go.Figure()
    for r, (run, trajs) in enumerate(runs.items()):
        for i, method in enumerate(ordered(list(trajs))):
            pts = [p for p in trajs[method] if p.get(metric) is not None]
            if not pts:
                continue
            name = method if len(runs) == 1 else f"{method} · {run}"
            fig.add_scatter(x=[p["iteration"] for p in pts], y=[p[metric] for p in pts], mode="lines+markers",
                            name=name, line=dict(color=method_colour(method, i), width=2, dash=DASHES[r % len(DASHES)]),
                            marker=dict(size=6),
                            hovertemplate=f"{name}<br>iteration %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>")
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dot", line_color="#555", annotation_text=reference_label,
                      annotation_position="bottom right")
    log_y = metric == "loss" and all(v > 0 for t in fig.data for v in t.y) and len(fig.data) > 0
    fig.update_layout(title=METRICS.get(metric, metric) + " during distillation", xaxis_title="iteration",
                      yaxis_title=METRICS.get(metric, metric), height=340,
                      yaxis=log_axis(v for t in fig.data for v in t.y) if log_y else dict(type="linear"),
                      legend=dict(orientation="h", y=-0.3), **LAYOUT)
    return fig


def _thumbnail(img: np.ndarray) -> str:
    """A uint8 C x H x W image as a PNG data URI (plotly layout images)."""
    hwc = np.ascontiguousarray(np.repeat(img, 3, 0) if img.shape[0] == 1 else img).transpose(1, 2, 0)
    return "data:image/png;base64," + base64.b64encode(png_bytes(hwc)).decode("ascii")


def add_synthetic(fig: go.Figure, placed: Mapping[str, dict], class_names: Sequence[str], *, paths: bool = True,
                  thumbnails: Mapping[str, np.ndarray] | None = None) -> go.Figure:
    """A copy of a map figure with each method's synthetic set on it (trajectory.map_positions): a star per
    image (customdata: method, image index, class, distance), its path from the start when `paths`, and
    the images themselves drawn at their positions for the methods in `thumbnails` (uint8 N x C x H x W)."""
    out = go.Figure(fig)
    xs = np.concatenate([np.asarray(t.x, float) for t in fig.data if t.x is not None] or [np.zeros(1)])
    size = 0.04 * float(np.ptp(xs) or 1.0)  # a thumbnail's side: 4% of the map's width
    for i, method in enumerate(ordered(list(placed))):
        p, colour = placed[method], method_colour(method, i)
        final, labels = np.asarray(p["final"], float), np.asarray(p["labels"])
        if paths and p.get("path") is not None:
            path = np.asarray(p["path"], float)                        # P x N x 2
            seg = np.concatenate([path.transpose(1, 0, 2), np.full((path.shape[1], 1, 2), np.nan)], 1).reshape(-1, 2)
            out.add_scatter(x=seg[:, 0], y=seg[:, 1], mode="lines", line=dict(color=colour, width=1),
                            opacity=0.6, name=f"{method} path", hoverinfo="skip", legendgroup=method)
            out.add_scatter(x=path[0, :, 0], y=path[0, :, 1], mode="markers", name=f"{method} start",
                            marker=dict(symbol="circle-open", size=8, color=colour), legendgroup=method,
                            hovertemplate=f"{method} start (iteration {p['iterations'][0]})<extra></extra>")
        custom = np.column_stack([np.full(len(final), method, dtype=object), np.arange(len(final)),
                                  np.asarray(class_names, dtype=object)[labels], np.round(p["distance"], 3)])
        out.add_scatter(x=final[:, 0], y=final[:, 1], mode="markers", name=f"{method} synthetic", legendgroup=method,
                        customdata=custom, marker=dict(symbol="star", size=13, color=colour,
                                                       line=dict(color="black", width=1)),
                        hovertemplate="%{customdata[0]} synthetic #%{customdata[1]}<br>class %{customdata[2]}"
                                      "<br>distance to nearest real %{customdata[3]}<extra></extra>")
        for (x, y), img in zip(final, (thumbnails or {}).get(method, [])):
            out.add_layout_image(source=_thumbnail(np.asarray(img)), x=x, y=y, xref="x", yref="y", sizex=size,
                                 sizey=size, xanchor="center", yanchor="middle", layer="above")
    out.update_layout(legend=dict(orientation="h", y=-0.12))
    return out


def synthetic_points(event_points: Sequence[dict]) -> list[tuple[str, int]]:
    """(method, image index) of the synthetic stars among a plotly selection's points."""
    out = []
    for pt in event_points or []:
        cd = pt.get("customdata") if isinstance(pt, dict) else None
        if isinstance(cd, (list, tuple)) and len(cd) == 4 and isinstance(cd[0], str):
            try:
                out.append((cd[0], int(cd[1])))
            except (TypeError, ValueError):
                continue
    return out
