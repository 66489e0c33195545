"""What the Embeddings page computes: the map job (SupCon embeddings, UMAP, suggested kernel variance),
the KDE weights behind its sliders (cached), and a stored run's sets placed on the map (cached)."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from engine import density, embed, projection, trajectory
from engine.data import BiasedSplit
from engine.device import pick_device
from engine.progress import Progress, ShouldStop, report
from ui import jobs, run_store, state


def map_key(s: state.Settings) -> str:
    """Job key of the embeddings and their UMAP map for these settings."""
    return f"map|{s.dataset}|{s.ratio}|{s.seed}|{state.preset()}|{state.map_points()}"


def start_map_job(s: state.Settings, train: BiasedSplit) -> jobs.Job:
    """Embeddings (cached by the engine) + UMAP + suggested kernel variance, in the background."""
    preset = state.preset()
    max_points = state.map_points()

    def target(progress: Progress, should_stop: ShouldStop) -> dict:
        z = embed.get_embeddings(train, preset=preset, seed=s.seed, device=pick_device(), progress=progress)
        z = z.detach().float().cpu()
        report(progress, "umap", 0, 1)
        row_ids, coords = projection.umap_map(z, train.targets, train.aligned, max_points, s.seed)
        row_ids, coords = np.asarray(row_ids, dtype=np.int64), np.asarray(coords, dtype=float)
        report(progress, "umap", 1, 1)
        s2 = density.suggest_kernel_variance(z, train.targets)
        return {"z": z, "row_ids": row_ids, "coords": coords, "suggested": float(s2)}

    return jobs.registry().submit(map_key(s), "map", f"embeddings + UMAP of {s.dataset}", target,
                                  config={"dataset": s.dataset, "ratio": s.ratio, "seed": s.seed})


@st.cache_data(show_spinner=False, max_entries=32)
def _log_density(key: str, s2: float, _z, _labels) -> np.ndarray:
    """Per-class KDE log-densities for one kernel variance (cached; independent of the temperature)."""
    return density.kde_log_density(_z, _labels, s2).detach().cpu().numpy().astype(float)


@st.cache_data(show_spinner=False, max_entries=64)
def weights_for(key: str, s2: float, temperature: float, _z, _labels, _aligned) -> dict:
    """KDE log-densities, weights and diagnostics for one kernel variance and temperature (cached).

    The O(n^2) density depends on the kernel variance only: a temperature change reuses it."""
    log_f = _log_density(key, s2, _z, _labels)
    w, diag = density.weigh(torch.from_numpy(log_f), _labels, _aligned, temperature)
    return {"log_density": log_f, "weights": w.detach().cpu().numpy().astype(float), "diagnostics": diag}


def kernel_variance_options(suggested: float) -> tuple[list[float], float]:
    """Log-spaced kernel variances around the suggested one (1/100 x .. 10 x), and the suggested one as
    the slider shows it (rounded to 3 digits)."""
    opts = [float(f"{suggested * 10 ** (k / 6):.3g}") for k in range(-12, 7)]
    return opts, opts[12]


def kde_choice(s2: float, shown_suggestion: float) -> float | None:
    """The kernel variance a run should ask for: None when the slider sits on the suggestion (the engine
    then suggests the very same, unrounded, value: the CLI's default request), else the chosen one."""
    return None if s2 == shown_suggestion else float(s2)


def overlay_sources(s: state.Settings) -> dict[str, str]:
    """Label -> run id of the finished stored runs distilled from this very split (dataset, ratio, seed)."""
    return {f"{'bundled example · ' if r.get('example') else ''}{r['id']} · {'+'.join(r['config'].get('methods') or [])}"
            f" · {r['created'][:16]}": r["id"]
            for r in run_store.finished(("distill", "audit", "import"), dataset=s.dataset, seed=s.seed,
                                        conflict_ratio=s.ratio)
            if not r.get("example") or run_store.stored_methods(r["id"])}


@st.cache_data(show_spinner="Embedding the synthetic sets and placing them on the map...", max_entries=16)
def placed_sets(key: str, run_id: str, _train, _z_map, _coords, seed: int) -> tuple[dict, dict]:
    """(trajectory.map_positions of a stored run's sets, their final uint8 images), cached per map and run."""
    run = run_store.open_run(run_id)
    sets = run.sets() if run else {}
    encoder = embed.get_encoder(_train, state.preset(), seed, pick_device())
    placed = trajectory.map_positions(encoder, _z_map, _coords, sets)
    return placed, {m: s.to_uint8().numpy() for m, s in sets.items()}
