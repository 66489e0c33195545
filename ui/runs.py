"""What a Distill-page run does: one engine call (engine.pipeline), in a background job keyed by its run.

The job's key is the stored run's id, so a second Start of the same request, from any session of
this server, attaches to the running job (JobRegistry.submit is atomic) instead of racing it.
"""
from __future__ import annotations

from typing import Sequence

from engine import distill, pipeline, store
from engine.errors import InvalidArgument
from engine import figures
from ui import jobs, state

UI_EVAL_SEEDS = 1  # evaluation trainings per set in the dashboard: colored-digits end to end in ~2 min on 2 cores
UI_BASELINE = False  # the random-real baseline costs one more evaluation (~15 s on 2 cores); opt in on the form
STAGES = {"distill": "distilling", "embed": "embedding the training images",
          "supcon": "training the SupCon surrogate", "kde": "KDE weights", "weights": "KDE weights",
          "data": "loading the data", "probe": "training the attribute probe", "umap": "UMAP map",
          "done": "finishing"}


def order(methods: Sequence[str]) -> list[str]:
    """Methods in the canonical (registry) order."""
    return figures.ordered_methods(list(methods))


def default_iterations(preset: str, algorithm: str) -> int:
    """Iterations of a distillation preset (for the help text)."""
    return distill.PRESETS[state.preset(preset)][algorithm].iterations


def stage_label(stage: str) -> str:
    """A progress stage in words."""
    if stage.startswith("evaluate "):
        return f"evaluating {stage[len('evaluate '):]} (fresh ConvNets trained on its set)"
    return STAGES.get(stage, stage)


def progress_text(job: jobs.Job) -> str:
    """One line for a running job: stage, step of total, loss or time left in the stage, time elapsed."""
    info = job.latest
    stage = stage_label(info.get("stage", "starting"))
    text = f"{stage}: {info.get('step', 0)} / {info.get('total', '?')}" if job.fraction() is not None else f"{stage}..."
    if isinstance(info.get("loss"), (int, float)):
        text += f" · loss {info['loss']:.4g}"
    if isinstance(info.get("eta"), (int, float)):
        text += f" · about {info['eta']:.0f} s left in this stage"
    return f"{text} · {job.elapsed():.0f} s elapsed"


def loss_history(events: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per-method (iteration, loss) points from distillation progress events."""
    out: dict[str, dict[int, float]] = {}
    for ev in events:
        losses = ev.get("losses")
        if ev.get("stage") != "distill" or not isinstance(losses, dict):
            continue
        for m, v in losses.items():
            if isinstance(v, (int, float)):
                out.setdefault(m, {})[int(ev.get("step", 0))] = float(v)
    return {m: sorted(pts.items()) for m, pts in out.items()}


def track_points(events: Sequence[dict]) -> tuple[dict[str, list[dict]], float | None]:
    """Per-method trajectory points from distillation progress events, and the real data's aligned share."""
    out: dict[str, dict[int, dict]] = {}
    real = None
    for ev in events:
        track = ev.get("track")
        if ev.get("stage") != "distill" or not isinstance(track, dict):
            continue
        real = ev.get("real_aligned_share", real)
        for m, point in track.items():
            if isinstance(point, dict) and isinstance(point.get("iteration"), int):
                out.setdefault(m, {})[point["iteration"]] = point
    return {m: [pts[i] for i in sorted(pts)] for m, pts in out.items()}, real


def request(s: state.Settings, choice: dict) -> pipeline.Request:
    """The engine request for the form's choice: the same fields `python -m engine distill|audit` sends."""
    methods = distill.check_methods(choice["methods"])
    kv, temp = state.kde_choice(s)
    weighted = any(distill.REGISTRY[m].needs_weights for m in methods)
    return pipeline.Request(
        dataset=s.dataset, conflict_ratio=s.ratio, methods=methods, algorithm=choice["algorithm"],
        ipc=choice["ipc"], preset=state.preset(choice["preset"]), kernel_variance=kv if weighted else None,
        temperature=temp if weighted else 1.0, seed=s.seed,
        eval_seeds=int(choice.get("eval_seeds") or UI_EVAL_SEEDS), baseline=bool(choice.get("baseline", UI_BASELINE)),
        distill_overrides={"iterations": int(choice["iterations"])} if choice.get("iterations") else {})


def job_key(plan: pipeline.Plan, kind: str) -> str:
    """The job's key: the stored run it computes."""
    return f"{kind}|{store.run_id_for(kind, pipeline.run_key(plan, kind))}"


def start(s: state.Settings, choice: dict) -> jobs.Job:
    """Validate (once), then start the run in the background, or attach to the job already computing it."""
    plan = pipeline.plan(request(s, choice))
    pipeline.load_train(plan)  # IPC against the data: refused now, not in the thread
    kind = "audit" if choice.get("evaluate") else "distill"
    cfg = plan.distill_cfg
    label = (f"{'+'.join(plan.methods)} · {cfg.algorithm.upper()} · IPC {cfg.ipc} · {cfg.iterations} it · "
             f"{s.dataset} @ {s.ratio:.1%}" + (" · evaluated" if kind == "audit" else ""))

    def target(progress: jobs.Progress, should_stop: jobs.ShouldStop) -> dict:
        if kind == "audit":
            results, run = pipeline.audit_stored(plan, progress=progress, should_stop=should_stop)
            sets = pipeline.synthetic_sets(run, plan.methods)
        else:
            results, (sets, run) = None, pipeline.distill_stored(plan, progress=progress, should_stop=should_stop)
        return {"synthetic": sets, "audit": results, "run_id": run.id, "run_dir": str(run.dir)}

    config = {"dataset": s.dataset, "conflict_ratio": s.ratio, "seed": s.seed, "methods": list(plan.methods),
              "preset": plan.request.preset}
    key = job_key(plan, kind)
    busy = [j for j in jobs.registry().running("distill") if j.key != key]
    if busy:
        raise InvalidArgument(f"another run is already going ({busy[0].label})",
                              "wait for it or cancel it on this page: runs share the machine's cores")
    return jobs.registry().submit(key, "distill", label, target, config=config)
