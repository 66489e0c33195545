"""The Distill page's jobs: the form's choice as an engine Request, planned once and run as a stored run
(engine.stored) in a background job keyed by that run, and the job's progress in words and curves.

The job's key is the stored run's id, so a second Start of the same request, from any session of
this server, attaches to the running job (JobRegistry.submit is atomic) instead of racing it.
"""
from __future__ import annotations

from typing import Sequence

from engine import distill, pipeline, stored
from engine.data import BiasedSplit
from engine.progress import Event, Progress, ShouldStop
from engine.results import ordered
from engine.store import RunStore, run_id_for
from ui import jobs, state

UI_EVAL_SEEDS = 1  # evaluation trainings per set in the dashboard: colored-digits end to end in ~2 min on 2 cores
UI_BASELINE = False  # the random-real baseline costs one more evaluation (~9 s at IPC 5 on 2 cores); opt in on the form
# The first result a newcomer gets from the form's defaults: vanilla against a label-free and a label-using
# remedy at IPC 5 shows the contrast in about a minute on 2 cores (docs/DASHBOARD.md, "First launch").
UI_METHODS = ("vanilla", "kde", "fairdd")
UI_IPC = 5
ESTIMATE_HELP = ("Measured unit costs (engine/costs.json, `python -m bench.bench_costs` on 2 CPU cores) times this "
                 "request's iterations, sets and trainings, less the SupCon model and probe when they are cached. "
                 "A GPU is much faster; other work on the machine slows it.")


def order(methods: Sequence[str]) -> list[str]:
    """Methods in the canonical (registry) order."""
    return ordered(methods)


def default_iterations(preset: str, algorithm: str) -> int:
    """Iterations of a distillation preset (for the help text)."""
    return distill.default_config(state.preset(preset), algorithm).iterations


def backbone_fields(preset: str, algorithm: str) -> list[tuple[distill.Option, float]]:
    """The chosen backbone's own settings the Distill form shows (those with a label), each with the preset's value."""
    backbone = distill.BACKBONES[algorithm]
    defaults = backbone.defaults(state.preset(preset))
    return [(o, defaults[o.name]) for o in backbone.options if o.label]


def own_overrides(preset: str, algorithm: str, values: dict) -> dict:
    """The form's backbone settings that differ from the preset's (the others are the preset's anyway)."""
    defaults = distill.BACKBONES[algorithm].defaults(state.preset(preset))
    return {k: v for k, v in values.items() if k in defaults and v != defaults[k]}


def loss_history(events: Sequence[Event]) -> dict[str, list[tuple[int, float]]]:
    """Per-method (iteration, loss) points from distillation progress events."""
    out: dict[str, dict[int, float]] = {}
    for ev in events:
        if ev.stage != "distill" or not ev.losses:
            continue
        for m, v in ev.losses.items():
            if v is not None:
                out.setdefault(m, {})[ev.step] = float(v)
    return {m: sorted(pts.items()) for m, pts in out.items()}


def track_points(events: Sequence[Event]) -> tuple[dict[str, list[dict]], float | None]:
    """Per-method trajectory points from distillation progress events, and the real data's aligned share."""
    out: dict[str, dict[int, dict]] = {}
    real = None
    for ev in events:
        if ev.stage != "distill" or not ev.track:
            continue
        real = ev.real_aligned_share if ev.real_aligned_share is not None else real
        for m, point in ev.track.items():
            if isinstance(point, dict) and isinstance(point.get("iteration"), int):
                out.setdefault(m, {})[point["iteration"]] = point
    return {m: [pts[i] for i in sorted(pts)] for m, pts in out.items()}, real


def request(s: state.Settings, choice: dict) -> pipeline.Request:
    """The engine request for the form's choice: the same fields `python -m engine distill|audit` sends."""
    methods = tuple(choice["methods"])  # validated by pipeline.plan, with the rest of the request
    kv, temp = state.kde_choice(s)
    weighted = any(m in distill.REGISTRY and distill.REGISTRY[m].needs_weights for m in methods)
    return pipeline.Request(
        dataset=s.dataset, conflict_ratio=s.ratio, methods=methods, algorithm=choice["algorithm"],
        ipc=choice["ipc"], preset=state.preset(choice["preset"]), kernel_variance=kv if weighted else None,
        temperature=temp if weighted else 1.0, seed=s.seed,
        eval_seeds=int(choice.get("eval_seeds") or UI_EVAL_SEEDS), baseline=bool(choice.get("baseline", UI_BASELINE)),
        track_every=choice.get("track_every"),
        distill_overrides={**{k: choice[k] for k in ("iterations", "init") if choice.get(k)},
                           **own_overrides(choice["preset"], choice["algorithm"], choice.get("options") or {})})


