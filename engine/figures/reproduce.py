"""A reproduction's side-by-side table (engine.reproduce.collect's dict) as a frame, Markdown and colours: pure
builders shared by the CLI, the HTML report and the Reproduce page."""
from __future__ import annotations

import math

import pandas as pd

METRIC_LABELS = {"accuracy": "Acc", "deo_m": "DEO_M", "deo_a": "DEO_A"}
# the agreement rule's verdicts (docs/REPRODUCE.md); grey: nothing compared (not run, no data, a stand-in)
COLOURS = {"agrees": "#d9f0d3", "partly": "#fff2b3", "differs": "#f7c6c0", None: "#eeeeee"}
VERDICT_TEXT = {"agrees": "agrees", "partly": "partly", "differs": "differs", None: "-"}


def _num(v, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def cell_text(metric: dict, trainings: int = 2) -> tuple[str, str, str]:
    """(published, ours, difference) of one metric as text: '71.10', '61.4 ± 0.7', '-9.7' (one training: no
    spread, '61.4 (1 training)')."""
    pub = _num(metric["published"]) + (f" ± {_num(metric['published_std'])}" if metric["published_std"] else "")
    spread = f" ± {_num(metric['ours_std'], 1)}" if trainings >= 2 else " (1 training)"
    ours = "-" if metric["ours"] is None else f"{_num(metric['ours'], 1)}{spread}"
    diff = "-" if metric["difference"] is None else f"{metric['difference']:+.1f}"
    return pub, ours, diff


def row_label(c: dict) -> str:
    """'C-FMNIST (BG), DM, fairdd, IPC 10' (and the stand-in's name when one ran)."""
    base = f"{c['paper_dataset']}, {c['algorithm'].upper()}, {c['method']}, IPC {c['ipc']}"
    return base + (f" [stand-in: {c['stand_in']}]" if c.get("stand_in") else "")


def frame(result: dict) -> pd.DataFrame:
    """One line per row: the row, each metric's published / ours / difference, agreement, status."""
    records = []
    for c in result["rows"] + result["stand_ins"]:
        rec = {"row": row_label(c), "source": c["source"]}
        for m, label in METRIC_LABELS.items():
            rec[f"{label} published"], rec[f"{label} ours"], rec[f"{label} diff"] = \
                cell_text(c["metrics"][m], c.get("evaluations", 2))
        rec["agreement"] = VERDICT_TEXT[c["agreement"]]
        rec["status"] = c["status"] + (f": {c['fix']}" if c.get("fix") else "")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def colours(result: dict) -> list[str]:
    """Each frame line's background colour, by its agreement."""
    return [COLOURS[c["agreement"]] for c in result["rows"] + result["stand_ins"]]


def styled(result: dict):
    """The frame as a pandas Styler, each line coloured by its agreement (the Reproduce page)."""
    df, bg = frame(result), colours(result)
    return df.style.apply(lambda line: [f"background-color: {bg[line.name]}"] * len(line), axis=1)


def markdown(result: dict) -> str:
    """The table as Markdown (CLI output, docs/RESULTS.md): published, ours (mean ± std), difference, agreement."""
    heads = ["row"] + [f"{label} {k}" for label in METRIC_LABELS.values() for k in ("published", "ours", "diff")] \
        + ["agreement", "status"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for c in result["rows"] + result["stand_ins"]:
        cells = [row_label(c)]
        for m in METRIC_LABELS:
            cells += list(cell_text(c["metrics"][m], c.get("evaluations", 2)))
        status = c["status"] if c["status"] != "measured" else f"measured, run {c.get('run_id', '')}"
        cells += [VERDICT_TEXT[c["agreement"]], status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
