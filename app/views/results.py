"""Results: accuracy vs compute of every bundled model (the Pareto view), the measured speed and the seeds.

The same numbers as the README's results section: checkpoint metas (``models.evaluate``), ``bench.json``
(``tools.bench --save``) and the replicated experiments (``analysis.experiments``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from routescope.analysis.core.catalog import bundled_checkpoints, models_folder
from routescope.analysis.core.charts import accuracy_vs_macs
from routescope.analysis.core.runs import checkpoint_paths, display_table, seeds_table
from routescope.analysis.core.pareto import models_frame, pareto_front
from routescope.analysis.results import SPEED_COLUMNS, bench_source, saved_bench, seed_sources
from routescope.app.formatting import show_table


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


LATENCY_COLUMNS = ["model", "vs", "mac_ratio", "latency_ms", "latency_ratio", "interval", "difference"]
THROUGHPUT_COLUMNS = ["model", "vs", "batch", "throughput", "throughput_ref", "throughput_ratio"]


def speed_frame(rows: list[dict]) -> pd.DataFrame:
    """The bench's rows (``SPEED_COLUMNS``), with the batch-1 latency ratio's interval (the interquartile range of the
    alternating rounds) and what it says: an interval that holds 1 is within the run's noise, no measurable
    difference (the bench's own rule, ``analysis.results.target_status``)."""
    frame = pd.DataFrame(rows)
    low = frame.get("latency_ratio_low", pd.Series(float("nan"), index=frame.index))
    high = frame.get("latency_ratio_high", pd.Series(float("nan"), index=frame.index))
    frame["interval"] = [f"{a:.2f}–{b:.2f}" if pd.notna(a) and pd.notna(b) else "–" for a, b in zip(low, high)]
    frame["difference"] = [
        "–" if pd.isna(a) or pd.isna(b) else "within noise" if a <= 1 <= b else "faster" if b < 1 else "slower"
        for a, b in zip(low, high)
    ]
    return frame.reindex(columns=[*SPEED_COLUMNS, "interval", "difference"])


SPEED_CONFIG = {
    "mac_ratio": st.column_config.NumberColumn("MACs of ref.", format="%.0f%%", help="MACs / the reference's"),
    "latency_ms": st.column_config.NumberColumn(
        "latency", format="%.2f ms", help="batch 1, median per image (the reference's: latency / ratio)"
    ),
    "interval": st.column_config.TextColumn("ratio interval", help="interquartile range of the per-round ratios"),
    "difference": st.column_config.TextColumn(
        "batch-1 difference", help="within noise: the ratio's interval holds 1, no measurable difference"
    ),
}


st.title("Results")
st.caption(
    "Every bundled model at once: accuracy against the MACs it executes, the measured speed against its dense "
    "reference, and the spread over seeds. Try: hover a point for its model, sort a table by a column."
)
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
table = shown.assign(on_front=shown["name"].isin(front["name"]))
show_table(
    table.sort_values("macs_mean"),
    most=12,
    column_order=["name", "method", "test_acc", "macs_mean", "mac_ratio", "params", "on_front"],
    column_config={"on_front": st.column_config.CheckboxColumn("Pareto front")},
)
sizes = sorted({int(n) for n in shown["n_test"].dropna()})
st.caption(f"Measured on {' or '.join(f'{n:,}' for n in sizes)} test images of {dataset}; of dense: mean MACs / dense.")

st.subheader("Speed")
bench = folder / "bench.json"
try:
    record = saved_bench(bench)
    if record is None:
        st.info(f"No benchmark saved: `python -m tools.bench --save {bench}` measures every model.")
    else:
        st.caption(bench_source(record))
        speed = speed_frame(record["rows"])
        st.markdown("**Batch-1 latency** against the reference, timed alternately")
        show_table(speed, column_order=LATENCY_COLUMNS, column_config=SPEED_CONFIG)
        st.markdown("**Throughput** at the batch size")
        show_table(speed, column_order=THROUGHPUT_COLUMNS, column_config=SPEED_CONFIG)
except (ValueError, KeyError, TypeError) as e:
    st.warning(f"`{bench}` could not be read ({e}); run `python -m tools.bench --save {bench}` again.")

st.subheader("Seeds")
sources = seed_sources(folder)
if not sources:
    st.info("No replicated experiments in this models folder.")
for title, paths in sources.items():
    st.markdown(f"**{title}**")
    seeds = _seeds(_files_key(checkpoint_paths(paths)))
    same = [c for c in ("dataset", "varies") if c in seeds and seeds[c].nunique() == 1]  # said once, not per row
    show_table(seeds, column_order=[c for c in seeds.columns if c not in same])
    said = " · ".join(f"{c}: {seeds[c].iloc[0]}" for c in same if seeds[c].iloc[0] != "-")
    if said:
        st.caption(f"Every row: {said}.")
