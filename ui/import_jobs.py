"""The Results page's import: an uploaded set (a file made by other code) kept by its content, read and
checked at once (format, size, normalisation shown), then audited in the background like `audit-set`."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine import cache, classroom, pipeline, set_files, stored
from engine.data import BiasedSplit
from engine.errors import InvalidArgument
from engine.progress import Progress, ShouldStop
from ui import distill_jobs, jobs, state

SUFFIXES = ("pt", "pth", "safetensors")
UI_EVAL_SEEDS = 1  # as the Distill page: one evaluation training per set keeps a CPU import to a minute


@dataclass
class Upload:
    """An uploaded file: its name and bytes."""

    name: str
    data: bytes


def save(uploads: list[Upload]) -> Path:
    """Keep uploaded files in the cache, in a folder named by their content (an MTT pair stays together);
    returns the path of the set (the images file of a pair)."""
    if not uploads:
        raise InvalidArgument("no file uploaded", "upload a .pt, .pth or .safetensors file")
    limit = set_files.MAX_FILE_MB * 2 ** 20
    for u in uploads:
        if Path(u.name).suffix.lstrip(".").lower() not in SUFFIXES:
            raise InvalidArgument(f"{u.name} is not a .pt, .pth or .safetensors file",
                                  "upload a torch or safetensors file (an image folder: `python -m engine audit-set`)")
        if len(u.data) > limit:
            raise InvalidArgument(f"{u.name} is {len(u.data) / 2 ** 20:,.0f} MB, above the import limit of "
                                  f"{set_files.MAX_FILE_MB:,.0f} MB", "a distilled set is small: check the file")
    digest = hashlib.sha256(b"".join(hashlib.sha256(u.data).digest() for u in uploads)).hexdigest()[:24]
    folder = cache.cache_dir("uploads") / digest
    folder.mkdir(parents=True, exist_ok=True)
    for u in uploads:
        cache.atomic_write_bytes(folder / cache.safe_name(Path(u.name).name), u.data)
    names = [cache.safe_name(Path(u.name).name) for u in uploads]
    main = next((n for n in names if n.startswith("images")), names[0])
    return folder / main


def preview(path: Path, train: BiasedSplit, normalization: str | None, name: str) -> set_files.ImportedSet:
    """Read and check the set now (format, images, labels, normalisation): errors show before any work."""
    return set_files.read_set(f"{path}={name}", train, normalization)


def start(s: state.Settings, path: Path, name: str, normalization: str | None, eval_seeds: int,
          claimant: str | None = None, guest: bool = False) -> jobs.Job:
    """Audit the set in the background (a stored run of kind 'import'), or attach to the job already doing it
    (`claimant`, `guest`: as distill_jobs.start)."""
    req = pipeline.SetRequest(s.dataset, s.ratio, (f"{path}={name}",), seed=s.seed, normalization=normalization,
                              preset=state.preset("quick"), eval_seeds=eval_seeds, baseline=False)
    pipeline.plan_sets(req)

    def target(progress: Progress, should_stop: ShouldStop) -> dict:
        results, run = stored.audit_sets_stored(req, progress=progress, should_stop=should_stop, claimant=claimant)
        if classroom.serving():  # the run id is known only once the set is read (it is keyed by content)
            distill_jobs.settle(run.id, guest, existed=run.reused)
        return {"audit": results, "run_id": run.id}

    key = f"import|{s.dataset}|{s.ratio}|{s.seed}|{path}|{name}|{normalization}|{eval_seeds}|{state.preset()}"
    return jobs.registry().submit(key, "import", f"import {name} · {s.dataset} @ {s.ratio:.1%}", target)
