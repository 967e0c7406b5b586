"""Training: follow a run from its ``OUT/NAME.metrics.jsonl`` (written by ``python -m models.train`` after every
epoch), with its loss and accuracy curves per epoch and stage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from routescope.analysis.core.catalog import models_folder
from routescope.analysis.core.training_log import MetricsError, metrics_files, read_metrics
from routescope.app.formatting import percent, show_table
from routescope.models.data import REPO_ROOT

REFRESH_S = 5


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _curves(frame: pd.DataFrame) -> None:
    last = frame.iloc[-1]
    cols = st.columns(4)
    cols[0].metric("Epochs done", len(frame))
    cols[1].metric("Stage", str(last["stage"]))
    cols[2].metric("Test accuracy", percent(last["test_acc"], 2))
    cols[3].metric("Elapsed", f"{float(last.get('elapsed_s', 0.0)) / 60:.1f} min")
    x = "global_epoch"
    loss = px.line(
        frame,
        x=x,
        y="train_loss",
        color="stage",
        markers=True,
        title="Training loss",
        labels={x: "epoch (whole run)", "train_loss": "loss"},
    )
    st.plotly_chart(loss, key="training-loss")
    present = [c for c in ("train_acc", "test_acc") if c in frame]
    acc = frame.melt(id_vars=[x, "stage"], value_vars=present, var_name="split", value_name="accuracy")
    acc["split"] = acc["split"].str.removesuffix("_acc")
    fig = px.line(
        acc,
        x=x,
        y="accuracy",
        color="stage",
        line_dash="split",
        markers=True,
        title="Accuracy",
        labels={x: "epoch (whole run)"},
    )
    fig.update_layout(yaxis=dict(tickformat=".1%", hoverformat=".2%"))
    st.plotly_chart(fig, key="training-accuracy")
    if "lr" in frame:
        st.plotly_chart(
            px.line(
                frame,
                x=x,
                y="lr",
                color="stage",
                markers=True,
                title="Learning rate (end of epoch)",
                labels={x: "epoch (whole run)", "lr": "learning rate"},
            ),
            key="training-lr",
        )
    with st.expander("Every epoch row"):
        show_table(frame)


def run_files() -> dict[str, Path]:
    """The metrics files the page may open, by label: ``*.metrics.jsonl`` under the project's run folders only (the
    models folder with its ``experiments/``, and ``runs/``), never a path a user types: the page must not become a
    way to read other files on the server (a link inside a run folder that leads out of it is left out too)."""
    roots = [root.resolve() for root in (models_folder(), REPO_ROOT / "runs") if root.is_dir()]
    files = {}
    for path in metrics_files(roots):
        real = path.resolve()
        if real.name.endswith(".metrics.jsonl") and real.is_file() and any(real.is_relative_to(r) for r in roots):
            files[_label(path)] = path
    return files


st.title("Training")
st.caption(
    "A training run's loss, accuracy and learning rate per epoch, stage by stage. "
    "`python -m models.train ... --out runs` appends one line per epoch to `runs/NAME.metrics.jsonl` beside "
    "the checkpoint. Try: pick a run from the bundled models, their experiments or `runs/`, and follow a live one."
)
labels = run_files()
picked = st.selectbox(
    "Metrics file", list(labels), key="training-file", placeholder="no metrics file under models/pretrained or runs/"
)
path = labels.get(picked)
follow = st.toggle(f"Follow the run (refresh every {REFRESH_S} s)", key="training-follow")


@st.fragment(run_every=REFRESH_S if follow else None)
def show(path: Path | None) -> None:
    if path is None:
        st.info(
            "No metrics file yet: train a model with `python -m models.train ... --out runs`; its run appears here."
        )
        return
    st.button("Refresh", key="training-refresh", icon=":material/refresh:")
    try:
        frame = read_metrics(path)
    except MetricsError as e:
        st.error(f"Cannot show this run: {str(e).replace(str(path), _label(path))}")
        return
    if frame.empty:
        st.info(f"`{_label(path)}`: no epoch has finished yet.")
        return
    _curves(frame)


show(path)
