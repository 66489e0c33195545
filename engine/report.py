"""A shareable audit report: one self-contained HTML file built from stored audit runs.

`build(load_runs(run_ids))` returns the HTML: plotly's JavaScript inlined once, every image a data: URI, no
request leaves the file. Sections in the order a reader needs them: the verdict in words with the
numbers, the setting (and the command that reproduces it), the data, the KDE diagnostics, the
synthetic grids, the metrics table with published numbers beside it, the class x attribute accuracy
heatmaps on one scale, and the attribute probe's accuracy (how far to trust the aligned share).
`write(run_ids, out)` writes it (and a single run's report into the run's folder, as report.html).
"""
from __future__ import annotations

import base64
import html
import math
import os
import time
from pathlib import Path
from typing import Sequence

from . import cache, distill, figures, reproduce
from .evaluate import EVAL_NOISE
from .errors import InvalidArgument
from .store import Run, RunStore

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.verdict{font-size:1.15em;background:#f3f7fb;padding:.8em 1em;
border-left:4px solid #0072B2}.grids{display:flex;flex-wrap:wrap;gap:1.2em}.grids figure{margin:0}
code,pre{background:#f5f5f5;padding:.1em .3em}pre{padding:.6em;overflow-x:auto}.note{color:#666}"""


def load_runs(run_ids: Sequence[str]) -> list[tuple[dict, dict, Run]]:
    """(info, results, run) per run id: finished audit runs only, each refused with a clear error."""
    if not run_ids:
        raise InvalidArgument("no run id given", "pass one or more RUN_IDs (python -m engine runs list --kind audit)")
    store, out = RunStore(), []
    for rid in run_ids:
        info = store.get(cache.safe_name(rid))
        if info["kind"] not in ("audit", "import"):
            raise InvalidArgument(f"run {rid} is a {info['kind']} run, not an audit",
                                  "a report needs evaluated results: pass an audit or audit-set run "
                                  "(runs list --kind audit, --kind import)")
        if info["status"] != "finished":
            raise InvalidArgument(f"run {rid} is {info['status']}, not finished",
                                  "finish it first (start the same audit again), or pick another run")
        run = store.open(info["id"])
        res = run.results()
        if res is None:
            raise InvalidArgument(f"run {rid} holds no results.json", "start the same audit again with --force")
        out.append((info, res, run))
    return out


MAX_TRAININGS = 100


def within_noise(a: dict, b: dict, n: int) -> tuple[bool, int]:
    """Whether two methods' conflicting accuracies (means over n trainings) differ by less than two standard
    errors of their difference, and how many trainings per set would put their gap at two standard errors."""
    stds = [x.get("conflicting_accuracy_std") for x in (a, b)]
    var = (sum(s * s for s in stds) / 2 if n >= 2 and all(isinstance(s, (int, float)) and s == s for s in stds)
           else EVAL_NOISE ** 2)
    gap = abs(a["conflicting_accuracy"] - b["conflicting_accuracy"])
    need = math.ceil(8 * var / gap ** 2) if gap > 0 else MAX_TRAININGS + 1
    return gap < 2 * math.sqrt(2 * var / n), need


def verdict(res: dict) -> str:
    """One paragraph: did vanilla amplify the bias, and which remedy reduced it how far (numbers included)."""
    m, real = res["methods"], res["real_aligned_share"]
    parts = []
    if "vanilla" in m:
        v = m["vanilla"]
        share = v["synthetic_aligned_share"]
        how = ("amplified the bias" if share > real + 1 else "kept the bias" if share >= real - 5
               else "did not carry the bias into its images")
        parts.append(f"Vanilla {res['algorithm'].upper()} {how}: {share:.0f}% of its synthetic images carry their "
                     f"class's aligned attribute against {real:.1f}% of the real images, and a network trained on "
                     f"them reaches {v['conflicting_accuracy']:.1f}% on bias-conflicting test images.")
    remedies = [k for k in distill.METHODS if k in m and k != "vanilla"]
    if remedies:
        best = max(remedies, key=lambda k: m[k]["conflicting_accuracy"] or 0)
        b = m[best]
        n = len(res.get("eval_seeds") or []) or 1
        noise = {k: within_noise(b, m[k], n) for k in remedies if k != best}
        tied = [k for k, (inside, _) in noise.items() if inside]
        if tied:
            need = max(noise[k][1] for k in tied)
            gap = max(b["conflicting_accuracy"] - m[k]["conflicting_accuracy"] for k in tied)
            names = [best] + tied
            parts.append(f"{', '.join(names[:-1])} and {names[-1]} are within the evaluation noise of each other "
                         f"(conflicting accuracies up to {gap:.1f} points apart with {n} training{'s' if n > 1 else ''} "
                         "per set); "
                         + (f"about {need} trainings per set would separate them. " if need <= MAX_TRAININGS else
                            "no practical number of trainings would separate them. ")
                         + f"The highest, {best}, brought the share to {b['synthetic_aligned_share']:.0f}% ")
        else:
            parts.append(f"The best remedy here, {best}, brought the share to {b['synthetic_aligned_share']:.0f}% ")
        parts[-1] += (f"and conflicting accuracy to {b['conflicting_accuracy']:.1f}% (worst group "
                      f"{b['worst_group_accuracy']:.1f}%, DEO_M {b['deo_m']:.1f}).")
        others = [f"{k} {m[k]['conflicting_accuracy']:.1f}%" for k in remedies if k != best]
        if others:
            parts.append("The others: " + ", ".join(others) + " conflicting accuracy.")
    parts.append(f"The attribute probe that reads the shares is {res['probe_accuracy']:.1f}% accurate on the "
                 "balanced test set" + (": too weak to trust the shares." if res["probe_accuracy"] < 80 else "."))
    return " ".join(parts)


def command(info: dict, res: dict) -> str:
    """The `python -m engine audit` (or `audit-set`) command that reproduces the run (same key: reused)."""
    cfg = info["config"]
    preset = res["preset"]
    if info.get("kind") == "import":
        args = ["python -m engine audit-set", f"--dataset {res['dataset']}", f"--conflict-ratio {res['conflict_ratio']}",
                f"--seed {res['seed']}", f"--preset {preset}", f"--eval-seeds {len(res['eval_seeds'])}"]
        args += [f"--set {src['path']}={name}" for name, src in (res.get("imported") or {}).items()]
        if any((src.get("normalization") or "split") != "split" for src in (res.get("imported") or {}).values()):
            args.append(f"--normalization {next(iter(res['imported'].values()))['normalization']}")
        if not cfg.get("baseline", True):
            args.append("--no-baseline")
        return " \\\n    ".join(args) + " --out OUT"
    args = ["python -m engine audit", f"--dataset {res['dataset']}", f"--conflict-ratio {res['conflict_ratio']}",
            f"--methods {','.join(cfg['methods'])}", f"--algorithm {res['algorithm']}", f"--ipc {res['ipc']}",
            f"--preset {preset}", f"--seed {res['seed']}", f"--eval-seeds {len(res['eval_seeds'])}"]
    backbone = distill.BACKBONES.get(res["algorithm"])
    if backbone is not None:  # a run of a backbone this version lacks: its command names the algorithm alone
        default = backbone.config(preset, res["ipc"])
        for key, flag in (("iterations", "--iterations"), ("init", "--init"), ("cobra_warmup", "--cobra-warmup")):
            if key in cfg["distill"] and cfg["distill"][key] != getattr(default, key):
                args.append(f"{flag} {cfg['distill'][key]}")
        args += backbone.reproduce_flags(cfg["distill"], preset)
    if res.get("embed_preset") and res["embed_preset"] != preset:
        args.append(f"--embed-preset {res['embed_preset']}")
    if cfg.get("kernel_variance") is not None:
        args.append(f"--kernel-variance {cfg['kernel_variance']}")
    if cfg.get("temperature") not in (None, 1.0):
        args.append(f"--temperature {cfg['temperature']}")
    track = cfg.get("track") or {}
    if "every" in track and track["every"] != distill.resolve_every(cfg["distill"]["iterations"], None):
        args.append(f"--track-every {track['every']}")
    if track.get("eval"):
        args.append("--track-eval")
    if not cfg.get("baseline", True):
        args.append("--no-baseline")
    if cfg.get("data_root"):
        args.append(f"--data-root {cfg['data_root']}")
    return " \\\n    ".join(args) + " --out OUT"


def _plot(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df, published: dict | None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["method", *df.columns])
    if published:
        head += "<th>published Acc / DEO_M / DEO_A</th>"
    rows = []
    for m, r in df.iterrows():
        cells = "".join((f"<td>{figures.NO_SPREAD}</td>" if col == "± std" else "<td>–</td>") if v != v
                        else f"<td>{v:.1f}</td>" for col, v in zip(df.columns, r.values))
        pub = f"<td>{html.escape(published.get(m, '-'))}</td>" if published else ""
        rows.append(f"<tr><td>{html.escape(str(m))}</td>{cells}{pub}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _data_section(res: dict, cfg: dict) -> tuple[str, object]:
    """(html, train split or None): class x attribute counts of the run's training split (data cache)."""
    from . import data
    try:
        train = data.load_split(res["dataset"], res["conflict_ratio"], "train", res["seed"], cfg.get("data_root"))
    except Exception as exc:  # the report still says what it could not show
        return f'<p class="note">The training split could not be loaded here ({html.escape(str(exc))}).</p>', None
    n_conf = int((~train.aligned).sum())
    fig = figures.count_heatmap(train.counts(), train.class_names, train.attribute_names,
                                f"train: class × attribute ({res['conflict_ratio']:.1%} conflicting)",
                                train.aligned_attribute)
    return (f"<p>{len(train):,} training images, {n_conf:,} bias-conflicting ({n_conf / len(train):.2%}); boxed "
            "cells are each class's bias-aligned attribute.</p>" + _plot(fig)), train


def _kde_section(res: dict, cfg: dict, train) -> str:
    w = res.get("weights")
    if not w:
        return '<p class="note">No KDE method in this run.</p>'
    text = (f"<p>Kernel variance {w['kernel_variance']:.3g}, temperature {w['temperature']:g}. The "
            f"{w['conflict_fraction']:.1%} bias-conflicting images hold {w['conflict_weight_mass']:.1%} of the "
            f"weight; effective sample size {w['effective_sample_size']:,.0f} of {len(train) if train else '?':,}.</p>")
    if train is None:
        return text
    try:  # the embeddings are cached by the audit that made the run
        from .density import training_weights
        wr = training_weights(train, kernel_variance=w["kernel_variance"], temperature=w["temperature"],
                              preset=res.get("embed_preset") or res["preset"], seed=res["seed"])
        fig = figures.weight_histogram(wr.weights.numpy(), train.targets.numpy(), train.aligned.numpy())
        return text + _plot(fig)
    except Exception as exc:
        return text + f'<p class="note">Weight histogram unavailable ({html.escape(str(exc))}).</p>'


def _trajectory_section(res: dict) -> str:
    """How each set's aligned share (and, with --track-eval, its conflicting accuracy) moved while distilled."""
    traj = res.get("trajectory")
    if not traj:
        return ""
    plots = _plot(figures.trajectory.trajectory_curves({"run": traj}, "aligned_share", res.get("real_aligned_share")))
    if "conflicting_accuracy" in figures.trajectory.available_metrics(traj):
        plots += _plot(figures.trajectory.trajectory_curves({"run": traj}, "conflicting_accuracy"))
    return ("<h2>During distillation</h2><p>Each method's synthetic set measured every "
            f"{res.get('track', {}).get('every', '?')} iterations; above the dotted real-data line is amplification.</p>"
            + plots)


def _records_section(res: dict) -> str:
    """What the backbone recorded per method over iterations (DREAM: the aligned share of the picked batches)."""
    points = figures.trajectory.record_points(res.get("records") or {})
    if not points:
        return ""
    plots = "".join(_plot(figures.trajectory.trajectory_curves({"run": points}, name, res.get("real_aligned_share")))
                    for name in figures.trajectory.available_metrics(points))
    return ("<h2>What the matcher saw</h2><p>The aligned share of each method's real batch, as the backbone picked "
            "it (DREAM's k-means picks), against the real data's share (dotted).</p>" + plots)


def run_section(info: dict, res: dict, run: Run) -> str:
    """Every section of one audit run."""
    cfg = info["config"]
    grids = "".join(f"<figure>{_png(p, m + ' synthetic set')}<figcaption>{html.escape(m)}</figcaption></figure>"
                    for m, p in run.grids().items())
    df = figures.metrics_frame(res)
    name, published = reproduce.published_for(res) or ("", None)
    classes, attrs = figures.class_attribute_names(res)
    group = {m: figures.group_matrix(v.get("group_accuracy"), len(classes), len(attrs))
             for m, v in res["methods"].items() if v.get("group_accuracy") is not None}
    versions = ", ".join(f"{k} {v}" for k, v in sorted(cfg.get("versions", {}).items()))
    data_html, train = _data_section(res, cfg)
    return f"""
<h2>Verdict</h2><p class="verdict">{html.escape(verdict(res))}</p>
<h2>Setting</h2>
<p>Run <code>{html.escape(info['id'])}</code>: {html.escape(res['dataset'])}, conflict ratio {res['conflict_ratio']:.1%},
seed {res['seed']}, methods {html.escape(', '.join(cfg['methods']))}, {res['algorithm'].upper()}, IPC {res['ipc']},
preset {html.escape(res['preset'])}, {len(res['eval_seeds'])} evaluation training(s) per set, {res['seconds']:.0f} s.
Versions: {html.escape(versions)}.</p>
<p>Reproduce (an identical request reuses the stored run):</p><pre>{html.escape(command(info, res))}</pre>
<h2>The data</h2>{data_html}
<h2>KDE diagnostics</h2>{_kde_section(res, cfg, train)}
<h2>Synthetic sets (one row per class)</h2><div class="grids">{grids}</div>
<h2>Metrics per method (%)</h2>{_table(df, published)}
<p class="note">Balanced test set. DEO = spread of accuracy across attributes within a class (max: DEO_M,
mean: DEO_A; lower is fairer). Share = synthetic images the probe reads as their class's aligned attribute.
{('Published: ' + html.escape(name) + ' at the papers&#39; settings (engine/tables, docs/REFERENCES.md); this run&#39;s preset is ' + html.escape(res['preset']) + '.') if published else 'No published numbers for this dataset, backbone and IPC.'}</p>
{_answers_section(res)}
{_plot(figures.metrics_bars(df))}{_plot(figures.aligned_share_bars(df))}
<h2>Accuracy per class and attribute (one colour scale)</h2>{_plot(figures.accuracy_heatmaps(group, classes, attrs)) if group else ''}
{_trajectory_section(res)}
{_records_section(res)}
<h2>How far to trust the aligned share</h2>
<p>The share is read by an attribute probe trained on group-balanced real images; on the balanced test set it
predicts the bias attribute with {res['probe_accuracy']:.1f}% accuracy (chance: {100 / max(len(attrs), 1):.0f}%).</p>
"""


def build(runs: Sequence[tuple[dict, dict, Run]]) -> str:
    """The whole report of loaded runs (`load_runs`) as one HTML string: several runs get a comparison
    first, then each run."""
    import plotly.offline
    title = "ddaudit report: " + ", ".join(r[1]["dataset"] for r in runs)
    body = []
    if len(runs) > 1:
        frames = {info["id"]: figures.metrics_frame(res) for info, res, _ in runs}
        body.append("<h2>Comparison</h2>" + _plot(figures.runs_comparison(frames)))
    for info, res, run in runs:
        if len(runs) > 1:
            body.append(f"<h1>Run {html.escape(info['id'])}</h1>")
        body.append(run_section(info, res, run))
    js = plotly.offline.get_plotlyjs()
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style><script>{js}</script></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>Made by ddaudit on {time.strftime('%Y-%m-%d %H:%M')}; opens offline, nothing is fetched.</p>"
            + "".join(body) + "</body></html>")


def write(run_ids: Sequence[str], out: str | os.PathLike | None = None) -> dict:
    """Build, then write to `out` (when given; checked by the caller) and, for a single run, into its
    folder; returns the paths and the size."""
    path = Path(out) if out is not None else None
    runs = load_runs(run_ids)  # refused (unknown, unfinished, not an audit) before anything is written
    text = build(runs).encode()
    written = {}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache.atomic_write_bytes(path, text)
        except OSError as exc:
            raise InvalidArgument(f"cannot write {path} ({exc.strerror or exc})", "pass an --out you can write") from None
        written["out"] = str(path)
    if len(runs) == 1:
        target = runs[0][2].report_path
        cache.atomic_write_bytes(target, text)
        written["run_folder"] = str(target)
    return {**written, "bytes": len(text)}


def _answers_section(res: dict) -> str:
    """The published rows this run answers (its exact setting), side by side and coloured, as `reproduce` shows."""
    answered = reproduce.answered_by(res)
    if answered is None:
        return ""
    return reproduction_section(answered, heading="Published rows this run answers")


def reproduction_section(result: dict, heading: str = "Reproduction") -> str:
    """A reproduction's side-by-side table (engine.reproduce), each row coloured by the agreement rule."""
    from .figures import reproduce as fig
    df, bg = fig.frame(result), fig.colours(result)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join(f'<tr style="background:{bg[i]}">' + "".join(f"<td>{html.escape(str(v))}</td>" for v in line)
                   + "</tr>" for i, line in enumerate(df.itertuples(index=False)))
    counts = result["counts"]
    return (f"<h2>{html.escape(heading)}: {html.escape(result['title'])}</h2>"
            f"<p>{html.escape(result['citation'])}. Preset <code>{html.escape(result['preset'])}</code>; "
            f"{counts['agrees']} row(s) agree, {counts['partly']} partly, {counts['differs']} differ. "
            f"{html.escape(result.get('note') or '')}</p>"
            f"<table><tr>{head}</tr>{rows}</table>"
            '<p class="note">Ours: mean ± std over the evaluation trainings of one distilled set (seed 0). A metric '
            "agrees when |ours - published| is within two standard deviations of the published std and our "
            "evaluation noise combined, plus the published number's rounding (docs/REPRODUCE.md). Green: every "
            "metric agrees; yellow: some; red: none; grey: nothing compared (not run, data missing, a stand-in). "
            "The quick preset is not the papers' setting: expect it to differ.</p>")


def reproduction_html(result: dict) -> str:
    """A reproduction as one self-contained HTML file (no script, nothing fetched)."""
    title = f"ddaudit reproduction: {result['table']}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>Made by ddaudit on {time.strftime('%Y-%m-%d %H:%M')}.</p>"
            + reproduction_section(result) + "</body></html>")
