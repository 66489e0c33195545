"""Reproduce the papers' tables: the published numbers as data (engine/tables/), the audits a table needs planned
as sweep cells (each an ordinary stored audit: identical requests are one run, finished ones are reused, the rest
run on Ray, a cluster by address), and the side-by-side table with the agreement rule (docs/REPRODUCE.md).

One audit per (dataset, backbone, IPC, conflict ratio) of a table answers all its rows there: the table's methods
for that setting side by side, seed 0, the preset's evaluation trainings, no random baseline. A row whose data is
not on disk is listed with where to put it; a stand-in (colored-digits for C-MNIST FG) runs only when asked and
is shown apart, never as the row.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from . import data, distill, pipeline, sweep
from .errors import CorruptArtifact, DDAuditError, InvalidArgument
from .progress import Progress, ShouldStop
from .evaluate import EVAL_NOISE
from .results import BASELINES

TABLES_DIR = Path(__file__).with_name("tables")
METRICS = ("accuracy", "deo_m", "deo_a")
FILTER_KEYS = ("dataset", "algorithm", "method", "ipc", "ratio", "source")
ALIASES = {"backbone": "algorithm", "conflict_ratio": "ratio", "paper_dataset": "dataset"}
PRESETS = ("quick", "paper", "tiny")  # tiny: the plumbing checks (tests)
SEED = 0


@dataclass(frozen=True)
class Published:
    """One published number: value, std (None: not given) and the half unit of its last printed digit."""

    value: float
    std: float | None
    rounding: float


@dataclass(frozen=True)
class Row:
    """One published row: (paper table, dataset, backbone, method, IPC, ratio) and its numbers."""

    table: str
    source: str          # the paper's table or section
    paper_dataset: str   # the dataset as the paper names it
    dataset: str         # ddaudit's registry name
    stand_in: str | None
    algorithm: str
    method: str          # a registry method, or "full" (the whole biased training set)
    ipc: int
    conflict_ratio: float
    published: dict      # metric -> Published
    note: str = ""

    @property
    def setting(self) -> tuple:
        """The audit that answers this row (its dataset, backbone, IPC, ratio)."""
        return (self.dataset, self.algorithm, self.ipc, self.conflict_ratio)


@dataclass(frozen=True)
class Table:
    """A published table: its id (`reproduce TABLE`), title, citation and rows."""

    id: str
    title: str
    citation: str
    note: str
    rows: tuple[Row, ...]


def _number(text: str, where: str) -> tuple[float, float] | None:
    """'22.26' -> (22.26, 0.005); '' -> None."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CorruptArtifact(f"{where}: {text!r} is not a number", "fix the published table file") from None
    decimals = len(text.partition(".")[2])
    return value, 0.5 * 10 ** -decimals


def _row(rec: dict, where: str) -> Row:
    published = {}
    for m in METRICS:
        v = _number(rec[m], f"{where} {m}")
        s = _number(rec[f"{m}_std"], f"{where} {m}_std")
        if v is not None:
            published[m] = Published(v[0], s[0] if s else None, v[1])
        elif s is not None:
            raise CorruptArtifact(f"{where}: {m}_std without {m}", "fix the published table file")
    if not published:
        raise CorruptArtifact(f"{where}: no published number", "fix the published table file")
    try:
        ipc, ratio = int(rec["ipc"]), float(rec["conflict_ratio"])
    except ValueError:
        raise CorruptArtifact(f"{where}: bad ipc {rec['ipc']!r} or conflict_ratio {rec['conflict_ratio']!r}",
                              "fix the published table file") from None
    return Row(rec["table"], rec["source"], rec["paper_dataset"], rec["dataset"], rec["stand_in"] or None,
               rec["algorithm"], rec["method"], ipc, ratio, published, rec["note"])


def load_tables(folder: Path = TABLES_DIR) -> dict[str, Table]:
    """Every published table of `folder` (tables.json: titles and citations; published.csv: the rows)."""
    meta = json.loads((folder / "tables.json").read_text(encoding="utf-8"))
    rows: dict[str, list[Row]] = {name: [] for name in meta}
    with open(folder / "published.csv", encoding="utf-8", newline="") as f:
        for i, rec in enumerate(csv.DictReader(f), start=2):
            where = f"{folder / 'published.csv'} line {i}"
            if rec["table"] not in rows:
                raise CorruptArtifact(f"{where}: table {rec['table']!r} is not in tables.json", "add it there")
            rows[rec["table"]].append(_row(rec, where))
    return {name: Table(name, m["title"], m["citation"], m.get("note", ""), tuple(rows[name]))
            for name, m in meta.items()}


