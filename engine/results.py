"""The result schema: the one metric list, the one method order, and the per-method block of an audit's
results.json (docs/EVALUATION.md). The audit writes it; the CLI table, Results, Runs, the report and
sweeps read it with these names."""
from __future__ import annotations

from typing import Iterable

from .distill import METHODS

ACCURACIES = ("accuracy", "aligned_accuracy", "conflicting_accuracy", "worst_group_accuracy")
FAIRNESS = ("deo_m", "deo_a")
METRICS = ACCURACIES + FAIRNESS      # every evaluation's scalar metrics, in percent (mean over trainings)
SHARE = "synthetic_aligned_share"    # the probe's share of bias-aligned images in a set, percent
LABELS = {"accuracy": "accuracy", "accuracy_std": "± std", "aligned_accuracy": "aligned",
          "conflicting_accuracy": "conflicting", "worst_group_accuracy": "worst group", "deo_m": "DEO_M",
          "deo_a": "DEO_A", SHARE: "synthetic aligned share"}   # column names in tables and figures
BASELINES = ("random", "full")
# random first: the reference every method must beat; then the registry's methods; the whole set last
ORDER = ("random",) + METHODS + ("full",)
_ENTRY = ("accuracy", "accuracy_std") + METRICS[1:] + ("group_accuracy",)


def ordered(names: Iterable[str]) -> list[str]:
    """Methods and baselines in ORDER; unknown names after them, as given."""
    names = list(names)
    return [m for m in ORDER if m in names] + [m for m in names if m not in ORDER]


def method_entry(ev: dict, share: float, final_loss: float | None = None) -> dict:
    """The per-method block of results.json from one evaluate_synthetic result and the probe's share."""
    entry = {k: ev[k] for k in _ENTRY if k in ev}
    entry[SHARE] = share
    for k in METRICS:
        entry[f"{k}_std"] = ev[f"{k}_std"]
    entry["eval_seconds"] = round(ev["seconds"], 2)
    entry["eval_cached"] = bool(ev.get("cached"))  # read back from the evaluation cache (e.g. the random baseline)
    if final_loss is not None:
        entry["final_loss"] = final_loss
    return entry
