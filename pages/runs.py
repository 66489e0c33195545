"""Runs page: earlier runs from the run store; pick two or more to compare."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from engine import figures
from ui import result_sources, roles, run_store, state


def run_table(rows: list[dict]) -> pd.DataFrame:
    """One line per run: what it is in words, id, kind, status, when, dataset, ratio, methods, headline accuracies."""
    out = []
    for r in rows:
        cfg, met = r.get("config") or {}, r.get("metrics") or {}
        ratio, methods, ipc = result_sources.run_settings(cfg)
        line = {"run": label(r), "id": r["id"], "kind": r["kind"], "status": r["status"],
                "created": r.get("created", ""), "source": "bundled example" if r.get("example") else "yours",
                "dataset": cfg.get("dataset"), "ratio": ratio, "methods": methods, "ipc": ipc}
        for k, v in met.items():
            if k.startswith("methods.") and k.endswith((".accuracy", ".conflicting_accuracy")) and v is not None:
                _, m, metric = k.split(".", 2)
                line[f"{m} {'acc' if metric == 'accuracy' else 'conf. acc'}"] = v
        if r.get("error"):
            line["error"] = r["error"]
        out.append(line)
    return pd.DataFrame(out)


def label(row: dict) -> str:
    """A run in words, as the Results page names it."""
    if row.get("example"):
        return f"bundled example: {result_sources.example_label(row.get('config') or {})}"
    return result_sources.run_label(row)


def compare(ids: list[str], names: dict[str, str]) -> None:
    """Side by side: differing settings, metrics, and the synthetic grids (`names`: each run in words)."""
    cmp = run_store.compare(ids)
    if cmp["config_diff"]:
        st.markdown("**Settings that differ**")
        st.dataframe(pd.DataFrame(cmp["config_diff"]).T.astype(str))
    with st.expander("Settings they share"):
        st.json(cmp["config_same"], expanded=False)
    frames = {}
    for i in ids:
        info = run_store.info(i)
        if isinstance(info.get("metrics"), dict) and info["metrics"].get("methods"):
            df = figures.metrics_frame(info["metrics"])
            if df.notna().any().any() and "accuracy" in df and df["accuracy"].notna().any():
                frames[i] = df
    if frames:
        st.plotly_chart(figures.runs_comparison(frames), key="runs_cmp_bars")
        st.dataframe(pd.concat({i: figures.metrics_text(df) for i, df in frames.items()}, names=["run", "method"]))
    metric_rows = {k: v for k, v in cmp["metrics"].items() if not k.endswith("group_accuracy")}
    if metric_rows:
        with st.expander("Every headline metric"):
            st.dataframe(pd.DataFrame(metric_rows).T.astype(str))
    st.markdown("**Synthetic sets** (one row per class)")
    for i in ids:
        found = run_store.grids(i)
        if not found:
            continue
        st.caption(names.get(i, i))
        if result_sources.grids_side_by_side(result_sources.image_sizes(found)):
            for col, (m, p) in zip(st.columns(max(3, len(found))), found.items()):
                col.image(str(p), caption=m, width="content")
        else:  # wide grids (IDC, DREAM): one under another
            for m, p in found.items():
                st.image(str(p), caption=m, width="content")


def remove_button(col, run_id: str) -> None:
    """A confirmed removal of one of the user's runs (a guest of a classroom server is told why not)."""
    refusal = roles.may_remove()
    with col.popover("Remove this run"):
        if refusal:
            roles.refuse(refusal)
            return
        st.write(f"Delete {run_id} and its files?")
        if st.button("Yes, remove", key="runs_rm", type="primary"):
            run_store.remove(run_id)
            st.rerun()


def draw(s: state.Settings) -> None:
    """Draw the page."""
    st.title("Runs")
    rows = run_store.rows()
    n_ex = sum(bool(r.get("example")) for r in rows)
    size = f", {run_store.store_size()}" if roles.is_owner() else ""
    st.caption(f"{len(rows) - n_ex} run(s){size}"
               + (f", and {n_ex} of the bundled example (read-only; `make assets` made them)" if n_ex else "")
               + ". Identical requests reuse a finished run"
               + ("; `python -m engine runs gc --dry-run` shows what could be removed (never a running, kept or "
                  "referenced run)." if roles.is_owner() else "."))
    if roles.serving() and roles.is_owner():
        st.caption(run_store.guest_usage(roles.limits().guest_disk_bytes))
    st.caption(run_store.queue_text())
    if not rows:
        st.info("No runs yet: start one on the Distill page.", icon=":material/info:")
        return
    df = run_table(rows)
    st.dataframe(df.set_index("run"), key="runs_table")
    ids = [r["id"] for r in rows]
    names = dict(zip(df["id"], df["run"]))
    picked = st.multiselect("Compare runs (pick two or more)", ids, default=ids[:2] if len(ids) >= 2 else ids,
                            key="runs_pick", format_func=lambda i: names.get(i, i))
    c1, c2, c3 = st.columns(3)
    if len(picked) == 1:
        if c1.button("Show in Results", key="runs_to_results"):
            st.session_state["results_run"] = picked[0]
            st.switch_page("pages/results.py")
        if run_store.is_example(picked[0]):
            c2.caption("Bundled example: read-only (hide it with DDAUDIT_EXAMPLE=0).")
        else:
            remove_button(c2, picked[0])
        with c3:
            info = run_store.info(picked[0])
            st.download_button("Run metrics (JSON)", json.dumps(info.get("metrics", {}), indent=2).encode(),
                               f"{picked[0]}.json", "application/json", key="runs_json")
    if picked:
        compare(picked, names)
    if len(picked) == 1:
        st.caption("Pick a second run to compare.")


state.page("Runs", draw)
