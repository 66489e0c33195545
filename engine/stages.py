"""The stages a validated Plan runs, each loading or computing one thing: the training split, the KDE
weights, the trajectory tracker, and the one distillation stage that both a distill run and an audit
use, with one checkpoint scheme: FOLDER/checkpoints/<key of the distillation's settings>, so a rerun
into the same folder resumes and a folder reused with other settings starts afresh."""
from __future__ import annotations

from pathlib import Path

from . import attribute_probe, cache, data, distill, trajectory
from . import density
from .density import WeightResult
from .pipeline import Plan
from .progress import Progress, ShouldStop
from .store.records import CHECKPOINTS


def load_train(p: Plan) -> data.BiasedSplit:
    """The training split, with IPC checked against its smallest class (still before anything is written)."""
    r = p.request
    train = data.load_split(r.dataset, r.conflict_ratio, "train", r.seed, r.data_root)
    distill.check_ipc(train, r.ipc, p.distill_cfg)
    return train


def load_test(p: Plan) -> data.BiasedSplit:
    """The plan's balanced test split."""
    r = p.request
    return data.load_split(r.dataset, r.conflict_ratio, "test", r.seed, r.data_root)


def plan_weights(p: Plan, train: data.BiasedSplit, progress: Progress | None = None) -> WeightResult | None:
    """The KDE WeightResult the plan's methods need, or None."""
    if not p.uses_weights:
        return None
    r = p.request
    return density.training_weights(train, kernel_variance=r.kernel_variance, temperature=r.temperature,
                            preset=p.embed, seed=r.seed, device=p.device, progress=progress)


def make_tracker(p: Plan, train: data.BiasedSplit, probe: attribute_probe.Probe | None = None,
                 test: data.BiasedSplit | None = None, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> trajectory.Tracker | None:
    """The plan's trajectory tracker (None when tracking is off); trains or loads the attribute probe."""
    r = p.request
    if not r.track_every:
        return None
    if probe is None:
        probe = attribute_probe.train_probe(train, p.probe_cfg, seed=r.seed, device=p.device, progress=progress,
                                            should_stop=should_stop)
    if r.track_eval and test is None:
        test = load_test(p)
    return trajectory.Tracker(r.track_every, probe, train.aligned_attribute, attribute_probe.real_aligned_share(train),
                              test if r.track_eval else None, p.eval_cfg, p.seeds[0],
                              flip=not data.get_spec(r.dataset).digits, device=p.device)


def weight_summary(wr: WeightResult | None) -> dict | None:
    """The KDE weights' settings and diagnostics as results.json holds them (None without weights)."""
    if wr is None:
        return None
    return {"kernel_variance": wr.kernel_variance, "temperature": wr.temperature,
            **{k: v for k, v in wr.diagnostics.items() if k != "per_class"}}


def checkpoint_dir(p: Plan, folder: str | Path, tracker: trajectory.Tracker | None = None) -> Path:
    """Where the plan's distillation checkpoints in FOLDER: one subfolder per distillation setting."""
    r = p.request
    key = cache.cache_key(dataset=r.dataset, ratio=r.conflict_ratio, methods=p.methods, distill=p.distill_cfg.key(),
                          kv=r.kernel_variance, t=r.temperature, embed=str(p.embed),
                          **({"track": tracker.key()} if tracker else {}))
    return Path(folder) / CHECKPOINTS / key


def distill_sets(p: Plan, train: data.BiasedSplit, wr: WeightResult | None, folder: str | Path,
                 progress: Progress | None = None, should_stop: ShouldStop | None = None,
                 tracker: trajectory.Tracker | None = None) -> dict[str, distill.SyntheticSet]:
    """Every method side by side (the one distillation stage of a distill run and an audit): resumable
    from checkpoint_dir(p, folder), the sets saved into FOLDER/<method>/."""
    sets = distill.distill(train, p.distill_cfg, p.methods, weights=wr.weights if wr else None, progress=progress,
                           should_stop=should_stop, checkpoint_dir=checkpoint_dir(p, folder, tracker), tracker=tracker,
                           device=p.device)
    distill.save_synthetic(sets, folder)
    return sets
