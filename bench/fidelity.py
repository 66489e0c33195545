"""The fidelity study (docs/RESULTS.md): what each method's matching does to its set, from its trajectory.

    python -m engine audit --dataset D --conflict-ratio 0.05 --methods vanilla,kde,fairdd,cobra --init real \\
        --iterations 1000 --track-every 200 --track-eval --out study/D-real        (and --init method)
    python -m bench.fidelity study/*-real study/*-method --svg docs/fidelity.svg

reads each audit folder (results.json + config.json), prints Markdown tables of the aligned share and
the short-evaluation conflicting accuracy at every track point, per dataset, start and method, and
draws the same as one SVG (panels: dataset x metric; solid = shared start, dashed = own start).
"""
from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path

PANEL_W, PANEL_H, PAD = 360, 220, 46
DASH = {"real": "", "balanced": "2,3", "noise": "1,3", "method": "7,4"}
METRICS = (("aligned_share", "synthetic aligned share (%)"), ("conflicting_accuracy", "conflicting accuracy (%), short eval"))


def load(folder: Path) -> dict:
    """One study run: its results and the start it used."""
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not res.get("trajectory"):
        raise SystemExit(f"error: {folder} has no trajectory\n  fix: run the audit with --track-every N --track-eval")
    return {"dataset": res["dataset"], "init": cfg["distill"]["init"], "res": res}


def tables(runs: list[dict]) -> str:
    """Markdown: one table per dataset and metric, a row per (method, start), a column per track point."""
    out = []
    for ds in sorted({r["dataset"] for r in runs}):
        group = [r for r in runs if r["dataset"] == ds]
        real = group[0]["res"]["real_aligned_share"]
        for key, label in METRICS:
            its = sorted({p["iteration"] for r in group for t in r["res"]["trajectory"].values() for p in t})
            out.append(f"**{ds}: {label}** (real data's aligned share {real:.1f}%)\n")
            out.append("| method | start | " + " | ".join(f"it {i}" for i in its) + " | final audit |")
            out.append("|---|---|" + "---|" * (len(its) + 1))
            for r in sorted(group, key=lambda r: ("real", "method").index(r["init"]) if r["init"] in ("real", "method") else 2):
                for m, traj in _ordered(r["res"]["trajectory"]):
                    at = {p["iteration"]: p.get(key) for p in traj}
                    cells = [f"{at[i]:.1f}" if at.get(i) is not None else "-" for i in its]
                    final = r["res"]["methods"][m]["synthetic_aligned_share" if key == "aligned_share"
                                                   else "conflicting_accuracy"]
                    start = {"real": "shared random real", "method": "own (init=method)"}.get(r["init"],
                                                                                        f"shared {r['init']}")
                    out.append(f"| {m} | {start} | " + " | ".join(cells) + f" | {final:.1f} |")
            out.append("")
    return "\n".join(out)


def _ordered(trajectories: dict) -> list[tuple[str, list]]:
    """The methods in registry order (vanilla, kde, fairdd, cobra, balanced)."""
    from engine.distill import METHODS
    return sorted(trajectories.items(), key=lambda kv: METHODS.index(kv[0]) if kv[0] in METHODS else 99)


def _colour(method: str) -> str:
    from engine.distill import REGISTRY
    return REGISTRY[method].colour if method in REGISTRY else "#555555"


def svg(runs: list[dict]) -> str:
    """Line charts, one panel per (dataset, metric), x = iteration, y = percent (0-100)."""
    datasets = sorted({r["dataset"] for r in runs})
    width, height = len(METRICS) * (PANEL_W + PAD) + PAD, len(datasets) * (PANEL_H + 2 * PAD) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    methods: list[str] = []
    for row, ds in enumerate(datasets):
        group = [r for r in runs if r["dataset"] == ds]
        last = max(p["iteration"] for r in group for t in r["res"]["trajectory"].values() for p in t) or 1
        for col, (key, label) in enumerate(METRICS):
            x0, y0 = PAD + col * (PANEL_W + PAD), PAD + row * (PANEL_H + 2 * PAD)
            sx = lambda it: x0 + PANEL_W * it / last  # noqa: E731
            sy = lambda v: y0 + PANEL_H * (1 - v / 100)  # noqa: E731
            parts.append(f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{escape(ds)}: {escape(label)}</text>')
            parts.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#bbb"/>')
            for v in (0, 25, 50, 75, 100):
                parts.append(f'<text x="{x0 - 4}" y="{sy(v) + 4}" text-anchor="end" fill="#666">{v}</text>')
            for it in (0, last // 2, last):
                parts.append(f'<text x="{sx(it)}" y="{y0 + PANEL_H + 14}" text-anchor="middle" fill="#666">{it}</text>')
            if key == "aligned_share":
                real = group[0]["res"]["real_aligned_share"]
                parts.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{sy(real)}" y2="{sy(real)}" stroke="#555" '
                             f'stroke-dasharray="1,2"/><text x="{x0 + PANEL_W - 2}" y="{sy(real) + 12}" '
                             f'text-anchor="end" fill="#555">real data</text>')
            for r in group:
                for m, traj in _ordered(r["res"]["trajectory"]):
                    pts = [(sx(p["iteration"]), sy(p[key])) for p in traj if p.get(key) is not None]
                    if m not in methods:
                        methods.append(m)
                    if pts:
                        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                        parts.append(f'<polyline points="{line}" fill="none" stroke="{_colour(m)}" stroke-width="2" '
                                     f'stroke-dasharray="{DASH.get(r["init"], "")}"/>')
    legend = " ".join(f'<tspan fill="{_colour(m)}">■ {escape(m)}</tspan>' for m in methods)
    starts = {"real": "── shared random real start", "method": "- - each method's own start",
              "noise": "··· shared noise start", "balanced": "-·- shared balanced start"}
    shown = ", ".join(starts[i] for i in starts if any(r["init"] == i for r in runs))
    parts.append(f'<text x="{PAD}" y="{height - 10}">{legend}  <tspan fill="#333">{escape(shown)}; x: iteration'
                 '</tspan></text></svg>')
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.fidelity")
    ap.add_argument("folders", nargs="+", type=Path, help="audit output folders (--out of each study run)")
    ap.add_argument("--svg", type=Path, default=None, help="also write the plot here")
    args = ap.parse_args(argv)
    missing = [f for f in args.folders if not (f / "results.json").is_file()]
    if missing:
        print(f"error: no results.json in {', '.join(map(str, missing))}\n  fix: pass the --out folders of "
              "finished audits", file=sys.stderr)
        return 2
    runs = [load(f) for f in args.folders]
    print(tables(runs))
    if args.svg is not None:
        args.svg.write_text(svg(runs), encoding="utf-8")
        print(f"written: {args.svg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
