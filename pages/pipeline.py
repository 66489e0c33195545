"""What a Distill-page run does: engine calls only (weights -> distill [-> audit]), recorded in the run store."""
from __future__ import annotations

from typing import Any, Sequence

from engine.errors import InvalidArgument
from pages import figures, jobs, state

TINY_DISTILL = {"iterations": 4, "batch_real": 8, "width": 16, "checkpoint_every": 2, "outer_loop": 1,
                "inner_loop": 1}
TINY_EVAL = {"epochs": 2, "seeds": 1, "probe_steps": 3, "probe_batch": 16, "width": 8, "probe_width": 8,
             "batch_size": 64}
UI_EVAL_SEEDS = 1  # evaluation trainings per set in the dashboard: colored-digits end to end in ~2 min on 2 cores
UI_BASELINE = False  # the random-real baseline costs one more evaluation (~15 s on 2 cores); opt in on the form
STAGES = {"distill": "distilling", "embed": "embedding the training images",
          "supcon": "training the SupCon surrogate", "kde": "KDE weights", "weights": "KDE weights",
          "data": "loading the data", "probe": "training the attribute probe", "umap": "UMAP map",
          "done": "finishing"}


def distill_module() -> Any | None:
    """engine.distill when it has landed."""
    return state.engine_module("distill", "distill", "config_for", "METHODS")


def audit_module() -> Any | None:
    """engine.audit when it has landed."""
    return state.engine_module("audit", "run_audit", "AuditConfig")


def store_module() -> Any | None:
    """engine.store when it has landed."""
    return state.engine_module("store", "RunStore")


def order(methods: Sequence[str]) -> list[str]:
    """Methods in the canonical order."""
    return figures.ordered_methods(list(methods))


def default_iterations(preset: str, algorithm: str) -> int | str:
    """Iterations of a distillation preset (for the help text)."""
    dist = distill_module()
    try:
        return dist.PRESETS[preset][algorithm].iterations
    except (AttributeError, KeyError):
        return "?"


def stage_label(stage: str) -> str:
    """A progress stage in words."""
    if stage.startswith("evaluate "):
        return f"evaluating {stage[len('evaluate '):]} (fresh ConvNets trained on its set)"
    return STAGES.get(stage, stage)


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


def distill_config(choice: dict, seed: int) -> Any:
    """The engine's DistillConfig for the form's choice (validated, tiny in tiny mode)."""
    dist = distill_module()
    overrides: dict[str, Any] = {"seed": seed}
    if state.tiny():
        overrides.update(TINY_DISTILL)
    if choice.get("iterations"):
        overrides["iterations"] = int(choice["iterations"])
    return dist.config_for(choice["preset"], choice["algorithm"], choice["ipc"], **overrides)


def start(s: state.Settings, train: Any, test: Any, choice: dict) -> jobs.Job:
    """Validate, then start the run in the background; returns its job."""
    dist = distill_module()
    methods = tuple(dist.check_methods(choice["methods"]))
    cfg = distill_config(choice, s.seed)
    kv, temp = state.kde_choice(s)
    if "kde" in methods and state.engine_module("density", "training_weights") is None:
        raise InvalidArgument("the kde method needs engine/density.py and engine/embed.py, not there yet",
                              "run vanilla and fairdd for now")
    audit = audit_module() if choice.get("evaluate") else None
    label = (f"{'+'.join(methods)} · {cfg.algorithm.upper()} · IPC {cfg.ipc} · {cfg.iterations} it · "
             f"{s.dataset} @ {s.ratio:.1%}" + (" · evaluated" if audit else ""))
    if audit is not None:
        target, config = audit_target(s, choice, methods, kv, temp)
    else:
        target, config = distill_target(s, train, choice, methods, cfg, kv, temp)
    key = f"distill|{jobs.uuid.uuid4().hex}"
    return jobs.registry().submit(key, "distill", label, target, config=config)


def _stopper(job_stop: jobs.ShouldStop, run: Any) -> jobs.ShouldStop:
    """Stop when the UI cancels or someone cancels the stored run (python -m engine runs cancel)."""
    return lambda: job_stop() or run.should_stop()