@lru_cache(maxsize=1)
def tables() -> dict[str, Table]:
    """The tables shipped in engine/tables/."""
    return load_tables()


def get_table(name: str, available: dict[str, Table] | None = None) -> Table:
    """A table by id, or one clear error listing them."""
    available = tables() if available is None else available
    if name not in available:
        raise InvalidArgument(f"unknown table {name!r}",
                              f"use one of: {', '.join(available)} (python -m engine reproduce --list)")
    return available[name]


def _field(row: Row, key: str) -> str:
    value = {"ratio": row.conflict_ratio, "ipc": row.ipc}.get(key, getattr(row, key, None))
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """'dataset=bg-fmnist,ipc=10,algorithm=dm' -> {key: {values}}; a key given twice keeps both values (or)."""
    out: dict[str, set[str]] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        key, eq, value = (s.strip() for s in part.partition("="))
        key = ALIASES.get(key, key)
        if not eq or not value or key not in FILTER_KEYS:
            raise InvalidArgument(f"bad row filter {part!r}",
                                  f"write KEY=VALUE pairs, comma-separated, with keys {', '.join(FILTER_KEYS)} "
                                  "(e.g. --rows dataset=bg-fmnist,algorithm=dm,ipc=10)")
        out.setdefault(key, set()).add(value)
    return out


def select(table: Table, filters: dict[str, set[str]]) -> list[Row]:
    """The table's rows that pass every filter; a value the table does not have is an error naming those it has."""
    for key, values in filters.items():
        have = sorted({_field(r, key) for r in table.rows})
        for v in values:
            if v not in have and not (key == "ratio" and _float_in(v, have)):
                raise InvalidArgument(f"table {table.id} has no row with {key}={v}",
                                      f"use one of: {', '.join(have)}")
    return [r for r in table.rows if all(_field(r, k) in vs or (k == "ratio" and any(_float_eq(v, r.conflict_ratio)
                                                                                      for v in vs))
                                         for k, vs in filters.items())]


def _float_eq(text: str, value: float) -> bool:
    try:
        return math.isclose(float(text), value)
    except ValueError:
        return False


def _float_in(text: str, have: list[str]) -> bool:
    return any(_float_eq(text, float(h)) for h in have)


# --------------------------------------------------------------------------------------------- planning


@dataclass
class Audit:
    """One audit of the plan: the sweep cell that runs it and the rows it answers."""

    cell: sweep.Cell
    rows: list[Row]
    stand_in: str | None = None  # the dataset run in place of the rows' own (shown apart, never as the rows)

    def command(self) -> str:
        """The `python -m engine audit` line of the same request (an identical request: the same stored run)."""
        r = self.cell.plan.request
        return (f"python -m engine audit --dataset {r.dataset} --conflict-ratio {r.conflict_ratio:g} --methods "
                f"{','.join(r.methods)} --algorithm {r.algorithm} --ipc {r.ipc} --preset {r.preset} --seed {r.seed} "
                f"--no-baseline" + (f" --data-root {r.data_root}" if r.data_root else "") + " --out OUT")


@dataclass
class Plan:
    """What a reproduction runs: its audits, and the rows it cannot run (missing data, backbone not here)."""

    table: Table
    preset: str
    rows: list[Row]
    audits: list[Audit]
    missing: list[dict] = field(default_factory=list)      # {row, dataset, problem, fix, stand_in}
    unsupported: list[dict] = field(default_factory=list)  # {row, problem}


def _methods(table: Table, setting: tuple) -> tuple[str, ...]:
    """The registry methods of every row of the table at this setting (whatever the filter): one paired audit."""
    named = {r.method for r in table.rows if r.setting == setting}
    methods = tuple(m for m in distill.METHODS if m in named)
    return methods or ("vanilla",)  # only 'full' rows: the whole-set evaluation rides on a vanilla audit


def _available(name: str, data_root: str | None, seen: dict) -> dict:
    if name not in seen:
        seen[name] = data.dataset_status(name, data_root)
    return seen[name]


