"""The Results page's sources: every evaluated run this server's jobs or the run store hold, by readable label,
each loaded as its results dict; the verdict in words, the amplification table, the report on demand. The page
only draws what these return."""
from __future__ import annotations

import pandas as pd

from engine import trajectory
from ui import jobs, run_store


def is_audit(metrics: object) -> bool:
    """True for an audit result: methods with an accuracy each."""
    return isinstance(metrics, dict) and isinstance(metrics.get("methods"), dict) and any(
        isinstance(v, dict) and "accuracy" in v for v in metrics["methods"].values())


def sources() -> dict[str, tuple[str, str]]:
    """Label -> (kind, handle) for every audit result available: this server's jobs and the run store."""
    out: dict[str, tuple[str, str]] = {}
    for job in jobs.registry().jobs("distill") + jobs.registry().jobs("import"):
        res = job.result or {}
        if job.status == "finished" and is_audit(res.get("audit")):
            out[f"this session: {job.label}"] = ("job", job.id)
    known_runs = {jobs.registry().by_id(h).result.get("run_id") for k, h in out.values()}
    for r in run_store.finished(("audit", "import")):
        met = r.get("metrics") or {}
        if r["id"] in known_runs or not any(k.startswith("methods.") and k.endswith(".accuracy") for k in met):
            continue
        cfg = r.get("config") or {}
        where = f"({cfg.get('dataset', '?')} @ {cfg.get('conflict_ratio', '?')}, {r['created'][:10]})"
        label = f"bundled example: {example_label(cfg)} {where}" if r.get("example") else f"run {r['id']} {where}"
        out[label] = ("run", r["id"])
    return out


def example_label(cfg: dict) -> str:
    """What a bundled example run is, in words."""
    dist = cfg.get("distill") or {}
    what = "the noise-start demo" if dist.get("init") == "noise" else "an audit" if len(cfg.get("methods") or []) > 3 \
        else "a sweep cell"
    return f"{what}, {'+'.join(cfg.get('methods') or [])}, IPC {dist.get('ipc', '?')}"


def load(kind: str, handle: str) -> tuple[dict, str | None]:
    """The audit result dict and the stored run's id (for grids and the report) of a source."""
    if kind == "job":
        res = jobs.registry().by_id(handle).result or {}
        return res["audit"], res.get("run_id")
    return run_store.results(handle), handle


def verdict_text(res: dict) -> str | None:
    """The report's verdict in words (None when the result lacks what it reads, e.g. an import without vanilla)."""
    from engine import report
    try:
        return report.verdict(res)
    except (KeyError, TypeError, ValueError):
        return None


def amplification_table(res: dict) -> pd.DataFrame | None:
    """Each method's aligned share minus the real data's at the start, peak and end (None without the real share)."""
    traj = res.get("trajectory") or {}
    if not isinstance(res.get("real_aligned_share"), (int, float)):
        return None
    amp = {m: trajectory.amplification(pts, res["real_aligned_share"]) for m, pts in traj.items()}
    return pd.DataFrame(amp).T.rename(columns=lambda c: f"{c} (points above real)")


def build_report(run_id: str) -> None:
    """Write the run's shareable HTML report into its folder (engine.report)."""
    from engine import report
    report.write([run_id])
