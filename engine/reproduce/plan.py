"""A reproduction's plan and run: one audit per (dataset, backbone, IPC, ratio) of the selected rows as a sweep
cell (the table's methods there side by side, seed 0, no random baseline), rows without data or backbone listed
instead; the dry run's estimates; the audits run through the sweep's Ray path (stored ones reused)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from .. import data, distill, pipeline, sweep
from ..errors import DDAuditError, InvalidArgument
from ..progress import Progress, ShouldStop
from ..results import BASELINES
from .compare import compare
from .published import Row, Table

PRESETS = ("quick", "paper", "tiny")  # tiny: the plumbing checks (tests)
SEED = 0


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
    from ..estimate import estimate
    from ..stages import load_train
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
    order = {(r.source, r.dataset, r.algorithm, r.method, r.ipc, r.conflict_ratio): i for i, r in enumerate(plan.rows)}
    rows.sort(key=lambda c: order.get(tuple(c[k] for k in ("source", "dataset", "algorithm", "method", "ipc",
                                                            "conflict_ratio")), len(order)))  # the table's order
    return {"table": plan.table.id, "title": plan.table.title, "citation": plan.table.citation,
            "note": plan.table.note, "preset": plan.preset, "rows": rows, "stand_ins": stand_ins,
            "counts": {k: sum(1 for c in rows if c["agreement"] == k) for k in ("agrees", "partly", "differs")}}


def stored_results(plan: Plan) -> dict:
    """The finished audits of a plan already in the store (nothing computed): results by run id."""
    from ..store import RunStore
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
        from ..stages import load_train
        for c in {c.run_id: c for c in cells if c.run_id not in stored}.values():
            load_train(c.plan)
    results, computed = sweep.run_cells(cells, address, cpus_per_cell, gpus_per_cell,
                                        label=f"reproduce {plan.table.id}", progress=progress,
                                        should_stop=should_stop) if cells else ({}, 0)
    out = collect(plan, results)
    out.update(audits=len({c.run_id for c in cells}), computed=computed, reused=len({c.run_id for c in cells}) - computed,
               seconds=round(time.time() - t0, 1))
    return out


def describe(table: Table) -> dict:
    """A table for --list: id, title, citation, rows, and its datasets and backbones."""
    return {"table": table.id, "title": table.title, "citation": table.citation, "rows": len(table.rows),
            "datasets": sorted({r.dataset for r in table.rows}), "backbones": sorted({r.algorithm for r in table.rows})}
