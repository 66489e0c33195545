"""The bundled example (assets/example): finished runs a newcomer sees before computing anything.

`make assets` (`python -m engine example build`) computes them in a temporary home: a five-method quick
audit of colored-digits, the noise-start demo of the Dataset page and a small sweep. Their results are
copied into assets/example with a manifest (checkpoints never; a sweep cell keeps only what the sweep
plots and the Runs page read). The dashboard installs that copy on its first start into
DDAUDIT_HOME/example, a run store of its own: read-only for the user (`runs rm` refuses it), never
reused for a user's request, and replaced whenever the bundle changes (docs/DASHBOARD.md). The bundle also
carries the example split's SupCon embeddings and attribute probe (assets/example/cache), copied into the
user's cache on install: a first own run on that split does not train them again.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import cache, distill, pipeline
from .distill.sets import SET_FILE, TRAJECTORY_FILE
from .errors import DDAuditError, InvalidArgument
from .version import __version__
from .store import STORE_VERSION, RunStore, holds_run, run_id_for

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "example"
MANIFEST = "manifest.json"
BUILD_COMMAND = "make assets"
SWITCH = "DDAUDIT_EXAMPLE"  # 0/off: the app neither installs nor shows the example
BUNDLE_VERSION = 1
MAX_BYTES = 15 * 2 ** 20  # the bundle as stored in assets/ (files that compress are stored gzipped)
GZIP_GAIN = 0.8  # a file is stored gzipped when that makes it at most 80% of its size (reports, snapshots)
CELL_DROPS = (SET_FILE, TRAJECTORY_FILE)  # a sweep cell's sets: no sweep plot reads them (size)
CACHES = "cache"  # the bundle's copy of the example split's SupCon embeddings and attribute probe

DATASET, RATIO, SEED = "colored-digits", 0.05, 0


def audit_request() -> pipeline.Request:
    """The example audit: every method, DM, quick, IPC 5, 3 evaluation trainings, the random baseline."""
    return pipeline.Request(DATASET, RATIO, distill.METHODS, "dm", ipc=5, preset="quick", seed=SEED, eval_seeds=3,
                            baseline=True, track_every=25)


def demo_request(preset: str = "quick") -> pipeline.Request:
    """"Watch the bias amplify": a shared noise start, 200 iterations, the aligned share every 40 (the tiny
    preset, for tests, keeps its own few iterations)."""
    overrides = {"init": "noise", "iterations": 200} if preset != "tiny" else {"init": "noise"}
    return pipeline.Request(DATASET, RATIO, ("vanilla", "kde", "fairdd"), "dm", ipc=5, preset=preset, seed=SEED,
                            eval_seeds=1, baseline=False, track_every=40 if preset != "tiny" else 2,
                            distill_overrides=overrides)


def sweep_grid():
    """A small sweep: two ratios x three kernel variances x two seeds, vanilla and KDE, one training per set."""
    from . import sweep
    return sweep.make_grid(DATASET, "0.02,0.05", "0.1,1,suggested", "vanilla,kde", "5", "0,1", preset="quick",
                           eval_seeds=1)


def enabled() -> bool:
    """Whether the app shows the example (DDAUDIT_EXAMPLE unset or not 0/off/false)."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def installed_root() -> Path:
    """Where the app installs the example's store: DDAUDIT_HOME/example."""
    return cache.home() / "example"


def read_manifest(folder: Path = ASSET_DIR) -> dict | None:
    """The bundle's manifest, None when there is no bundle."""
    path = folder / MANIFEST
    return cache.read_json(path) if path.is_file() else None


def roles(folder: Path = ASSET_DIR) -> dict[str, str]:
    """The bundle's run id per role ("audit", "demo", "sweep"); {} without a manifest."""
    return (read_manifest(folder) or {}).get("roles") or {}


def stale(manifest: dict | None = None) -> list[str]:
    """Why the bundle no longer matches this code ([] when it does)."""
    m = read_manifest() if manifest is None else manifest
    if m is None:
        return [f"no bundled example in {ASSET_DIR}"]
    found = []
    for key, now in (("ddaudit", __version__), ("store", STORE_VERSION), ("bundle", BUNDLE_VERSION)):
        if m.get(key) != now:
            found.append(f"made with {key} version {m.get(key)!r}, this code is {now!r}")
    for r in m.get("runs", []):
        if run_id_for(r["kind"], r["config"]) != r["id"]:
            found.append(f"run {r['id']}: its request now has another run id (the run key changed)")
    expected = {"audit": _key("audit", audit_request()), "demo": _key("audit", demo_request())}
    for role, rid in expected.items():
        if m.get("roles", {}).get(role) != rid:
            found.append(f"the {role} request changed (bundled {m.get('roles', {}).get(role)}, now {rid})")
    return found


def _key(kind: str, req: pipeline.Request) -> str:
    return run_id_for(kind, pipeline.run_key(pipeline.plan(req), kind))


def install(force: bool = False) -> RunStore | None:
    """The example's store, installed from the bundle when missing or out of date; None when switched off or
    when there is no usable bundle (the app then starts without it)."""
    root = installed_root()
    if not enabled():
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        return None
    bundle = read_manifest()
    if bundle is None or stale(bundle):
        return None
    missing = any(not holds_run(root / r["id"]) for r in bundle.get("runs", []))
    if force or missing or read_manifest(root) != bundle:
        tmp = root.parent / f".example-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(ASSET_DIR / "runs", tmp)
        for packed in list(tmp.rglob("*.gz")):
            packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
            packed.unlink()
        cache.atomic_write_json(tmp / MANIFEST, bundle)
        old = root.parent / f".example-old-{uuid.uuid4().hex[:6]}"
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    seed_caches(bundle)
    return RunStore(root)


