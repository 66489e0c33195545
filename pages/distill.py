"""Distill page: choose methods and settings, run in the background, live loss curves, synthetic grids."""
from __future__ import annotations

import streamlit as st

from engine import distill
from ui import distill_jobs, distill_view, jobs, roles, state


def form(s: state.Settings, train) -> dict | None:
    """The run settings and the time they should take; returns them when Start is pressed. Plain widgets,
    not an st.form: the estimate follows every change before Start."""
    methods_all, algorithms = list(distill.METHODS), list(distill.algorithms())
    tiny = state.tiny()
    with st.container(border=True):
        c1, c2, c3 = st.columns([3, 1, 1])
        methods = c1.multiselect("Methods (distilled side by side)", methods_all,
                                 default=list(distill_jobs.UI_METHODS), key="dst_methods",
                                 help="; ".join(distill.REGISTRY[m].label for m in methods_all) + ". The default "
                                      "(vanilla, the label-free KDE and the label-using FairDD) shows the contrast "
                                      "in about a minute on 2 cores; add COBRA and balanced here.")
        algorithm = c2.selectbox("Algorithm", algorithms, key="dst_algorithm",
                                 format_func=lambda a: distill.BACKBONES[a].label,
                                 help="; ".join(f"{b.label}: {b.summary}" for b in distill.BACKBONES.values()) + ".")
        preset = c3.selectbox("Preset", ("quick", "paper"), key="dst_preset",
                              help="quick: CPU minutes; paper: the published settings (GPU hours).")
        c4, c5, c6, c7 = st.columns(4)
        ipc = c4.number_input("Images per class (IPC)", 1, 500, 2 if tiny else distill_jobs.UI_IPC, key="dst_ipc",
                              help="The dashboard starts at 5 (a first result in about a minute); the papers' "
                                   "headline setting is 10.")
        default_iters = distill_jobs.default_iterations(preset, algorithm)
        iterations = c5.number_input("Iterations (0 = preset default)", 0, 100000, 0, key="dst_iterations",
                                     help=f"The {preset} preset uses {default_iters} for {algorithm}.")
        eval_seeds = c6.number_input("Evaluation trainings per set", 1, 10, distill_jobs.UI_EVAL_SEEDS,
                                     key="dst_eval_seeds",
                                     help="Fresh ConvNets trained on each set; 2 or more give a ± spread. "
                                          "The dashboard defaults to 1 to keep a CPU run to minutes; "
                                          "the CLI uses the preset's (3 for quick, 5 for paper).")
        own = backbone_options(preset, algorithm)
        evaluate = c7.checkbox("Evaluate + audit after distilling", value=True, key="dst_evaluate",
                               help="Train fresh ConvNets on each synthetic set, measure group accuracies and "
                                    "the attribute probe's aligned share (Results page).")
        baseline = st.checkbox("Also evaluate a random-real baseline", value=distill_jobs.UI_BASELINE,
                               key="dst_baseline",
                               help="IPC random real training images per class, evaluated like the synthetic "
                                    "sets (the 'random' row on Results): what distillation must beat. One more "
                                    "evaluation; the CLI audit always includes it unless --no-baseline.")
        if "kde" in methods:
            kv, temp = state.kde_choice(state.current())
            st.caption(f"KDE uses kernel variance {f'{kv:.3g}' if kv else '(suggested by the engine)'} and "
                       f"temperature {temp:g} (set them on the Embeddings page).")
        choice = {"methods": distill_jobs.order(methods), "algorithm": algorithm, "preset": preset, "ipc": int(ipc),
                  "iterations": int(iterations) or None, "evaluate": bool(evaluate), "eval_seeds": int(eval_seeds),
                  "baseline": bool(baseline), "options": own}
        if methods:
            st.caption(f"Estimated time: {distill_jobs.estimate_text(s, choice, train)}", help=distill_jobs.ESTIMATE_HELP)
        go = st.button("Start distillation", type="primary", key="dst_start")
    if not go:
        return None
    if not methods:
        st.error(f"No method chosen.\n\n**Fix:** pick at least one of {', '.join(methods_all)}.",
                 icon=":material/error:")
        return None
    return choice


def backbone_options(preset: str, algorithm: str) -> dict:
    """The chosen backbone's own settings, one field each (defaults: the preset's), as {name: value}."""
    fields = distill_jobs.backbone_fields(preset, algorithm)
    if not fields:
        return {}
    values = {}
    for col, (option, default) in zip(st.columns(len(fields)), fields):
        kind = float if option.kind is float else int
        values[option.name] = col.number_input(option.label, kind(option.low), kind(option.high), kind(default),
                                               key=f"dst_{algorithm}_{option.name}", help=f"{option.help}.")
    return values


def current_job() -> jobs.Job | None:
    """The run this session started, else the newest run of the server."""
    reg = jobs.registry()
    job = reg.by_id(st.session_state.get("distill_job", ""))
    if job is None:
        runs = reg.jobs("distill")
        job = runs[0] if runs else None
    return job


def start(s: state.Settings, choice: dict, train) -> None:
    """Start the chosen run (if this browser session may), or attach this page to the job already computing the
    same request."""
    refusal = roles.may_start(dataset=s.dataset, preset=choice["preset"], algorithm=choice["algorithm"],
                              methods=choice["methods"], ipc=choice["ipc"], iterations=choice["iterations"],
                              eval_seeds=choice["eval_seeds"])
    if refusal:
        roles.refuse(refusal)
        return
    try:
        job = distill_jobs.start(s, choice, train, claimant=roles.claimant(), guest=roles.is_guest())
    except state.DDAuditError as exc:
        state.show_error(exc, "Could not start: ")
        return
    roles.remember(job)
    st.session_state["distill_job"] = job.id


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Distill")
    pair = state.require_dataset(s)
    if pair is None:
        return
    train, _ = pair
    st.caption(f"{s.dataset} at conflict ratio {s.ratio:.1%}, seed {s.seed}. "
               + ("Tiny mode: the engine's tiny presets. " if state.tiny() else ""))
    choice = form(s, train)
    if choice is not None:
        start(s, choice, train)
    job = current_job()
    if job is None:
        st.caption("No run yet: choose settings and press Start.")
        return
    st.divider()
    st.markdown(f"**{job.label}**")
    if not job.done:
        jobs.live(job.id, jobs.progress_text, distill_view.live_curves, cancel="Cancel run",
                  note="The run works in the background: other pages stay usable; come back here to watch it.")
    elif job.status == "finished":
        distill_view.show_result(job)
    else:
        problem, fix = jobs.error_text(job)
        if job.status == "cancelled":
            st.warning(f"{problem}\n\n**Next:** {fix or 'start it again to resume from its checkpoint'}", icon=":material/stop_circle:")
        else:
            st.error(f"{problem}\n\n**Fix:** {fix}", icon=":material/error:")


state.page("Distill", draw)
