"""Reproduce page: a published table beside ddaudit's stored audits of it, each row coloured by the agreement rule;
the audits not stored yet run in the background (ui.reproduce_jobs: the CLI's `reproduce` path)."""
from __future__ import annotations

import streamlit as st

from engine import reproduce
from engine.figures import reproduce as fig
from engine.report import reproduction_html
from ui import jobs, reproduce_jobs, roles, run_store, state


def command(table: str, rows: str, preset: str, stand_ins: bool) -> str:
    """The CLI line that runs this table's missing audits (and prints the same table)."""
    return (f"python -m engine reproduce {table}" + (f" --rows {rows}" if rows else "")
            + f" --preset {preset}" + (" --stand-ins" if stand_ins else ""))


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Reproduce")
    st.caption("The papers' published tables (engine/tables/) beside the audits of the same rows stored here. "
               "Green: every published metric agrees within the published std and our evaluation noise; yellow: "
               "some; red: none; grey: not compared (not run yet, data missing, backbone not here, a stand-in).")
    tables = reproduce.tables()
    c1, c2, c3 = st.columns([2, 1, 2])
    name = c1.selectbox("Table", list(tables), format_func=lambda t: f"{t}: {tables[t].title}", key="rp_table")
    presets = ("tiny", "quick", "paper") if state.tiny() else ("quick", "paper")
    preset = c2.selectbox("Preset", presets, index=presets.index(state.preset("quick")), key="rp_preset")
    rows = c3.text_input("Rows (filter)", "", key="rp_rows", placeholder="dataset=bg-fmnist,algorithm=dm,ipc=10",
                         help="KEY=VALUE pairs, comma-separated; keys dataset, algorithm, method, ipc, ratio, source")
    stand_ins = st.checkbox("Stand-ins", key="rp_stand_ins",
                            help="Rows whose data is missing, audited on a stand-in (colored-digits for C-MNIST FG): "
                                 "shown apart, grey, never as the published row.")
    table = reproduce.get_table(name)
    plan = reproduce.make_plan(table, reproduce.select(table, reproduce.parse_filter(rows)), preset,
                               stand_ins=stand_ins)
    result = run_store.reproduction(plan)
    c = result["counts"]
    measured = sum(1 for r in result["rows"] if r["status"] == "measured")
    st.markdown(f"**{table.title}**  \n{table.citation}. {table.note}")
    st.metric("Rows measured here", f"{measured} of {len(result['rows'])}",
              help="Rows whose audit is stored at this preset (the others: see their status).")
    st.caption(f"{c['agrees']} agree, {c['partly']} partly, {c['differs']} differ. The quick preset is not the "
               "papers' setting: expect differences there.")
    st.dataframe(fig.styled(result), hide_index=True, key="rp_frame")
    todo = reproduce_jobs.missing(plan, result)
    job = jobs.registry().by_id(st.session_state.get("reproduce_job", ""))
    if job is not None and not job.done:
        st.markdown(f"**{job.label}**")
        jobs.live(job.id, reproduce_jobs.audits_text, cancel="Cancel",
                  cancelling="Cancelling: finished audits are kept; starting again resumes.")
    else:
        if job is not None and job.status != "finished":
            problem, fix = jobs.error_text(job)
            (st.warning if job.status == "cancelled" else st.error)(f"{problem}\n\n**Next:** {fix}")
        if todo:
            st.caption(f"{len(todo)} audit(s) not stored yet: {reproduce_jobs.estimate_text(plan)}. They run on a "
                       "local Ray; each is an ordinary stored audit.")
            if st.button(f"Run {len(todo)} audit(s)", type="primary", key="rp_start"):
                refusal = reproduce_jobs.refusal(todo)  # a classroom server's guest: a reproduction is a sweep
                if refusal:
                    roles.refuse(refusal)
                else:
                    job = reproduce_jobs.start(plan)
                    roles.remember(job)
                    st.session_state["reproduce_job"] = job.id
                    st.rerun()
    st.markdown("The same from the command line (stored audits reused; `--dry-run` shows each audit with its "
                "estimate, `--address` sends them to a Ray cluster):")
    st.code(command(name, rows, preset, stand_ins), language="bash")
    st.download_button("reproduce.html", reproduction_html(result).encode(), f"reproduce-{name}.html", "text/html",
                       key="rp_html")


state.page("Reproduce", draw)