def seed_caches(bundle: dict | None = None) -> list[Path]:
    """Copy the bundle's cached SupCon embeddings and attribute probe into DDAUDIT_HOME/cache where that file
    is missing: a first own run on the example's split (the dashboard's default) reads them instead of training
    them again. Their names are content keys of split and settings, so they are found only where the keys match,
    and each is checksummed when read (a damaged copy is rebuilt)."""
    copied = []
    for rel in (bundle or read_manifest() or {}).get("caches", []):
        kind, name = Path(rel).parts[-2:]
        src, dst = ASSET_DIR / CACHES / kind / name, cache.cache_dir(kind) / cache.safe_name(name)
        if src.is_file() and not dst.exists():
            cache.atomic_write_bytes(dst, src.read_bytes())
            copied.append(dst)
    return copied


def add_caches(out: Path) -> list[str]:
    """The example audit's split: its SupCon embeddings and attribute probe as the current home caches them
    (computed when missing), copied into out/cache/<kind>/; returns their paths relative to out."""
    from . import attribute_probe, data, embed
    req = audit_request()
    p = pipeline.plan(req)
    train = data.load_split(req.dataset, req.conflict_ratio, "train", req.seed)
    embed.get_embeddings(train, p.embed, req.seed)
    attribute_probe.train_probe(train, p.probe_cfg, seed=req.seed, device="cpu")
    rels = []
    for path in (embed._paths(train, p.embed, req.seed)[1], attribute_probe._probe_path(train, p.probe_cfg, req.seed)):
        rel = Path(CACHES) / path.parent.name / path.name
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / rel)
        rels.append(rel.as_posix())
    return rels


def holds(run_id: str) -> bool:
    """Whether a run id is one of the bundled example's runs."""
    m = read_manifest()
    return bool(m) and any(r["id"] == run_id for r in m.get("runs", []))


def refuse_removal(run_id: str) -> None:
    """The clear error for removing a bundled run."""
    raise DDAuditError(f"run {run_id} is the bundled example: it is read-only (it comes from {ASSET_DIR} and is "
                       "installed again on every start)",
                       f"hide the example instead: start the app with {SWITCH}=0 (docs/DASHBOARD.md)")


# --------------------------------------------------------------------------- building (`make assets`)

@contextmanager
def _home(path: Path) -> Iterator[None]:
    old = os.environ.get("DDAUDIT_HOME")
    os.environ["DDAUDIT_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DDAUDIT_HOME", None)
        else:
            os.environ["DDAUDIT_HOME"] = old


def _copy_run(store: RunStore, run_id: str, out: Path, drop: tuple[str, ...] = (), report: bool = True) -> None:
    """A finished run's record and result files into out/runs/<id> (no checkpoints, no log; its report only with
    `report`)."""
    run = store.open(run_id)
    run.copy_to(out / "runs" / run_id, skip=drop + (() if report else (run.report_path.name,)), record=True)


def _pack(folder: Path) -> None:
    """Store every file that gzip shrinks to GZIP_GAIN of its size or less as <name>.gz (install unpacks)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        blob = path.read_bytes()
        packed = gzip.compress(blob, compresslevel=9, mtime=0)
        if len(packed) <= GZIP_GAIN * len(blob):
            path.with_name(path.name + ".gz").write_bytes(packed)
            path.unlink()


def build(out: Path = ASSET_DIR, home: Path | None = None, say=print) -> dict:
    """Compute the example's runs (in `home`, kept, so a rebuild reuses them; else a temporary home) and
    write the bundle to `out` (replacing it)."""
    from . import report, stored, sweep
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ddaudit-example-") as tmp, _home(Path(home or tmp)):
        store = RunStore()
        say("1/3 the example audit (five methods, quick, IPC 5, 3 trainings each)")
        _, audit_run = stored.audit_stored(audit_request())
        report.write([audit_run.id])
        say("2/3 the demo (noise start, 200 iterations)")
        _, demo_run = stored.audit_stored(demo_request())
        say("3/3 a small sweep on a local Ray")
        summary = sweep.run_sweep(sweep_grid())
        cell_ids = list(store.get(summary["run_id"])["metrics"].get("cell_runs") or [])
        staging = out.parent / f".{out.name}-{uuid.uuid4().hex[:6]}"
        roles = {"audit": audit_run.id, "demo": demo_run.id, "sweep": summary["run_id"]}
        for role, rid in roles.items():  # one report is bundled (the audit's): each holds plotly.js (~2 MB gzipped)
            _copy_run(store, rid, staging, report=role != "demo")
        for rid in dict.fromkeys(cell_ids):
            if rid not in roles.values():
                _copy_run(store, rid, staging, drop=CELL_DROPS)
        runs = [{"id": r["id"], "kind": r["kind"], "config": r["config"]}  # the index holds config.json's content
                for r in store.list(status="finished") if (staging / "runs" / r["id"]).is_dir()]
        manifest = {"ddaudit": __version__, "store": STORE_VERSION, "bundle": BUNDLE_VERSION, "command": BUILD_COMMAND,
                    "made": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1), "roles": roles,
                    "runs": sorted(runs, key=lambda r: r["id"]), "caches": add_caches(staging)}
        cache.atomic_write_json(staging / MANIFEST, manifest)
        _pack(staging / "runs")
    size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidArgument(f"the bundle would take {size / 2 ** 20:.1f} MB (limit {MAX_BYTES / 2 ** 20:.0f} MB)",
                              "make the example's requests smaller (engine/example.py)")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    say(f"bundle written to {out}: {len(manifest['runs'])} runs, {size / 2 ** 20:.1f} MB, "
        f"{manifest['seconds']:.0f} s")
    return {**manifest, "bytes": size}