def make_plan(table: Table, rows: list[Row], preset: str = "quick", data_root: str | None = None,
              stand_ins: bool = False, device: str | None = None, overrides: dict | None = None) -> Plan:
    """Plan the audits of `rows` (every request checked; data looked for on disk, nothing downloaded or run).
    `overrides` ({"distill": {...}, "eval": {...}, "eval_seeds": n}) are for benchmarks only (bench.gpu_check's
    paper row at fewer iterations): they make other runs than the table's preset."""
    o = overrides or {}
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown preset {preset!r}", "use --preset quick or --preset paper")
    data.check_data_root(data_root)
    if not rows:
        raise InvalidArgument(f"no row of table {table.id} passes the filter", "loosen --rows")
    plan = Plan(table, preset, rows, [])
    seen: dict = {}
    audits: dict[tuple, Audit] = {}
    for row in rows:
        if row.algorithm not in distill.BACKBONES:
            plan.unsupported.append({"row": row, "problem": f"backbone {row.algorithm!r} is not in this version "
                                                            f"of ddaudit (it has {', '.join(distill.BACKBONES)})"})
            continue
        status = _available(row.dataset, data_root, seen)
        run_on, stand_in = row.dataset, None
        if not status["available"]:
            alt = row.stand_in and _available(row.stand_in, data_root, seen)["available"]
            plan.missing.append({"row": row, "dataset": row.dataset, "problem": f"{row.dataset} is not on disk",
                                 "fix": status["how_to"], "stand_in": row.stand_in if alt else None})
            if not (stand_ins and alt):
                continue
            run_on, stand_in = row.stand_in, row.stand_in
        key = (run_on, row.algorithm, row.ipc, row.conflict_ratio)
        if key not in audits:
            methods = _methods(table, row.setting)
            req = pipeline.Request(run_on, row.conflict_ratio, methods, row.algorithm, row.ipc, preset, seed=SEED,
                                   baseline=False, data_root=data_root, device=device,
                                   eval_seeds=o.get("eval_seeds"), distill_overrides=dict(o.get("distill", {})),
                                   eval_overrides=dict(o.get("eval", {})))
            audits[key] = Audit(sweep.Cell(pipeline.plan(req), row.conflict_ratio, None, row.ipc, SEED), [], stand_in)
        audits[key].rows.append(row)
    plan.audits = list(audits.values())
    return plan


def dry_run(plan: Plan) -> list[dict]:
    """Each audit: its request, whether it is stored, and its estimated time (nothing run or written)."""
    from .estimate import estimate
    from .stages import load_train
    out, full_seen = [], set()
    for a in plan.audits:
        entry = {"run_id": a.cell.run_id, "command": a.command(), "rows": len(a.rows), "stand_in": a.stand_in}
        try:
            p = a.cell.plan
            est = estimate(p, load_train(p), "audit", baseline=False)
            # the whole-set evaluation is cached by content: audits of one split and evaluation pay it once
            split = (p.request.dataset, p.request.conflict_ratio, p.request.seed, p.eval_cfg, tuple(p.seeds))
            if "evaluate full" in est.parts and split in full_seen:
                parts = {k: v for k, v in est.parts.items() if k != "evaluate full"}
                est = replace(est, seconds=est.seconds - est.parts["evaluate full"], parts=parts)
            if est.stored or "evaluate full" in est.parts:
                full_seen.add(split)
            entry.update(stored=est.stored, seconds=round(est.seconds, 1), estimate=est.text())
        except DDAuditError as exc:  # e.g. a ratio folder the release lacks, an IPC above the data
            entry.update(stored=False, seconds=None, estimate=f"cannot run: {exc.problem}", fix=exc.fix)
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------- comparing


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


