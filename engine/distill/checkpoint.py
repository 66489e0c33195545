"""What a run carries from iteration to iteration, and its checkpoint: one checksummed safetensors file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .. import cache
from ..errors import InvalidArgument
from .config import DistillConfig

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class State:
    """Everything a run carries from iteration to iteration (all of it checkpointed)."""

    syn: dict[str, torch.Tensor]
    opts: dict[str, torch.optim.Optimizer]
    history: dict[str, list[tuple[int, float]]]
    acc: torch.Tensor            # loss sum per method since the last log point
    acc_n: int = 0
    done: int = 0                # iterations finished
    seconds_before: float = 0.0  # wall time of earlier (interrupted) sessions
    # tracking (engine.trajectory): the points measured so far, uint8 snapshots of the sets at them, and
    # the loss sum per method since the last point
    trajectory: dict[str, list[dict]] = field(default_factory=dict)
    snapshots: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    track_acc: torch.Tensor | None = None
    track_n: int = 0
    # a backbone's own learned values beside the images, by name then method, and their optimisers (MTT's
    # student step size "syn_lr"); each is checkpointed and its final value saved in the set's metadata
    learned: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    learned_opts: dict[str, dict[str, torch.optim.Optimizer]] = field(default_factory=dict)
    # what a backbone records per method over iterations, by name (DREAM's picked batches' aligned share):
    # [(iteration, value), ...], checkpointed and saved in the set's metadata
    records: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)

    def last_tracked(self) -> int:
        """The iteration of the latest track point (-1: none yet)."""
        points = next(iter(self.trajectory.values()), [])
        return points[-1]["iteration"] if points else -1


class Checkpoint:
    """The run's state in one checksummed safetensors file, refused if it belongs to another run."""

    def __init__(self, folder: str | Path | None, fingerprint: str, tracking: bool = False):
        self.path = Path(folder) / CHECKPOINT if folder is not None else None
        self.fingerprint = fingerprint
        self.tracking = tracking

    def load(self, state: State, methods: Sequence[str]) -> None:
        if self.path is None or not self.path.exists():
            return
        tensors, meta = cache.load_tensors(self.path)
        if meta.get("fingerprint") != self.fingerprint:
            raise InvalidArgument(f"{self.path} belongs to another run (different data, methods or settings)",
                                  "use a new checkpoint folder, or delete this one to start over")
        state.done, state.acc_n, state.seconds_before = int(meta["iteration"]), int(meta["acc_n"]), float(meta["seconds"])
        state.history = {m: [tuple(x) for x in meta["history"][m]] for m in methods}
        state.acc = tensors["loss_acc"].to(state.acc.device)
        for name in state.records:  # the fingerprint names the backbone: its records are there
            state.records[name] = {m: [tuple(x) for x in meta["records"][name][m]] for m in methods}
        for m in methods:
            with torch.no_grad():
                state.syn[m].copy_(tensors[f"{m}.images"].to(state.syn[m].device))
            if f"{m}.momentum" in tensors:
                state.opts[m].state[state.syn[m]]["momentum_buffer"] = tensors[f"{m}.momentum"].to(
                    state.syn[m].device).clone()
            for name, values in state.learned.items():  # the fingerprint names the backbone: these keys are there
                if m not in values:
                    continue
                value = values[m]
                with torch.no_grad():
                    value.copy_(tensors[f"{m}.{name}"].reshape(value.shape).to(value.device))
                if f"{m}.{name}_momentum" in tensors:
                    state.learned_opts[name][m].state[value]["momentum_buffer"] = tensors[f"{m}.{name}_momentum"].reshape(
                        value.shape).to(value.device).clone()
        if self.tracking:  # the fingerprint names the tracking, so these keys are there
            state.trajectory = {m: list(meta["trajectory"][m]) for m in methods}
            state.snapshots = {m: list(tensors[f"{m}.snapshots"].unbind(0)) if f"{m}.snapshots" in tensors else []
                               for m in methods}
            state.track_acc, state.track_n = tensors["track_acc"].to(state.acc.device), int(meta["track_n"])

    def save(self, state: State, cfg: DistillConfig, methods: Sequence[str], seconds: float) -> None:
        if self.path is None:
            return
        tensors = {"loss_acc": state.acc}
        meta = {"fingerprint": self.fingerprint, "iteration": state.done, "acc_n": state.acc_n, "seconds": seconds,
                "history": state.history, "config": cfg.key(), "methods": list(methods)}
        if state.records:
            meta["records"] = state.records
        for m in methods:
            tensors[f"{m}.images"] = state.syn[m].detach()
            buf = state.opts[m].state.get(state.syn[m], {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"{m}.momentum"] = buf
            for name, values in state.learned.items():
                if m not in values:
                    continue
                tensors[f"{m}.{name}"] = values[m].detach().reshape(-1)  # safetensors: no 0-d views
                buf = state.learned_opts[name][m].state.get(values[m], {}).get("momentum_buffer")
                if buf is not None:
                    tensors[f"{m}.{name}_momentum"] = buf.reshape(-1)
        if self.tracking:
            tensors["track_acc"] = state.track_acc
            meta.update(trajectory=state.trajectory, track_n=state.track_n)
            for m in methods:
                if state.snapshots.get(m):
                    tensors[f"{m}.snapshots"] = torch.stack(state.snapshots[m])
        cache.save_tensors(self.path, tensors, meta)
