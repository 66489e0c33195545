"""Run: the handle of one run's folder. A computation writes through it (files, log, finish/fail);
pages, the sweep and the report read through it (results, sets, grids, report), never by path."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import cache
from ..distill import sets as set_files
from ..errors import InvalidArgument
from ..results import ordered
from .index import RunIndex
from .records import (CANCEL_FLAG, CHECKPOINTS, CONFIG_FILE, LOG_FILE, METRICS_FILE, REPORT_FILE, RESULTS_FILE,
                      STATUS_FILE, headline, now, plain)

if TYPE_CHECKING:
    from ..distill import SyntheticSet

log = logging.getLogger("ddaudit")


class Run:
    """One run's folder: write results into `dir`, checkpoints into `checkpoint_dir`; its status goes through
    the store's index (status.json, then the index row), never the store itself."""

    def __init__(self, index: RunIndex, run_id: str, kind: str, config: dict,
                 reused: bool = False, resumed: bool = False, created: str | None = None):
        self.index = index
        self.id = run_id
        self.kind = kind
        self.config = config
        self.created = created    # when the run was first started (ISO time), where known
        self.dir = index.root / run_id
        self.checkpoint_dir = self.dir / CHECKPOINTS
        self.reused = reused      # an identical finished run was found; nothing to compute
        self.resumed = resumed    # an earlier attempt left checkpoints in checkpoint_dir
        self.attempt = 1          # 1 for a new run, n for its n-th start

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    # ------------------------------------------------------------------ reading

    @property
    def status(self) -> str:
        """The status on disk (status.json), i.e. the truth."""
        return self.index.read_status(self.dir)["status"]

    @property
    def metrics(self) -> dict:
        """The full metrics of a finished run (CorruptArtifact if metrics.json is damaged)."""
        return self.read_json(METRICS_FILE) or {}

    def read_json(self, name: str) -> Any:
        """A JSON file of the run folder, None when absent (CorruptArtifact when damaged)."""
        path = self.dir / cache.safe_name(name)
        return cache.read_json(path) if path.is_file() else None

    def results(self) -> dict | None:
        """An audit's results (results.json), None when the run holds none."""
        return self.read_json(RESULTS_FILE)

    def methods(self) -> list[str]:
        """The methods whose synthetic sets the run holds, in the canonical order (other names, such as
        imported sets, in the order the run's config lists them)."""
        found = {p.parent.name for p in self.dir.glob(f"*/{set_files.SET_FILE}")}
        listed = [m for m in self.config.get("methods") or [] if m in found]
        return ordered(listed + sorted(found - set(listed)))

    def sets(self, methods: list[str] | tuple[str, ...] | None = None) -> dict[str, "SyntheticSet"]:
        """The stored synthetic sets: of `methods` in their order (those present), else all, canonically."""
        held = self.methods()
        names = held if methods is None else [m for m in methods if m in held]
        return {m: set_files.load_synthetic(self.dir / m) for m in names}

    def grids(self) -> dict[str, Path]:
        """Each method's grid PNG, in the canonical order."""
        found = {p.parent.name: p for p in self.dir.glob(f"*/{set_files.GRID_FILE}")}
        return {m: found[m] for m in self.methods() + sorted(set(found) - set(self.methods()))}

    @property
    def report_path(self) -> Path:
        """Where the run's shareable report lives (`python -m engine report RUN_ID` writes it)."""
        return self.dir / REPORT_FILE

    def result_files(self) -> dict[str, Path]:
        """Every file that makes up the finished run, by relative path: not its checkpoints, status or log,
        which belong to this store, nor the temp files of atomic writes."""
        out = {}
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir)
            if p.is_file() and rel.parts[0] != CHECKPOINTS and rel.name not in (STATUS_FILE, LOG_FILE, CANCEL_FLAG) \
                    and not any(part.startswith(".") for part in rel.parts):
                out[rel.as_posix()] = p
        return out

    def export_files(self) -> dict[str, bytes]:
        """result_files' contents, to store the run elsewhere (a sweep cell computed on another machine)."""
        return {rel: p.read_bytes() for rel, p in self.result_files().items()}

    def import_files(self, files: dict[str, bytes]) -> None:
        """Write another store's export_files into this run's folder (its own config.json is kept)."""
        for rel, blob in files.items():
            parts = Path(rel).parts
            if rel == CONFIG_FILE or not parts or ".." in parts or Path(rel).is_absolute():
                continue
            cache.atomic_write_bytes(self.path(*parts), blob)

    def copy_to(self, folder: str | Path, skip: tuple[str, ...] = (), record: bool = False) -> None:
        """A plain copy of the run's results, sets and grids (result_files) in `folder` (`--out`); file names
        in `skip` are left out; with `record`, its status record too (a run another store can list)."""
        for rel, path in self.result_files().items():
            if Path(rel).name in skip:
                continue
            target = Path(folder, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if record:
            shutil.copy2(self.dir / STATUS_FILE, Path(folder, STATUS_FILE))

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted((p for p in self.checkpoint_dir.rglob("*") if p.is_file() and not p.name.startswith(".")),
                      key=lambda p: (p.stat().st_mtime_ns, p.name))

    # ------------------------------------------------------------------ writing

    def path(self, *parts: str) -> Path:
        """A path inside the run folder (each part checked with safe_name); parents are created."""
        if not parts:
            raise InvalidArgument("empty path inside a run", "name the file to write")
        path = self.dir.joinpath(*(cache.safe_name(p) for p in parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, msg: str) -> None:
        """Append a timestamped line to log.txt."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(f"{now()} {msg}\n")
        log.info("[%s] %s", self.id, msg)

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomically write run.dir/<name> (temp file, fsync, rename)."""
        path = self.path(name)
        cache.atomic_write_json(path, obj)
        return path

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
        """Checksummed safetensors inside the run folder (name may be 'method/synthetic.safetensors')."""
        path = self.path(*name.split("/"))
        cache.save_tensors(path, tensors, meta)
        return path

    def load_tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict]:
        """Load and verify tensors written by save_tensors; CorruptArtifact if damaged."""
        return cache.load_tensors(self.dir.joinpath(*(cache.safe_name(p) for p in name.split("/"))))

    def should_stop(self) -> bool:
        """True once someone asked to cancel this run (pass as `should_stop=` to long functions)."""
        return (self.dir / CANCEL_FLAG).exists()

    def set_status(self, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        """Write status.json (the truth) first, then the index row."""
        self.index.set_status(self.id, self.kind, self.config, status, metrics, error)

    def finish(self, metrics: dict | None = None) -> None:
        """Mark finished: metrics.json first, then status.json, then the index."""
        if metrics is None:
            metrics = self.metrics
        metrics = plain(metrics)
        cache.atomic_write_json(self.dir / METRICS_FILE, metrics)
        self.set_status("finished", metrics=headline(metrics))
        self.log("finished")

    def fail(self, error: str) -> None:
        """Mark failed with a one-line reason; checkpoints are kept for a resume."""
        self.set_status("failed", error=str(error)[:2000])
        self.log(f"failed: {error}")

    def cancel(self, reason: str = "cancelled") -> None:
        """Mark cancelled; checkpoints are kept for a resume."""
        self.set_status("cancelled", error=reason)
        self.log(reason)
