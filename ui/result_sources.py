"""The Results page's sources: every evaluated run this server's jobs or the run store hold, by readable label,
each loaded as its results dict; the verdict in words, the amplification table, the report on demand. The page
only draws what these return."""
from __future__ import annotations

from pathlib import Path

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
        label = f"bundled example: {example_label(cfg)}" if r.get("example") else run_label(r)
        out[label if label not in out else f"{label} [{r['id'][-6:]}]"] = ("run", r["id"])
    return out


def run_label(row: dict) -> str:
    """A stored run in words (the Results and Runs pages): kind, methods, backbone, IPC, data, seed, when."""
    cfg = row.get("config") or {}
    grid = cfg.get("grid") if isinstance(cfg.get("grid"), dict) else None
    when = str(row.get("created") or "")[:16].replace("T", " ")
    if grid is not None:
        algo, ipcs = grid.get("algorithm") or "dm", grid.get("ipcs") or []
        ratios = ", ".join(f"{r:.1%}" for r in grid.get("ratios") or [] if isinstance(r, (int, float)))
        seeds = len(grid.get("seeds") or [])
        what = (f"sweep · {'+'.join(grid.get('methods') or [])} · {_backbone(algo)} · IPC "
                f"{', '.join(map(str, ipcs))} · {cfg.get('dataset', '?')} @ {ratios} · {seeds} seed(s)")
    else:
        dist = cfg.get("distill") if isinstance(cfg.get("distill"), dict) else {}
        ratio = cfg.get("conflict_ratio")
        what = (f"{row.get('kind', 'run')} · {'+'.join(cfg.get('methods') or []) or '?'} · "
                f"{_backbone(dist.get('algorithm') or 'dm')} · IPC {dist.get('ipc', '?')} · {cfg.get('dataset', '?')} @ "
                f"{f'{ratio:.1%}' if isinstance(ratio, (int, float)) else '?'} · seed {cfg.get('seed', '?')}")
    return f"{what} · {when}" if when else what


def run_settings(cfg: dict) -> tuple[str | None, str | None, str | None]:
    """(ratio, methods, IPC) of a run's config in words (the Runs table); a sweep's from its grid (its ratios,
    methods and IPCs, where its own config has none of these fields)."""
    grid = cfg.get("grid") if isinstance(cfg.get("grid"), dict) else None
    if grid is not None:
        return (", ".join(f"{r:.1%}" for r in grid.get("ratios") or []) or None,
                ", ".join(grid.get("methods") or []) or None, ", ".join(map(str, grid.get("ipcs") or [])) or None)
    ratio = cfg.get("conflict_ratio")
    dist = cfg.get("distill") if isinstance(cfg.get("distill"), dict) else {}
    ipc = cfg.get("ipc", dist.get("ipc"))
    methods = cfg.get("methods")
    return (f"{ratio:.1%}" if isinstance(ratio, (int, float)) else None,
            ", ".join(methods) if isinstance(methods, list) and methods else None,
            None if ipc is None else str(ipc))


def _backbone(name: str) -> str:
    from engine import distill
    b = distill.BACKBONES.get(name)
    return b.label if b is not None else str(name)


def example_label(cfg: dict) -> str:
    """What a bundled example run is, in words: the sweep by its grid; its cells by what tells them apart."""
    grid = cfg.get("grid") if isinstance(cfg.get("grid"), dict) else None
    if grid is not None:
        ratios = ", ".join(f"{r:.1%}" for r in grid.get("ratios") or [] if isinstance(r, (int, float)))
        return (f"the sweep, {'+'.join(grid.get('methods') or [])}, IPC {', '.join(map(str, grid.get('ipcs') or []))}, "
                f"ratios {ratios}, {len(grid.get('seeds') or [])} seed(s)")
    dist = cfg.get("distill") or {}
    methods, ipc = "+".join(cfg.get("methods") or []), dist.get("ipc", "?")
    if dist.get("init") == "noise":
        return f"the noise-start demo, {methods}, IPC {ipc}"
    if len(cfg.get("methods") or []) > 3:
        return f"an audit, {methods}, IPC {ipc}"
    ratio, variance = cfg.get("conflict_ratio"), cfg.get("kernel_variance")
    cell = f"{ratio:.1%}" if isinstance(ratio, (int, float)) else "?"
    if "kde" in (cfg.get("methods") or []):
        cell += f", kernel variance {variance if variance is not None else 'suggested'}"
    return f"a sweep cell, {methods}, IPC {ipc}, {cell}, seed {cfg.get('seed', '?')}"


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
    return pd.DataFrame(amp).T.round(1).rename(columns=lambda c: f"{c} (points above real)")  # shares: whole images


def build_report(run_id: str) -> None:
    """Write the run's shareable HTML report into its folder (engine.report)."""
    from engine import report
    report.write([run_id])


def grids_side_by_side(sizes: dict[str, tuple[int, int]], page_px: int = 1000) -> bool:
    """Whether the methods' grid images fit side by side at their own size, one column each (the page's content is
    ~1,000 px wide): five DM grids of IPC 5 do (~170 px each); IDC's and DREAM's hold IPC x factor^2 images a row
    (12 at IPC 3, 40 at IPC 10), which a fifth of the page shrinks to a strip, so they go one under another."""
    return sum(w for w, _ in sizes.values()) <= page_px


def image_sizes(paths: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """(width, height) of each image file (its header only); an unreadable file counts as square."""
    from PIL import Image
    out = {}
    for name, path in paths.items():
        try:
            with Image.open(path) as im:
                out[name] = im.size
        except (OSError, ValueError):
            out[name] = (1, 1)
    return out
