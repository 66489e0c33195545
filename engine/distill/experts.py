"""MTT's expert trajectories: ConvNets trained on the real split with a method's objective, parameters kept
after every epoch; cached on disk, one checksummed safetensors file per expert. docs/DISTILL.md "MTT".

The cache key is the content of everything that determines an expert (the split, the objective's weights
and draw probabilities, the network and training settings; not the distillation seed, as MTT's buffer serves
every run): two methods, runs or sweep cells whose objectives coincide share one set of experts. A killed
training resumes from the last finished epoch (the epoch's RNG is a pure function of the expert and the
epoch, and SGD without momentum has no state).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import cache
from ..augment import DSA
from ..errors import Cancelled
from ..images import to_float
from ..nets import ConvNet, ConvNetConfig, init_network
from ..progress import Progress, ShouldStop, report
from . import streams
from .config import DistillConfig
from .methods import REGISTRY
from .objectives import ExpertData, ExpertObjective, balance
from .sampler import GroupPools
from .toolkit import train_step

EXPERTS_VERSION = 1   # bump when a change alters the experts a key produces
EXPERT_STAGE = "experts"
EXPERT_SEED = 0        # experts serve every distillation seed (MTT's buffer is trained once)
_EPOCH_SLOTS = 10_000  # rng iteration of expert e, epoch k: e * _EPOCH_SLOTS + k (k = 0: its initialisation)
EXPERT = streams.claim("expert", __name__)  # each expert's initialisation and epochs


@dataclass
class ExpertSetup:
    """What training any expert of a run needs, on the device."""

    images: torch.Tensor      # uint8 N x C x H x W
    targets: torch.Tensor
    mean: torch.Tensor        # 1 x C x 1 x 1
    std: torch.Tensor
    net_cfg: ConvNetConfig
    dsa: DSA | None
    fmt: torch.memory_format
    device: torch.device


def flat_params(net: torch.nn.Module) -> torch.Tensor:
    """Every parameter of the network, flattened into one float32 vector (registration order)."""
    return torch.cat([p.detach().reshape(-1).float() for p in net.parameters()])


def load_flat(net: torch.nn.Module, flat: torch.Tensor) -> None:
    """Write a flat vector (flat_params' order) back into the network's parameters."""
    with torch.no_grad():
        i = 0
        for p in net.parameters():
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


def train_key(cfg: DistillConfig) -> dict:
    """The settings that determine MTT's experts (not the matching loop's, nor the seed: like MTT's buffer,
    experts are trained once and serve every distillation seed)."""
    o = cfg.options
    return {"width": cfg.width, "depth": cfg.depth, "norm": cfg.norm, "dsa": cfg.dsa, "batch_train": cfg.batch_train,
            "lr_teacher": o.lr_teacher, "num_experts": o.num_experts, "expert_train_epochs": o.expert_train_epochs}


def expert_key(data_digest: str, obj: ExpertObjective, cfg: DistillConfig, net_cfg: ConvNetConfig) -> str:
    """The cache key of a set of experts: the split, the objective, the network and the training settings."""
    draws = cache.tensor_digest(obj.draws.double()) if obj.draws is not None else None
    extra = ({"batch_groups": cache.tensor_digest(obj.batch_groups.long()), "num_groups": obj.num_groups,
              "group_min": obj.group_min} if obj.batch_groups is not None else {})  # absent otherwise: earlier keys unchanged
    return cache.cache_key(data=data_digest, loss_weights=cache.tensor_digest(obj.loss_weights.float()), draws=draws,
                           train=train_key(cfg), net=str(net_cfg), version=EXPERTS_VERSION, **extra)


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """An expert's batch loss: sum_i v_i CE_i / sum_i v_i (v = 1: the plain mean cross-entropy)."""
    return (F.cross_entropy(logits, targets, reduction="none") * v).sum() / v.sum()


