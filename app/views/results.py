"""Results: accuracy vs compute of every bundled model (the Pareto view), the measured speed and the seeds.

The same numbers as the README's results section: checkpoint metas (``models.evaluate``), ``bench.json``
(``tools.bench --save``) and the replicated experiments (``analysis.experiments``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.core.catalog import bundled_checkpoints, models_folder
from analysis.core.charts import accuracy_vs_macs
from analysis.core.runs import checkpoint_paths, display_table, seeds_table
from analysis.core.pareto import models_frame, pareto_front
from analysis.results import SPEED_COLUMNS, bench_source, saved_bench, seed_sources


def _files_key(paths) -> tuple:
    """Paths with their mtimes: a retrained checkpoint must not show the last run's numbers."""
    return tuple(sorted((str(p), p.stat().st_mtime) for p in paths))


@st.cache_data(show_spinner="Reading the checkpoints…")
def _models(key: tuple) -> tuple[pd.DataFrame, list[str]]:
    problems: list[str] = []
    return models_frame([path for path, _ in key], on_error=problems.append), problems


@st.cache_data(show_spinner=False)
def _seeds(key: tuple) -> pd.DataFrame:
    return display_table(seeds_table([path for path, _ in key]))


st.title("Results")
folder = models_folder()
frame, problems = _models(_files_key(bundled_checkpoints(folder).values()))
for problem in problems:
    st.warning(f"Left out: {problem}")
if frame.empty:
    st.info(
        f"No evaluated checkpoints in `{folder}`: train one with `python -m models.train` (it evaluates at the end)."
    )
    st.stop()

st.subheader("Accuracy vs compute")
st.caption(
    "Mean MACs executed per image and test accuracy, measured by `python -m models.evaluate` at the end of "
    "training. The dashed line is the Pareto front: the models no other model beats on both."
)
datasets = sorted(frame["dataset"].dropna().unique())
dataset = st.selectbox("Data set", datasets) if len(datasets) > 1 else datasets[0]
shown = frame[frame["dataset"] == dataset]
front = pareto_front(shown)
st.plotly_chart(accuracy_vs_macs(shown, front), key="pareto")
table = shown.assign(
    on_front=shown["name"].isin(front["name"]), test_acc=shown["test_acc"] * 100, macs_mean=shown["macs_mean"] / 1e6
)
st.dataframe(
    table.sort_values("macs_mean"),
    hide_index=True,
    column_config={
        "test_acc": st.column_config.NumberColumn("test accuracy (%)", format="%.2f"),
        "macs_mean": st.column_config.NumberColumn("mean MACs (M)", format="%.2f"),
        "mac_ratio": st.column_config.NumberColumn("of dense", format="%.3f"),
        "on_front": st.column_config.CheckboxColumn("Pareto front"),
    },
)

st.subheader("Speed")
bench = folder / "bench.json"
try:
    record = saved_bench(bench)
    if record is None:
        st.info(f"No benchmark saved: `python -m tools.bench --save {bench}` measures every model.")
    else:
        st.caption(bench_source(record))
        st.dataframe(pd.DataFrame(record["rows"]).reindex(columns=list(SPEED_COLUMNS)), hide_index=True)
except (ValueError, KeyError, TypeError) as e:
    st.warning(f"`{bench}` could not be read ({e}); run `python -m tools.bench --save {bench}` again.")

st.subheader("Seeds")
sources = seed_sources(folder)
if not sources:
    st.info("No replicated experiments in this models folder.")
for title, paths in sources.items():
    st.markdown(f"**{title}**")
    st.dataframe(_seeds(_files_key(checkpoint_paths(paths))), hide_index=True)
