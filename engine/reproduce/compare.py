"""Published against ours: the agreement rule, one row side by side, a plan's whole table, and the published
numbers a stored audit's report shows (the nearest rows, and the rows it answers exactly)."""
from __future__ import annotations

import math

from ..evaluate import EVAL_NOISE
from . import published
from .published import METRICS, Published, Row

def agrees(published: Published, ours: float | None, our_std: float | None, n: int) -> bool | None:
    """The agreement rule: ours lies within two standard deviations of the difference, the published std (0 when
    not given) and our evaluation noise (the std over our n trainings; one training: EVAL_NOISE) combined, plus
    the published number's rounding. None when we have no number."""
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return None
    noise = our_std if n >= 2 and our_std is not None and not math.isnan(our_std) else EVAL_NOISE
    tolerance = 2 * math.sqrt((published.std or 0.0) ** 2 + noise ** 2) + published.rounding
    return abs(ours - published.value) <= tolerance


def verdict(flags: list[bool | None]) -> str | None:
    """A row's agreement over its compared metrics: agrees, partly, differs (None: nothing compared)."""
    known = [f for f in flags if f is not None]
    if not known:
        return None
    return "agrees" if all(known) else "differs" if not any(known) else "partly"


def compare(row: Row, results: dict | None) -> dict:
    """One row side by side: published, ours (mean, std, n), the difference and the agreement per metric."""
    out = {"source": row.source, "paper_dataset": row.paper_dataset, "dataset": row.dataset,
           "algorithm": row.algorithm, "method": row.method, "ipc": row.ipc, "conflict_ratio": row.conflict_ratio,
           "note": row.note, "metrics": {}, "agreement": None}
    entry = (results or {}).get("methods", {}).get(row.method)
    n = len((results or {}).get("eval_seeds") or [])
    for m in METRICS:
        p = row.published.get(m)
        ours = entry.get(m) if entry else None
        std = entry.get(f"{m}_std") if entry else None
        out["metrics"][m] = {"published": p.value if p else None, "published_std": p.std if p else None,
                             "ours": ours, "ours_std": std,
                             "difference": (ours - p.value) if p and ours is not None else None,
                             "agrees": agrees(p, ours, std, n) if p else None}
    out["evaluations"] = n
    out["agreement"] = verdict([v["agrees"] for v in out["metrics"].values()])
    return out


def table_rows(result: dict) -> list[dict]:
    """The table as flat records (CSV): one per row, each metric's published / ours / std / difference / agrees."""
    flat = []
    for c in result["rows"] + result["stand_ins"]:
        rec = {k: c.get(k) for k in ("source", "paper_dataset", "dataset", "algorithm", "method", "ipc",
                                     "conflict_ratio", "status", "agreement", "run_id", "stand_in", "fix")}
        for m, v in c["metrics"].items():
            rec.update({f"{m}_{k}": v[k] for k in ("published", "published_std", "ours", "ours_std", "difference",
                                                   "agrees")})
        flat.append(rec)
    return flat


def _printed(p: Published) -> str:
    """A published number as the paper prints it (its own decimals)."""
    return f"{p.value:.{max(0, round(-math.log10(2 * p.rounding)))}f}"


def _matching(res: dict) -> list[Row]:
    """Every published row of a stored audit's dataset (or whose stand-in it is), backbone and IPC."""
    return [r for t in published.tables().values() for r in t.rows
            if res["dataset"] in (r.dataset, r.stand_in) and (r.algorithm, r.ipc) == (res["algorithm"], res["ipc"])]


def published_for(res: dict) -> tuple[str, dict[str, str]] | None:
    """(label, {method: 'Acc / DEO_M / DEO_A'}): the published numbers nearest a stored audit (the report's
    metrics table). Rows at the run's conflict ratio first; the label says where they are from and how the
    setting differs (another ratio, a stand-in). None: nothing published for this dataset, backbone and IPC."""
    rows = _matching(res)
    same = [r for r in rows if math.isclose(r.conflict_ratio, res["conflict_ratio"])]
    rows = same or rows
    if not rows:
        return None
    first = rows[0]
    label = f"{first.paper_dataset}, {first.algorithm.upper()}, IPC {first.ipc}, {first.conflict_ratio:.1%} conflicting"
    if res["dataset"] != first.dataset:
        label += f" ({res['dataset']} stands in for {first.dataset})"
    if not same:
        label += f"; this run is at {res['conflict_ratio']:.1%}"
    out: dict[str, str] = {}
    for r in rows:
        if r.method not in out:
            text = " / ".join(_printed(r.published[m]) if m in r.published else "-" for m in METRICS)
            out[r.method] = text + (f" ({r.source}, {r.table})" if r.table != first.table else "")
    return label, out


def answered_by(res: dict) -> dict | None:
    """The published rows a stored audit answers exactly (its dataset itself, backbone, IPC, ratio, a method it
    ran), side by side as `collect` gives them; None when it answers none."""
    rows = [r for r in _matching(res) if r.dataset == res["dataset"] and math.isclose(r.conflict_ratio,
                                                                                      res["conflict_ratio"])
            and r.method in res["methods"]]
    if not rows:
        return None
    compared = [{**compare(r, res), "status": "measured", "run_id": None} for r in rows]
    titles = sorted({published.tables()[r.table].title for r in rows})
    return {"table": ", ".join(sorted({r.table for r in rows})), "title": "; ".join(titles),
            "citation": "; ".join(sorted({published.tables()[r.table].citation for r in rows})), "note": "",
            "preset": res["preset"], "rows": compared, "stand_ins": [],
            "counts": {k: sum(1 for c in compared if c["agreement"] == k) for k in ("agrees", "partly", "differs")}}
