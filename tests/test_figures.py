"""Unit tests for the pure figure and table builders of ui/figures.py."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from engine import figures, results


def test_count_heatmap_marks_aligned_cells_and_keeps_counts() -> None:
    counts = np.array([[90, 10], [5, 95]])
    fig = figures.count_heatmap(counts, ["a", "b"], ["red", "green"], "t", aligned_attribute=(0, 1))
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    assert np.array_equal(np.asarray(hm.text), counts)
    assert np.allclose(np.asarray(hm.z), np.log10(counts + 1))
    assert len(fig.layout.shapes) == 2
    assert fig.layout.shapes[1].x0 == 0.5 and fig.layout.shapes[1].y0 == 0.5


def test_tile_images_layout_and_padding() -> None:
    imgs = np.zeros((5, 3, 4, 6), np.uint8)
    imgs[1] = 200
    out = figures.tile_images(imgs, ncols=2, pad=1)
    assert out.shape == (3 * 5 + 1, 2 * 7 + 1, 3) and out.dtype == np.uint8
    assert (out[1:5, 8:14] == 200).all()       # image 1: row 0, column 1
    assert (out[0] == 255).all()               # padding is white
    assert figures.tile_images(np.zeros((0, 3, 4, 4), np.uint8)).shape == (1, 1, 3)
    gray = figures.tile_images(np.full((2, 1, 4, 4), 7, np.uint8), ncols=2, scale=2)
    assert gray.shape == (16, 28, 3) and (gray[4:12, 4:12] == 7).all() and (gray[:4] == 255).all()


def test_embedding_scatter_is_one_webgl_trace_with_row_ids() -> None:
    coords = np.random.default_rng(0).normal(size=(50, 2))
    ids = np.arange(100, 150)
    fig = figures.embedding_scatter(coords, ids, np.arange(50) % 3, kind="categorical", label="class",
                                    categories=["x", "y", "z"], hover={"class": np.array(["x"] * 50, dtype=object)})
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Scattergl)
    assert list(np.asarray(fig.data[0].customdata)[:, 0]) == list(ids)
    assert list(fig.data[0].marker.colorbar.ticktext) == ["x", "y", "z"]
    fig2 = figures.embedding_scatter(coords, ids, np.linspace(0.1, 10, 50), kind="continuous", label="w",
                                     log_colour=True)
    assert fig2.data[0].marker.colorscale is not None
    assert np.isclose(fig2.data[0].marker.color[-1], 1.0)  # log10(10)
    assert fig2.layout.dragmode == "lasso"


def test_categorical_colours_are_distinct_and_safe() -> None:
    cols = figures.categorical_colours(10)
    assert len(set(cols)) == 10 and all(c in figures.SAFE for c in cols)


def test_relative_weights_and_histogram() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    w = np.array([0.25, 0.25, 0.25, 0.25, 0.9, 0.1])
    rel = figures.relative_weights(w, labels)
    assert np.allclose(rel, [1, 1, 1, 1, 1.8, 0.2])
    aligned = np.array([1, 1, 1, 0, 1, 0], bool)
    fig = figures.weight_histogram(w, labels, aligned, bins=10)
    assert [t.name.split(" ")[0] for t in fig.data] == ["aligned", "conflicting"]
    assert np.isclose(sum(fig.data[0].y), 1.0) and np.isclose(sum(fig.data[1].y), 1.0)


def test_loss_curves_and_log_axis() -> None:
    fig = figures.loss_curves({"vanilla": [(1, 100.0), (2, 1.0)], "kde": [(1, 50.0), (2, 0.5)], "fairdd": []})
    assert [t.name for t in fig.data] == ["vanilla", "kde"]
    assert fig.layout.yaxis.type == "log"
    # FairDD ~400 beside vanilla ~30 (a 13x range): log, so vanilla's curve is not flattened
    assert figures.loss_curves({"vanilla": [(1, 30.0), (2, 28.0)], "fairdd": [(1, 400.0), (2, 380.0)]}
                               ).layout.yaxis.type == "log"
    assert figures.loss_curves({"v": [(1, 2.0), (2, 0.0)]}).layout.yaxis.type == "linear"  # a zero: no log axis


AUDIT = {
    "dataset": "colored-digits", "conflict_ratio": 0.05, "ipc": 10, "preset": "quick", "real_aligned_share": 95.0,
    "methods": {
        "fairdd": {"accuracy": 80.0, "accuracy_std": 1.0, "aligned_accuracy": 85.0, "conflicting_accuracy": 79.0,
                   "worst_group_accuracy": 50.0, "deo_m": 30.0, "deo_a": 10.0, "synthetic_aligned_share": 20.0,
                   "group_accuracy": [[90.0, None], [70.0, 80.0]]},
        "vanilla": {"accuracy": 30.0, "accuracy_std": 2.0, "aligned_accuracy": 99.0, "conflicting_accuracy": 20.0,
                    "worst_group_accuracy": 0.0, "deo_m": 100.0, "deo_a": 90.0, "synthetic_aligned_share": 99.0,
                    "group_accuracy": [[100.0, 0.0], [10.0, 100.0]]},
        "random": {"accuracy": 40.0, "accuracy_std": None, "aligned_accuracy": 90.0, "conflicting_accuracy": 35.0,
                   "worst_group_accuracy": 5.0, "deo_m": 90.0, "deo_a": 60.0, "synthetic_aligned_share": None,
                   "group_accuracy": [[95.0, 20.0], [25.0, 95.0]]},
    },
}


def test_metrics_frame_orders_methods_and_keeps_missing_as_nan() -> None:
    df = figures.metrics_frame(AUDIT)
    assert list(df.index) == ["random", "vanilla", "fairdd"]
    assert df.loc["fairdd", "conflicting"] == 79.0
    assert np.isnan(df.loc["random", "synthetic aligned share"]) and np.isnan(df.loc["random", "± std"])
    assert (df["real aligned share"] == 95.0).all()


def test_group_matrix_and_heatmaps_share_one_scale() -> None:
    m = figures.group_matrix(AUDIT["methods"]["fairdd"]["group_accuracy"], 2, 2)
    assert np.isnan(m[0, 1]) and m[1, 0] == 70.0
    group = {k: figures.group_matrix(v["group_accuracy"], 2, 2) for k, v in AUDIT["methods"].items()}
    fig = figures.accuracy_heatmaps(group, ["0", "1"], ["red", "green"])
    assert len(fig.data) == 3 and all(t.coloraxis == "coloraxis" for t in fig.data)
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 100
    assert [a.text for a in fig.layout.annotations] == ["random", "vanilla", "fairdd"]
    assert np.asarray(fig.data[2].text)[0, 1] == "–"  # fairdd: the empty cell is shown as missing, not 0


def test_heatmaps_png_is_a_png() -> None:
    group = {k: figures.group_matrix(v["group_accuracy"], 2, 2) for k, v in AUDIT["methods"].items()}
    png = figures.heatmaps_png(group, ["0", "1"], ["red", "green"])
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 100


def test_bar_charts() -> None:
    df = figures.metrics_frame(AUDIT)
    bars = figures.metrics_bars(df)
    assert [t.name for t in bars.data] == ["random", "vanilla", "fairdd"]
    assert list(bars.data[0].x) == ["accuracy", "aligned", "conflicting", "worst group"]
    share = figures.aligned_share_bars(df)
    assert list(share.data[0].y)[1:] == [99.0, 20.0]  # random first, with no share
    assert share.layout.shapes[0].y0 == 95.0
    cmp = figures.runs_comparison({"run-a": df, "run-b": df.iloc[:2]})
    assert {t.name for t in cmp.data} == {"run-a", "run-b"}


def test_sample_indices_seeded_per_class() -> None:
    targets = np.repeat(np.arange(3), 10)
    mask = np.ones(30, bool)
    mask[10:20] = False
    idx = figures.sample_indices(targets, mask, 4, seed=1)
    assert len(idx) == 8 and set(targets[idx]) == {0, 2}
    assert np.array_equal(idx, figures.sample_indices(targets, mask, 4, seed=1))


def test_png_bytes_roundtrip() -> None:
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[1, 2] = (10, 20, 30)
    back = np.asarray(Image.open(io.BytesIO(figures.png_bytes(arr))))
    assert np.array_equal(back, arr)


@pytest.mark.parametrize("n", [1, 13])
def test_ordered_methods(n: int) -> None:
    names = ["zeta", "fairdd", "vanilla"] + [f"m{i}" for i in range(n)]
    out = results.ordered(names)
    assert out[:2] == ["vanilla", "fairdd"] and out[2] == "zeta" and len(out) == len(names)


def test_metrics_frame_empty() -> None:
    df = figures.metrics_frame({"methods": {}})
    assert isinstance(df, pd.DataFrame) and df.empty


def test_one_training_shows_no_spread_and_balanced_counts_look_balanced() -> None:
    entry = {"accuracy": 50.0, "accuracy_std": 0.0}
    one = figures.metrics_frame({"methods": {"vanilla": entry}, "eval_seeds": [0]})
    assert np.isnan(one.loc["vanilla", "± std"])  # rendered as figures.NO_SPREAD, never "0.0"
    three = figures.metrics_frame({"methods": {"vanilla": entry}, "eval_seeds": [0, 1, 2]})
    assert three.loc["vanilla", "± std"] == 0.0
    # as the Results table shows them: the widget drew the bare NaN as "None"
    shown = figures.metrics_text(one)
    assert shown.loc["vanilla", "± std"] == figures.NO_SPREAD and shown.loc["vanilla", "accuracy"] == "50.0"
    assert shown.loc["vanilla", "conflicting"] == "–" and figures.metrics_text(three).loc["vanilla", "± std"] == "0.0"
    heat = figures.count_heatmap(np.array([[34, 35], [36, 35]]), ["a", "b"], ["x", "y"], "t").data[0]
    assert heat.zmin == 0  # 34 vs 36 sit close on a scale from 0, not at its two ends


def test_method_order_and_colours_come_from_the_registry() -> None:
    from engine import distill
    assert results.ordered(["full", "x", "random", *reversed(distill.METHODS)]) == \
        ["random", *distill.METHODS, "full", "x"]  # the random baseline first: the reference row
    for m in distill.METHODS:
        assert figures.method_colour(m) == distill.REGISTRY[m].colour


# --------------------------------------------------------------------------- sweep figures

def _sweep_rows() -> list[dict]:
    rows = []
    for seed, (a, b, v) in enumerate([(40.0, 50.0, 10.0), (44.0, 56.0, 12.0)]):
        for kv, used, acc, mass in (("0.1", 0.1, a, 0.2), ("suggested", 0.37, b, 0.4)):
            rows.append({"conflict_ratio": 0.01, "ipc": 10, "seed": seed, "method": "kde", "kernel_variance": kv,
                         "kernel_variance_used": used, "conflicting_accuracy": acc, "run_id": f"k{seed}{kv}",
                         "weights_conflict_weight_mass": mass, "weights_effective_sample_size": 100.0})
        rows.append({"conflict_ratio": 0.01, "ipc": 10, "seed": seed, "method": "vanilla", "kernel_variance": None,
                     "kernel_variance_used": None, "conflicting_accuracy": v, "run_id": f"v{seed}"})
    return rows


def test_sweep_table_is_mean_and_std_over_seeds_at_the_variance_used() -> None:
    from engine.figures import sweep as sf
    t = sf.by_kernel_variance(_sweep_rows(), "conflicting_accuracy")
    assert list(t["kernel_variance"]) == ["0.1", "suggested"] and list(t["x"]) == [0.1, 0.37]
    assert list(t["mean"]) == [42.0, 53.0] and t["std"].round(4).tolist() == [round(2 * 2 ** 0.5, 4), round(3 * 2 ** 0.5, 4)]
    fig = sf.metric_vs_kernel_variance(_sweep_rows(), "conflicting_accuracy")
    kde, vanilla = fig.data[0], fig.data[1]
    assert list(kde.y) == [42.0, 53.0] and list(vanilla.y) == [11.0, 11.0] and list(vanilla.x) == [0.1, 0.37]
    weights = sf.weights_vs_kernel_variance(_sweep_rows())
    assert [list(tr.y) for tr in weights.data] == [[0.2, 0.4], [100.0, 100.0]]


def test_amplification_figure_and_point_choices() -> None:
    from engine.figures import sweep as sf
    summary = {"amplification": {"vanilla": [{"conflict_ratio": 0.01, "ipc": 10, "mean": 3.0, "std": 1.0, "n": 2},
                                             {"conflict_ratio": 0.05, "ipc": 10, "mean": 1.0, "std": 0.5, "n": 2}]}}
    fig = sf.amplification_vs_ratio(summary)
    assert list(fig.data[0].x) == [0.01, 0.05] and list(fig.data[0].y) == [3.0, 1.0]
    choices = sf.point_choices(_sweep_rows())
    assert choices["kde s²=0.1 · 1.0% · IPC 10 · seed 1"] == "k10.1" and choices["vanilla · 1.0% · IPC 10 · seed 0"] == "v0"


# --------------------------------------------------------------------------- trajectories

def _traj(shares, accs=None):
    return [{"iteration": 10 * i, "aligned_share": s, "loss": None if i == 0 else 1.0 + i,
             **({"conflicting_accuracy": accs[i]} if accs else {})} for i, s in enumerate(shares)]


def test_trajectory_curves_one_line_per_method_and_run_with_reference() -> None:
    from engine.figures import trajectory as tf
    runs = {"shared": {"vanilla": _traj([90, 95, 97]), "kde": _traj([90, 80, 70])},
            "own": {"vanilla": _traj([96, 96, 97])}}
    fig = tf.trajectory_curves(runs, "aligned_share", reference=95.0)
    assert [t.name for t in fig.data] == ["vanilla · shared", "kde · shared", "vanilla · own"]
    assert list(fig.data[1].y) == [90, 80, 70] and list(fig.data[0].x) == [0, 10, 20]
    assert fig.data[0].line.dash != fig.data[2].line.dash and fig.data[0].line.color == fig.data[2].line.color
    assert any(s.y0 == 95.0 for s in fig.layout.shapes)
    loss = tf.trajectory_curves({"r": runs["shared"]}, "loss")
    assert list(loss.data[0].x) == [10, 20] and loss.layout.yaxis.type == "log"  # no loss at the start
    assert tf.available_metrics(runs["shared"]) == ["aligned_share", "loss"]
    assert "conflicting_accuracy" in tf.available_metrics({"m": _traj([1, 2], [30.0, 40.0])})
    assert tf.trajectory_curves({"r": runs["shared"]}, "conflicting_accuracy").data == ()


def test_add_synthetic_draws_stars_paths_and_thumbnails_on_a_copy() -> None:
    from engine.figures import trajectory as tf
    base = figures.embedding_scatter(np.array([[0.0, 0.0], [10.0, 5.0]]), np.array([0, 1]), np.array([0, 1]),
                                     kind="categorical", label="class", categories=["a", "b"])
    path = np.stack([np.zeros((3, 2)), np.ones((3, 2)), np.full((3, 2), 2.0)])  # 3 points x 3 images
    placed = {"vanilla": {"final": path[-1], "distance": np.array([0.1, 0.2, 0.3]), "labels": np.array([0, 1, 1]),
                          "path": path, "iterations": [0, 5, 10]}}
    imgs = np.zeros((3, 3, 4, 4), np.uint8)
    fig = tf.add_synthetic(base, placed, ["a", "b"], thumbnails={"vanilla": imgs})
    assert len(base.data) == 1 and not base.layout.images  # the map itself is untouched
    names = [t.name for t in fig.data]
    assert names == ["samples", "vanilla path", "vanilla start", "vanilla synthetic"]
    lines = fig.data[1]
    assert len(lines.x) == 3 * (3 + 1) and np.isnan(lines.x[3])  # a gap between images' paths
    star = fig.data[3]
    assert list(star.customdata[1]) == ["vanilla", 1, "b", 0.2]
    assert len(fig.layout.images) == 3 and fig.layout.images[0].source.startswith("data:image/png;base64,")
    no_paths = tf.add_synthetic(base, placed, ["a", "b"], paths=False)
    assert [t.name for t in no_paths.data] == ["samples", "vanilla synthetic"]
    picked = tf.synthetic_points([{"curve_number": 0, "customdata": [17, "a", "b", 1.0]},
                                  {"curve_number": 3, "customdata": ["vanilla", 2, "b", 0.3]}])
    assert picked == [("vanilla", 2)]


def test_map_emphasis_draws_conflicting_and_heavy_points_last_and_larger() -> None:
    import numpy as np
    from engine import figures
    rel = np.array([0.5, 40.0, 1.0, 3.0, 0.2])
    conflicting = np.array([False, False, True, False, True])
    order, sizes = figures.map_emphasis(rel, conflicting)
    assert order.tolist() == [0, 3, 1, 4, 2]  # aligned by weight, then conflicting by weight (last = on top)
    assert sizes[0] == 4.0 and sizes[1] == 12.0 and sizes[4] == 8.0 and 4.0 < sizes[3] < 12.0
    assert sizes[2] == 8.0  # a conflicting point at the uniform weight is still drawn large


def test_class_zoom_frames_one_class() -> None:
    import numpy as np
    from engine import figures
    coords = np.array([[0.0, 0.0], [1.0, 2.0], [10.0, 10.0]])
    x, y = figures.class_zoom(coords, np.array([0, 0, 1]), 0, margin=0.1)
    assert x == pytest.approx([-0.1, 1.1]) and y == pytest.approx([-0.2, 2.2])
    assert figures.class_zoom(coords, np.array([0, 0, 1]), 5) is None
    spread = np.vstack([np.zeros((98, 2)) + np.linspace(0, 1, 98)[:, None], [[50.0, 50.0], [-50.0, -50.0]]])
    x, _ = figures.class_zoom(spread, np.zeros(100, int), 0, margin=0.0, tail=0.02)
    assert -1.0 < x[0] < 0.1 and 0.9 < x[1] < 2.0  # the two strays far out do not zoom the frame out


def test_log_axes_label_decades_only() -> None:
    """The matching-loss chart and the sweep's kernel-variance axes put labels at 10^k only (dtick 1 on a log
    axis; the digits between are unlabelled minor ticks), over whole decades around the data."""
    from engine.figures import common, results, sweep as sweep_figs
    fig = results.loss_curves({"vanilla": [(0, 30.0), (10, 25.0)], "fairdd": [(0, 400.0), (10, 380.0)]})
    y = fig.layout.yaxis
    assert y.type == "log" and y.dtick == 1 and y.minor.dtick == "D1" and tuple(y.range) == (1, 3)
    rows = [{"conflict_ratio": 0.01, "ipc": 5, "method": "kde", "kernel_variance": k, "kernel_variance_used": k,
             "seed": 0, "conflicting_accuracy": 50.0, "weights_conflict_weight_mass": 0.3,
             "weights_effective_sample_size": 0.5} for k in (0.03, 0.1, 3.0)]
    for axis in (sweep_figs.metric_vs_kernel_variance(rows).layout.xaxis,
                 sweep_figs.weights_vs_kernel_variance(rows).layout.xaxis2):
        assert axis.type == "log" and axis.dtick == 1 and tuple(axis.range) == (-2, 1)
    assert common.log_axis([50.0, 60.0])["range"] == [1, 2]  # within one decade: still two labels