def audit_target(s: state.Settings, choice: dict, methods: tuple[str, ...], kv: float | None,
                 temp: float) -> tuple[jobs.Target, dict]:
    """engine.audit.run_audit in the run store (kind 'audit'); validated here, before the thread starts."""
    audit = audit_module()
    tiny = state.tiny()
    base = dict(dataset=s.dataset, conflict_ratio=s.ratio, methods=methods, algorithm=choice["algorithm"],
                ipc=choice["ipc"], preset=choice["preset"], kernel_variance=kv if "kde" in methods else None,
                temperature=temp, seed=s.seed, eval_seeds=int(choice.get("eval_seeds") or UI_EVAL_SEEDS),
                baseline=bool(choice.get("baseline", UI_BASELINE)),
                distill_overrides={**(TINY_DISTILL if tiny else {}),
                                   **({"iterations": choice["iterations"]} if choice.get("iterations") else {})},
                eval_overrides=dict(TINY_EVAL) if tiny else {},
                embed_overrides=dict(state.TINY_EMBED) if tiny and "kde" in methods else {})
    audit.plan(audit.AuditConfig(out=str(state_home() / "tmp-validate"), **base))  # InvalidArgument now, not later
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in base.items()}

    def target(progress: jobs.Progress, should_stop: jobs.ShouldStop) -> dict:
        # the engine's run_stored keys the run exactly as `python -m engine audit` does: one store for both
        dist = distill_module()
        results, run = audit.run_stored(audit.AuditConfig(out=str(state_home() / "tmp-validate"), **base),
                                        progress=progress, should_stop=should_stop)
        sets = {m: dist.load_synthetic(run.dir / m) for m in methods if (run.dir / m).is_dir()}
        return {"synthetic": sets, "audit": results, "config": config, "run_id": run.id,
                "run_dir": str(run.dir)}

    return target, config


def state_home() -> Any:
    """The engine's home folder."""
    from engine import cache
    return cache.home()


def distill_target(s: state.Settings, train: Any, choice: dict, methods: tuple[str, ...], cfg: Any,
                   kv: float | None, temp: float) -> tuple[jobs.Target, dict]:
    """Distillation only (no evaluation), in the run store (kind 'distill') when it exists."""
    dist = distill_module()
    config = {"dataset": s.dataset, "conflict_ratio": s.ratio, "seed": s.seed, "methods": list(methods),
              "preset": choice["preset"], "distill": cfg.key(), "tiny": state.tiny()}
    if "kde" in methods:
        config.update(kernel_variance=kv, temperature=temp, embed_preset=state.embed_preset_name())
    embed_preset = state.embed_preset()

    def target(progress: jobs.Progress, should_stop: jobs.ShouldStop) -> dict:
        weights = None
        if "kde" in methods:
            from engine import density
            wr = density.training_weights(train, kernel_variance=kv, temperature=temp, preset=embed_preset,
                                          seed=s.seed, progress=progress)
            weights = wr.weights
        store = store_module()
        if store is None:
            sets = dist.distill(train, cfg, methods, weights=weights, progress=progress, should_stop=should_stop)
            return {"synthetic": sets, "config": config}
        with store.RunStore().run("distill", config) as run:
            if run.reused and all((run.dir / m / "synthetic.safetensors").is_file() for m in methods):
                sets = {m: dist.load_synthetic(run.dir / m) for m in methods}
            else:
                sets = dist.distill(train, cfg, methods, weights=weights, progress=progress,
                                    should_stop=_stopper(should_stop, run), checkpoint_dir=run.checkpoint_dir)
                dist.save_synthetic(sets, run.dir)
                run.finish({"methods": {m: {"final_loss": x.final_loss, "seconds": x.seconds}
                                        for m, x in sets.items()}, "iterations": cfg.iterations})
            return {"synthetic": sets, "config": config, "run_id": run.id, "run_dir": str(run.dir)}

    return target, config