def _epoch(setup: ExpertSetup, net: ConvNet, opt: torch.optim.Optimizer, obj: ExpertObjective, batch: int,
           g: torch.Generator, should_stop: ShouldStop | None = None) -> None:
    """One epoch: a permutation of the split, or N draws with the objective's probabilities; each batch's loss
    sum_i v_i CE_i / sum_i v_i, DSA on every image (MTT's buffer.py trains with it)."""
    n = len(setup.targets)
    order = (torch.randperm(n, generator=g) if obj.draws is None
             else torch.multinomial(obj.draws, n, replacement=True, generator=g))
    weights = obj.loss_weights.to(setup.device)
    groups = obj.batch_groups.to(setup.device) if obj.batch_groups is not None else None
    targets_cpu = setup.targets.cpu()
    groups_cpu = obj.batch_groups.cpu() if groups is not None else None
    pools = (GroupPools(targets_cpu, groups_cpu, setup.net_cfg.num_classes, obj.num_groups)
             if groups_cpu is not None and obj.group_min > 0 else None)
    for s in range(0, n, batch):
        if should_stop is not None and s and s % (64 * batch) == 0 and should_stop():  # a paper epoch takes minutes
            raise Cancelled("expert training cancelled mid-epoch", "run again: finished epochs and experts are kept")
        sel = order[s:s + batch]
        if pools is not None:  # every group of each class in the batch to group_min rows (FairDD's top-up)
            sel = torch.cat([sel, pools.top_up(sel, targets_cpu, groups_cpu, obj.group_min, g)])
        sel = sel.to(setup.device)
        y = setup.targets[sel]
        # cobra: the batch's own balance() weights, so the step is the barycenter of its groups' mean gradients
        v = weights[sel] if groups is None else balance(y, groups[sel], setup.net_cfg.num_classes,
                                                        obj.num_groups).float()
        train_step(net, opt, to_float(setup.images[sel], setup.mean, setup.std), g, setup.dsa, setup.fmt,
                   setup.device, lambda out, y=y, v=v: batch_loss(out, y, v))


def _path(folder: Path, e: int, partial: bool = False) -> Path:
    return folder / f"expert_{e:04d}{'.partial' if partial else ''}.safetensors"


def train_expert(setup: ExpertSetup, obj: ExpertObjective, cfg: DistillConfig, e: int, folder: Path,
                 on_epoch=None, should_stop: ShouldStop | None = None) -> None:
    """Train expert e (resuming its partial file) and write its trajectory: (expert_train_epochs + 1) x P."""
    net = ConvNet(setup.net_cfg).to(setup.device).to(memory_format=setup.fmt)
    rows: list[torch.Tensor] = []
    saved = cache.load_or_none(_path(folder, e, partial=True))
    if saved is not None:
        rows = list(saved[0]["trajectory"].unbind(0))
        load_flat(net, rows[-1].to(setup.device))
    else:
        init_network(net, streams.rng(EXPERT_SEED, e * _EPOCH_SLOTS, EXPERT))
        rows = [flat_params(net).cpu()]
    opt = torch.optim.SGD(net.parameters(), lr=cfg.options.lr_teacher, momentum=0.0, weight_decay=0.0)  # buffer.py's
    net.train()
    for k in range(len(rows), cfg.options.expert_train_epochs + 1):
        if should_stop is not None and should_stop():
            raise Cancelled(f"expert training cancelled (expert {e + 1}, epoch {k})",
                            "run again: finished epochs and experts are kept")
        _epoch(setup, net, opt, obj, cfg.batch_train, streams.rng(EXPERT_SEED, e * _EPOCH_SLOTS + k, EXPERT),
               should_stop)
        rows.append(flat_params(net).cpu())
        if k < cfg.options.expert_train_epochs:
            cache.save_tensors(_path(folder, e, partial=True), {"trajectory": torch.stack(rows)}, {"expert": e})
        if on_epoch is not None:
            on_epoch()
    cache.save_tensors(_path(folder, e), {"trajectory": torch.stack(rows)}, {"expert": e, "epochs": len(rows) - 1})
    _path(folder, e, partial=True).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path):
    """One process trains a key's experts at a time; another waits, then finds them (flock, local disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ExpertBank:
    """One set of experts on disk; trajectories read on demand, the most recent kept in memory (bounded)."""

    def __init__(self, folder: Path, count: int, max_bytes: int = 1 << 30):
        self.folder, self.count, self.max_bytes = folder, count, max_bytes
        self._held: OrderedDict[int, torch.Tensor] = OrderedDict()

    def missing(self) -> list[int]:
        """Experts without an intact file (a corrupt one is removed, so it is trained again); the intact ones
        read here are kept (within the bound), so the loop does not read them a second time."""
        out = []
        for e in range(self.count):
            loaded = cache.load_or_none(_path(self.folder, e))
            if loaded is None:
                out.append(e)
            else:
                self._hold(e, loaded[0]["trajectory"])
        return out

    def trajectory(self, e: int) -> torch.Tensor:
        """Expert e's parameters after each epoch, (epochs + 1) x P, float32 on the CPU."""
        if e in self._held:
            self._held.move_to_end(e)
            return self._held[e]
        t = cache.load_tensors(_path(self.folder, e))[0]["trajectory"]
        self._hold(e, t)
        return t

    def _hold(self, e: int, t: torch.Tensor) -> None:
        """Keep a trajectory in memory, forgetting the least recently used beyond max_bytes (one at least)."""
        self._held[e] = t
        self._held.move_to_end(e)
        while len(self._held) > 1 and sum(x.numel() * 4 for x in self._held.values()) > self.max_bytes:
            self._held.popitem(last=False)


