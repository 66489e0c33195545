"""The Reproduce page's job: a plan's audits that are not stored yet, run on a local Ray in the background by
engine.reproduce (the CLI's path: stored audits reused), keyed by the audits it runs (a second Start attaches)."""
from __future__ import annotations

from engine import reproduce
from engine.estimate import duration
from engine.store.queue import QUEUE_STAGE, wait_text
from ui import jobs, roles


def missing(plan: reproduce.Plan, result: dict) -> list[reproduce.Audit]:
    """The plan's audits not stored yet (their rows read 'not run' in the table)."""
    stored = {c["run_id"] for c in result["rows"] + result["stand_ins"] if c.get("stored")}
    return [a for a in plan.audits if a.cell.run_id not in stored]


def estimate_text(plan: reproduce.Plan) -> str:
    """The missing audits' estimated time, one after another (reproduce --dry-run's figures)."""
    todo = [a for a in reproduce.dry_run(plan) if not a["stored"]]
    known = sum(a["seconds"] for a in todo if a["seconds"] is not None)
    return f"about {duration(known)} on 2 CPU cores, one after another"


def refusal(todo: list[reproduce.Audit]) -> str | None:
    """Why this session may not run these audits (a classroom server's guest: as a sweep, then each audit)."""
    if why := roles.may_sweep():
        return why
    for audit in todo:
        r = audit.cell.plan.request
        why = roles.may_start(dataset=r.dataset, preset=r.preset, algorithm=r.algorithm, methods=list(r.methods),
                              ipc=r.ipc, eval_seeds=r.eval_seeds or 1)
        if why:
            return why
    return None


def start(plan: reproduce.Plan) -> jobs.Job:
    """Run the plan's missing audits in the background, or attach to the job already running them."""
    key = "reproduce:" + ",".join(sorted(a.cell.run_id for a in plan.audits))
    label = f"reproduce {plan.table.id} ({plan.preset}): {len(plan.audits)} audit(s)"
    return jobs.registry().submit(key, "reproduce", label, lambda progress, stop: reproduce.reproduce(
        plan, progress=progress, should_stop=stop))


def audits_text(job: jobs.Job) -> str:
    """Audits done of total, time left, time elapsed."""
    ev = job.latest
    if ev.stage == QUEUE_STAGE:
        return f"{wait_text(ev.step, ev.total)} · waiting {job.elapsed():.0f} s"
    eta = f" · about {ev.eta:.0f} s left" if ev.eta is not None else ""
    return f"audits {ev.step} / {ev.total}{eta} · {job.elapsed():.0f} s elapsed"
