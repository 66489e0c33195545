"""The one stored-run path: a Plan run in the run store, so an identical request is one run wherever it
starts (CLI, dashboard, sweep cell). A finished identical run is reused; a failed or interrupted one
resumes from its checkpoints; the run's folder holds what the stages wrote (engine/store)."""
from __future__ import annotations

import contextlib
from typing import Iterator

from . import distill
from .audit import run_audit, run_set_audit
from . import data
from .data import BiasedSplit
from .pipeline import Plan, Request, SetRequest, plan, plan_sets, run_key, set_run_key
from .progress import Progress, ShouldStop
from .stages import distill_sets, load_train, make_tracker, plan_weights
from .store import Run, RunStore, run_id_for
from .store.queue import compute_slot
from .store.records import pid_alive


def _plan(req: Request | Plan) -> Plan:
    return req if isinstance(req, Plan) else plan(req)


def _stopper(should_stop: ShouldStop | None, run: Run) -> ShouldStop:
    """Stop when the caller asks or someone cancels the stored run (python -m engine runs cancel)."""
    return lambda: bool(should_stop and should_stop()) or run.should_stop()


@contextlib.contextmanager
def _claimed(kind: str, key: dict, force: bool, progress: Progress | None, should_stop: ShouldStop | None,
             queued: bool, claimant: str | None = None) -> Iterator[Run]:
    """The stored run for `key`, claimed once this host has a free compute slot (store.queue). No wait when
    the claim is settled already: an identical finished run is reused, an identical run computing in a live
    process is refused as busy; `queued=False` (a sweep cell that Ray schedules) never waits. `claimant`: who
    asks (a dashboard's browser session): the queue serves claimants in turn."""
    store = RunStore()
    store.index.ensure_ready()
    run_id = run_id_for(kind, key)
    store.index.sync_from_folder(run_id)
    row = store.index.get_row(run_id)
    busy = row is not None and row["status"] == "running" and pid_alive(row["pid"], row["host"], row["pid_start"])
    reused = row is not None and row["status"] == "finished" and not force and not store.problems(run_id)
    if not queued or busy or reused:
        with store.run(kind, key, force=force) as run:
            yield run
        return
    with compute_slot(f"{kind} {run_id}", progress, should_stop, claimant):
        with store.run(kind, key, force=force) as run:
            yield run


def _train(p: Plan, train: BiasedSplit | None) -> BiasedSplit:
    """The plan's training split (loaded unless the caller holds it), IPC checked, before the store is touched."""
    if train is None:
        return load_train(p)
    distill.check_ipc(train, p.request.ipc, p.distill_cfg)
    return train


def distill_stored(req: Request | Plan, force: bool = False, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None,
                   train: BiasedSplit | None = None,
                   queued: bool = True, claimant: str | None = None) -> tuple[dict[str, distill.SyntheticSet], Run]:
    """Distillation only, as a run of kind 'distill': (sets, run); an identical finished run is reused.
    `train`: the plan's training split when the caller already holds it (the dashboard's cached split);
    the run waits for a free compute slot of this host first unless `queued` is False."""
    p = _plan(req)
    train = _train(p, train)
    with _claimed("distill", run_key(p, "distill"), force, progress, should_stop, queued, claimant) as run:
        if run.reused and set(run.methods()) >= set(p.methods):
            return run.sets(p.methods), run
        stop = _stopper(should_stop, run)
        wr = plan_weights(p, train, progress)
        tracker = make_tracker(p, train, progress=progress, should_stop=stop)
        sets = distill_sets(p, train, wr, run.dir, progress, stop, tracker)
        metrics = {"methods": {m: {"final_loss": s.final_loss, "seconds": s.seconds} for m, s in sets.items()},
                   "iterations": p.distill_cfg.iterations}
        if tracker is not None:
            metrics.update(real_aligned_share=tracker.real_aligned_share,
                           trajectory={m: s.trajectory for m, s in sets.items()})
        run.finish(metrics)
        return sets, run


def audit_stored(req: Request | Plan, force: bool = False, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None, train: BiasedSplit | None = None,
                 queued: bool = True, claimant: str | None = None) -> tuple[dict, Run]:
    """The whole audit as a run of kind 'audit': (results, run); an identical finished run is reused
    (queued as distill_stored)."""
    p = _plan(req)
    train = _train(p, train)
    with _claimed("audit", run_key(p, "audit"), force, progress, should_stop, queued, claimant) as run:
        if run.reused and run.results() is not None:
            return run.results(), run
        results = run_audit(p, run.dir, progress=progress, should_stop=_stopper(should_stop, run), train=train)
        run.finish(results)
        return results, run


def audit_sets_stored(req: SetRequest, force: bool = False, progress: Progress | None = None,
                      should_stop: ShouldStop | None = None, claimant: str | None = None) -> tuple[dict, Run]:
    """Sets made elsewhere, audited with the native protocol as a run of kind 'import': (results, run). The
    run is keyed by the sets' content, the split and the evaluation: an identical request is reused.
    Every file is read and checked before the store is touched."""
    from .set_files import digest, read_set
    p = plan_sets(req)
    r = p.request
    train = load_train_split(r.dataset, r.conflict_ratio, r.seed, r.data_root)
    imported = [read_set(spec, train, r.normalization, r.experiment, r.soft_labels) for spec in r.sets]
    _check_names([i.name for i in imported])
    test = data.load_split(r.dataset, r.conflict_ratio, "test", r.seed, r.data_root)
    key = set_run_key(p, {i.name: digest(i.set) for i in imported})
    with _claimed("import", key, force, progress, should_stop, True, claimant) as run:
        if run.reused and run.results() is not None:
            return run.results(), run
        results = run_set_audit(p, imported, train, test, run.dir, progress, _stopper(should_stop, run))
        run.finish(results)
        return results, run


def load_train_split(dataset: str, ratio: float, seed: int, data_root: str | None) -> BiasedSplit:
    """A split's training half (for the sets' checks and the probe)."""
    return data.load_split(dataset, ratio, "train", seed, data_root)


def _check_names(names: list[str]) -> None:
    """Imported sets are named apart from each other and from the native methods and baselines."""
    from .errors import InvalidArgument
    from .results import ORDER
    taken = [n for n in names if n in ORDER]
    if taken:
        raise InvalidArgument(f"set name {taken[0]!r} is a native method or baseline of ddaudit",
                              f"name it apart, e.g. --set PATH=mtt-{taken[0]}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidArgument(f"two sets are named {twice[0]!r}", "give each its own name: --set PATH=NAME")