def estimate_text(s: state.Settings, choice: dict, train: BiasedSplit) -> str:
    """The form's choice's estimated time in words (or why there is none)."""
    from engine import estimate
    from engine.errors import DDAuditError
    try:
        plan = pipeline.plan(request(s, choice))
        return estimate.estimate(plan, train, "audit" if choice.get("evaluate") else "distill",
                                 bool(choice.get("baseline"))).text()
    except (DDAuditError, OSError, KeyError) as exc:
        return f"none ({getattr(exc, 'problem', exc)})"


def job_key(plan: pipeline.Plan, kind: str) -> str:
    """The job's key: the stored run it computes."""
    return f"{kind}|{run_id_for(kind, pipeline.run_key(plan, kind))}"


def start(s: state.Settings, choice: dict, train: BiasedSplit, claimant: str | None = None,
          guest: bool = False) -> jobs.Job:
    """Validate (once), then start the run in the background, or attach to the job already computing it;
    `train`: the page's cached training split of these settings (loaded once, not again by the job);
    `claimant`: the browser session (fair turns in the queue); `guest`: a classroom guest's run (disk cap)."""
    return start_request(request(s, choice), "audit" if choice.get("evaluate") else "distill", train,
                         claimant=claimant, guest=guest)


def start_request(req: pipeline.Request, kind: str, train: BiasedSplit, label: str | None = None,
                  claimant: str | None = None, guest: bool = False) -> jobs.Job:
    """start() for an engine request (the Dataset page's demo sends its own)."""
    plan = pipeline.plan(req)
    distill.check_ipc(train, plan.request.ipc, plan.distill_cfg)  # IPC against the data: refused now, not in the thread
    cfg = plan.distill_cfg
    label = label or (f"{'+'.join(plan.methods)} · {distill.BACKBONES[cfg.algorithm].label} · IPC {cfg.ipc} · {cfg.iterations} it · "
                      f"{req.dataset} @ {req.conflict_ratio:.1%}" + (" · evaluated" if kind == "audit" else ""))

    run_id = run_id_for(kind, pipeline.run_key(plan, kind))
    existed = RunStore().index.get_row(run_id) is not None

    def target(progress: Progress, should_stop: ShouldStop) -> dict:
        try:
            if kind == "audit":
                results, run = stored.audit_stored(plan, progress=progress, should_stop=should_stop, train=train,
                                                   claimant=claimant)
                sets = run.sets(plan.methods)
            else:
                results, (sets, run) = None, stored.distill_stored(plan, progress=progress, should_stop=should_stop,
                                                                  train=train, claimant=claimant)
            return {"synthetic": sets, "audit": results, "run_id": run.id}
        finally:
            settle(run_id, guest, existed)

    config = {"dataset": req.dataset, "conflict_ratio": req.conflict_ratio, "seed": req.seed,
              "methods": list(plan.methods), "preset": plan.request.preset, "claimant": claimant}
    # runs of other requests wait in the machine's queue (engine.store.queue) with their position shown
    return jobs.registry().submit(job_key(plan, kind), "distill", label, target, config=config)


def settle(run_id: str, guest: bool, existed: bool) -> None:
    """A job's run, once it ends: on a classroom server, a guest's new run goes under the guests' disk cap
    (engine.classroom.settle_run); never fails the job (a run removed meanwhile has nothing to settle)."""
    from engine import classroom
    if not classroom.serving():
        return
    try:
        classroom.settle_run(run_id, guest, existed, classroom.current_limits().guest_disk_bytes)
    except Exception as exc:  # bookkeeping only: the run's own outcome stands
        jobs.log.warning("could not settle run %s under the guest disk cap: %s", run_id, exc)
