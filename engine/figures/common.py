"""What every figure shares: colour-blind-safe colours, each method's colour and the plain layout."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from .. import distill

# Okabe-Ito + Paul Tol "safe": colour-blind-safe categorical colours (12).
SAFE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
        "#88CCEE", "#882255", "#44AA99", "#999933")
ALIGNED_COLOURS = {"aligned": "#56B4E9", "conflicting": "#D55E00"}
CONTINUOUS = "Viridis"
BASELINE_COLOURS = {"random": "#CC79A7", "full": "#009E73"}
NO_SPREAD = "none (1 training)"  # the ± std cell of a set evaluated once: no spread, not a spread of 0
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")


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


def method_colour(method: str, i: int = 0) -> str:
    """A stable colour per method name: the registry's, the baselines', else one of the safe palette."""
    if method in distill.REGISTRY:
        return distill.REGISTRY[method].colour
    return BASELINE_COLOURS.get(method, SAFE[(i + 4) % len(SAFE)])


def log_axis(values: Iterable[float]) -> dict:
    """A log axis labelled at the decades only (0.01, 0.1, 1, 10, ...; unlabelled minor ticks between), its range
    the whole decades around the positive values, so that even data within one decade shows two labels."""
    axis = dict(type="log", dtick=1, minor=dict(dtick="D1", ticks="outside", ticklen=3, showgrid=True))
    v = [float(x) for x in values if x is not None and math.isfinite(float(x)) and float(x) > 0]
    if v:
        lo, hi = math.floor(math.log10(min(v))), math.ceil(math.log10(max(v)))
        axis["range"] = [lo, hi if hi > lo else lo + 1]
    return axis
