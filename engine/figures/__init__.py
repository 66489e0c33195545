"""Pure figure builders, one module per page: data in, plotly figure (or array / frame) out; no streamlit. The
dashboard and the offline report share them.

Layout: common (colours, each method's colour, the layout), dataset (the Dataset and Embeddings pages' split
counts, map and weights), results (a run's curves, tables and heatmaps), trajectory (curves against iterations,
sets on the map), sweep (a sweep's rows and summary), reproduce (a reproduction's side-by-side table). The dataset and results builders are re-exported here.
"""
from __future__ import annotations

from . import reproduce, sweep, trajectory
from .common import (ALIGNED_COLOURS, BASELINE_COLOURS, CONTINUOUS, LAYOUT, NO_SPREAD, SAFE, categorical_colours,
                     method_colour)
from .dataset import (class_zoom, count_heatmap, embedding_scatter, map_emphasis, png_bytes, relative_weights,
                      sample_indices, tile_images, weight_histogram)
from .results import (accuracy_heatmaps, aligned_share_bars, class_attribute_names, group_matrix, heatmaps_png,
                      loss_curves, metrics_bars, metrics_frame, metrics_text, runs_comparison)

__all__ = ["ALIGNED_COLOURS", "BASELINE_COLOURS", "CONTINUOUS", "LAYOUT", "NO_SPREAD", "SAFE", "accuracy_heatmaps",
           "aligned_share_bars", "categorical_colours", "class_attribute_names", "class_zoom", "count_heatmap",
           "embedding_scatter", "group_matrix", "heatmaps_png", "loss_curves", "map_emphasis", "method_colour",
           "metrics_bars", "metrics_frame", "metrics_text", "png_bytes", "relative_weights", "reproduce", "runs_comparison",
           "sample_indices", "sweep", "tile_images", "trajectory", "weight_histogram"]