def collect(plan: Plan, results: dict) -> dict:
    """The side-by-side table of a plan from its audits' results (by run id; an audit not there: 'not run')."""
    rows, stand_ins = [], []
    for a in plan.audits:
        res = results.get(a.cell.run_id)
        for row in a.rows:
            c = compare(row, res)
            c.update(run_id=a.cell.run_id, stored=res is not None)
            if res is None:
                c["status"] = "not run"
            elif row.method in BASELINES and row.method not in res["methods"]:
                c["status"] = "not measured at this preset (the whole-set evaluation runs at the paper preset)"
            else:
                c["status"] = "measured"
            if a.stand_in:
                for v in c["metrics"].values():  # its numbers are shown, never compared with the row's
                    v.update(difference=None, agrees=None)
                c.update(stand_in=a.stand_in, agreement=None,
                         status=f"stand-in: {a.stand_in} in place of {row.dataset}, not the published row"
                         + (" (not run)" if res is None else ""))
                stand_ins.append(c)
            else:
                rows.append(c)
    for m in plan.missing:
        c = compare(m["row"], None)
        c.update(status="data not on disk", problem=m["problem"], fix=m["fix"], stand_in_available=m["stand_in"])
        rows.append(c)
    for u in plan.unsupported:
        c = compare(u["row"], None)
        c.update(status="not in this version", problem=u["problem"])
        rows.append(c)
    order = {_ident(r.source, r.dataset, r.algorithm, r.method, r.ipc, r.conflict_ratio): i
             for i, r in enumerate(plan.rows)}
    rows.sort(key=lambda c: order.get(_ident(c["source"], c["dataset"], c["algorithm"], c["method"], c["ipc"],
                                             c["conflict_ratio"]), len(order)))
    return {"table": plan.table.id, "title": plan.table.title, "citation": plan.table.citation,
            "note": plan.table.note, "preset": plan.preset, "rows": rows, "stand_ins": stand_ins,
            "counts": {k: sum(1 for c in rows if c["agreement"] == k) for k in ("agrees", "partly", "differs")}}


def _ident(*parts) -> tuple:
    """A row's identity in its table (the table order of the side-by-side rows)."""
    return parts


def stored_results(plan: Plan) -> dict:
    """The finished audits of a plan already in the store (nothing computed): results by run id."""
    from .store import RunStore
    ids = {a.cell.run_id for a in plan.audits}
    return {r.id: res for r in RunStore().finished("audit") if r.id in ids and (res := r.results()) is not None}


def reproduce(plan: Plan, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0,
              progress: Progress | None = None, should_stop: ShouldStop | None = None) -> dict:
    """Run the plan's audits that are not stored yet (on Ray: local, or a cluster by address) and return the
    side-by-side table, with how many audits were computed now and how many reused."""
    t0 = time.time()
    cells = [a.cell for a in plan.audits]
    stored = stored_results(plan)
    if address is None:  # the data is here: a bad IPC or a missing ratio folder fails before Ray starts
        from .stages import load_train
        for c in {c.run_id: c for c in cells if c.run_id not in stored}.values():
            load_train(c.plan)
    results, computed = sweep.run_cells(cells, address, cpus_per_cell, gpus_per_cell,
                                        label=f"reproduce {plan.table.id}", progress=progress,
                                        should_stop=should_stop) if cells else ({}, 0)
    out = collect(plan, results)
    out.update(audits=len({c.run_id for c in cells}), computed=computed, reused=len({c.run_id for c in cells}) - computed,
               seconds=round(time.time() - t0, 1))
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


def describe(table: Table) -> dict:
    """A table for --list: id, title, citation, rows, and its datasets and backbones."""
    return {"table": table.id, "title": table.title, "citation": table.citation, "rows": len(table.rows),
            "datasets": sorted({r.dataset for r in table.rows}), "backbones": sorted({r.algorithm for r in table.rows})}


def _printed(p: Published) -> str:
    """A published number as the paper prints it (its own decimals)."""
    return f"{p.value:.{max(0, round(-math.log10(2 * p.rounding)))}f}"


def _matching(res: dict) -> list[Row]:
    """Every published row of a stored audit's dataset (or whose stand-in it is), backbone and IPC."""
    return [r for t in tables().values() for r in t.rows
            if res["dataset"] in (r.dataset, r.stand_in) and r.algorithm == res["algorithm"] and r.ipc == res["ipc"]]


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
    titles = sorted({tables()[r.table].title for r in rows})
    return {"table": ", ".join(sorted({r.table for r in rows})), "title": "; ".join(titles),
            "citation": "; ".join(sorted({tables()[r.table].citation for r in rows})), "note": "",
            "preset": res["preset"], "rows": compared, "stand_ins": [],
            "counts": {k: sum(1 for c in compared if c["agreement"] == k) for k in ("agrees", "partly", "differs")}}


__all__ = ["answered_by", "published_for", "Audit", "METRICS", "Plan", "Published", "Row", "Table", "agrees", "collect", "compare", "describe",
           "dry_run", "get_table", "load_tables", "make_plan", "parse_filter", "reproduce", "select",
           "stored_results", "table_rows", "tables", "verdict"]
