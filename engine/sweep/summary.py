"""A sweep's summary: one tidy row per cell x method, the best kernel variance per ratio and IPC, amplification
against the ratio per method, and the rows as CSV. No Ray here."""
from __future__ import annotations

import csv
import io
import math

from .. import data, distill
from ..results import METRICS as EVAL_METRICS, SHARE
from .grid import Cell, Grid, grid_key

METRICS = EVAL_METRICS + (SHARE,)  # a sweep row's metric columns


def _mean_std(values: list[float]) -> dict:
    """Mean and sample std (ddof=1, as pandas in figures.sweep) over seeds; an undefined value is skipped."""
    vals = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(vals)}


def rows_of(all_cells: list[Cell], results: dict) -> list[dict]:
    """One tidy row per cell x method, every metric, the weights' diagnostics and the amplification."""
    rows = []
    for c in all_cells:
        res = results[c.run_id]
        weights = res.get("weights") or {}
        # the cell's methods in its request's order, then the baselines: results read back from the store come with
        # their keys sorted (random before vanilla), results computed in this process in the order they were made
        order = [m for m in c.plan.methods if m in res["methods"]]
        order += sorted(set(res["methods"]) - set(order))
        for method in order:
            m = res["methods"][method]
            kv_label = c.kernel_variance if c.kernel_variance is not None and method != "random" else None
            row = {"dataset": res["dataset"], "conflict_ratio": c.ratio, "ipc": c.ipc, "seed": c.seed,
                   "method": method, "kernel_variance": kv_label,
                   "kernel_variance_used": weights.get("kernel_variance") if kv_label is not None else None,
                   **{k: m.get(k) for k in METRICS}, "real_aligned_share": res["real_aligned_share"],
                   "amplification": m["synthetic_aligned_share"] - res["real_aligned_share"], "run_id": c.run_id}
            if kv_label is not None:
                row.update({f"weights_{k}": v for k, v in weights.items()
                            if isinstance(v, (int, float)) and k not in ("kernel_variance", "temperature")})
            rows.append(row)
    return rows


def summarise(grid: Grid, all_cells: list[Cell], results: dict) -> dict:
    """Rows, the best kernel variance per ratio and IPC, and amplification against the ratio per method."""
    rows = rows_of(all_cells, results)
    weighted = [m for m in grid.methods if distill.REGISTRY[m].needs_weights]
    best = []
    for ratio in grid.ratios:
        for ipc in grid.ipcs:
            for method in weighted:
                per_kv = {}
                for kv in grid.kernel_variances:
                    sel = [r for r in rows if r["conflict_ratio"] == ratio and r["ipc"] == ipc and
                           r["method"] == method and r["kernel_variance"] == kv]
                    per_kv[str(kv)] = {k: _mean_std([r[k] for r in sel]) for k in
                                       ("conflicting_accuracy", "worst_group_accuracy", "accuracy")}
                    per_kv[str(kv)]["kernel_variance_used"] = _mean_std([r["kernel_variance_used"] for r in sel])
                entry = {"conflict_ratio": ratio, "ipc": ipc, "method": method, "by_kernel_variance": per_kv}
                for metric in ("conflicting_accuracy", "worst_group_accuracy"):
                    scored = [(v[metric]["mean"], kv) for kv, v in per_kv.items() if v[metric]["mean"] is not None]
                    entry[f"best_by_{metric}"] = max(scored)[1] if scored else None
                best.append(entry)
    amplification: dict[str, dict[tuple[float, int], list[float]]] = {}
    for r in rows:
        label = r["method"] if r["kernel_variance"] is None else f"{r['method']}@{r['kernel_variance']}"
        amplification.setdefault(label, {}).setdefault((r["conflict_ratio"], r["ipc"]), []).append(r["amplification"])
    amp = {label: [{"conflict_ratio": ratio, "ipc": ipc, **_mean_std(v)} for (ratio, ipc), v in sorted(by.items())]
           for label, by in amplification.items()}
    return {"dataset": data.get_spec(grid.dataset).name, "grid": grid_key(grid)["grid"], "cells": len(all_cells),
            "rows": rows, "best_kernel_variance": best, "amplification": amp}


def to_csv(rows: list[dict]) -> str:
    """The tidy rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