def ensure_experts(setup: ExpertSetup, objectives: dict[str, ExpertObjective], cfg: DistillConfig,
                   data_digest: str, progress: Progress | None = None, should_stop: ShouldStop | None = None
                   ) -> dict[str, ExpertBank]:
    """Every method's experts, trained where the cache lacks them (methods with one objective share one set)."""
    keys = {m: expert_key(data_digest, obj, cfg, setup.net_cfg) for m, obj in objectives.items()}
    banks = {k: ExpertBank(cache.cache_dir("experts") / k, cfg.options.num_experts) for k in dict.fromkeys(keys.values())}
    todo = {k: b.missing() for k, b in banks.items()}
    total = sum(len(v) for v in todo.values()) * cfg.options.expert_train_epochs
    done = [0]

    def tick() -> None:
        done[0] += 1
        report(progress, EXPERT_STAGE, done[0], total)

    if total == 0:  # every expert on disk: one finished, cached step
        report(progress, EXPERT_STAGE, 1, 1, cached=True)
    else:
        report(progress, EXPERT_STAGE, 0, total)
    for k, bank in banks.items():
        if not todo[k]:
            continue
        obj = next(objectives[m] for m in objectives if keys[m] == k)
        with _locked(bank.folder):
            for e in bank.missing():  # another process may have trained some while this one waited
                train_expert(setup, obj, cfg, e, bank.folder, tick, should_stop)
    return {m: banks[keys[m]] for m in objectives}


def objectives(train, cfg: DistillConfig, methods, weights: torch.Tensor | None = None
               ) -> dict[str, ExpertObjective]:
    """Each method's expert objective on a split (its registry hook)."""
    d = ExpertData(train.targets, train.attributes, weights, train.num_classes, max(train.num_attributes, 1),
                   cfg.kde_sampling, cfg.group_min)
    return {m: REGISTRY[m].mtt_objective(d) for m in methods}


def objectives_to_train(train, cfg: DistillConfig, methods, weights: torch.Tensor | None = None) -> int:
    """How many distinct expert sets a run of these methods would train now (not on disk); an objective that
    needs KDE weights not given counts as to train. For the time estimate."""
    known = [m for m in methods if weights is not None or not REGISTRY[m].needs_weights]
    if not known:
        return len(methods)
    net_cfg = cfg.net_config(train.images.shape[1], train.num_classes, train.images.shape[2])
    digest = split_digest(train)
    keys = {expert_key(digest, obj, cfg, net_cfg) for obj in objectives(train, cfg, known, weights).values()}
    root = cache.cache_dir("experts")
    return len(methods) - len(known) + sum(
        not all(_path(root / k, e).exists() for e in range(cfg.options.num_experts)) for k in keys)


_DIGESTS: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, str]] = {}


def split_digest(train) -> str:
    """tensor_digest of a split's images and labels, remembered while those tensors live (the dashboard
    re-estimates on every change); a freed split's entry is dropped, never matched by a new one."""
    k = (id(train.images), id(train.targets))
    hit = _DIGESTS.get(k)
    if hit is not None and hit[0]() is train.images and hit[1]() is train.targets:
        return hit[2]
    for key in [key for key, (a, b, _) in _DIGESTS.items() if a() is None or b() is None]:
        del _DIGESTS[key]
    digest = cache.tensor_digest(train.images, train.targets)
    _DIGESTS[k] = (weakref.ref(train.images), weakref.ref(train.targets), digest)
    return digest
