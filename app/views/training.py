"""Training: follow a run from its ``OUT/NAME.metrics.jsonl`` (written by ``python -m models.train`` after every
epoch), with its loss and accuracy curves per epoch and stage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from routescope.analysis.core.catalog import featured_names, models_folder
from routescope.analysis.core.training_log import SUFFIX, MetricsError, metrics_files, read_metrics
from routescope.app.formatting import percent, show_table
from routescope.models.data import REPO_ROOT
from routescope.models.factory import read_manifest

REFRESH_S = 5
EPOCH_AXIS = dict(tickformat="d", dtick=None, tick0=1, rangemode="tozero")  # whole epochs: no 0.5 ticks
LEGEND = dict(orientation="h", yanchor="top", y=-0.25, x=0, title=None)  # below: the chain's stage names are long


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def chained(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """A bundled model's epochs after those of the runs its chain started from (``init_from`` links: the manifest's
    ``chain``), each run a stage named ``RUN: STAGE`` and the epochs counted over the whole chain; a run outside the
    manifest, or one whose earlier runs' metrics are missing, alone."""
    name = path.name.removesuffix(SUFFIX)
    chain = read_manifest(path.parent).get(name, {}).get("chain") or [name]
    frames = []
    for run in chain:
        part = frame if run == name else None
        if part is None:
            try:
                part = read_metrics(path.parent / f"{run}{SUFFIX}")
            except MetricsError:
                return frame
        frames.append(part.assign(stage=f"{run}: " + part["stage"].astype(str)) if len(chain) > 1 else part)
    out = pd.concat(frames, ignore_index=True)
    out["global_epoch"] = range(1, len(out) + 1)  # whole epochs of the chain, from 1
    if "elapsed_s" in out:  # each run's clock starts at 0: the chain's time is the sum of its runs' last readings
        offsets = [0.0] + [float(f["elapsed_s"].max()) for f in frames[:-1] if "elapsed_s" in f]
        out["chain_elapsed_s"] = pd.concat(
            [f["elapsed_s"].astype(float) + sum(offsets[: i + 1]) for i, f in enumerate(frames)], ignore_index=True
        )
    return out


def _curves(frame: pd.DataFrame) -> None:
    last = frame.iloc[-1]
    cols = st.columns(3)
    stage = str(last["stage"]).split(": ")[-1]  # the stage's own name: a metric's value is cut when it is long
    cols[0].metric(
        "Epochs done",
        len(frame),
        f"last stage: {stage}",
        delta_color="off",
        delta_arrow="off",
        help=f"Over the whole chain of runs; the last epoch's stage is {last['stage']}.",
    )
    cols[1].metric("Test accuracy", percent(last["test_acc"], 2))
    elapsed = float(last.get("chain_elapsed_s", last.get("elapsed_s", 0.0)))
    cols[2].metric("Elapsed", f"{elapsed / 60:.1f} min", help="training time of the whole chain of runs")
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
    loss.update_layout(xaxis=EPOCH_AXIS, legend=LEGEND)
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
    fig.update_layout(yaxis=dict(tickformat=".1%", hoverformat=".2%"), xaxis=EPOCH_AXIS, legend=LEGEND)
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
            ).update_layout(xaxis=EPOCH_AXIS, legend=LEGEND),
            key="training-lr",
        )
    with st.expander("Every epoch row"):
        show_table(frame)  # test_acc, train_acc as percentages (app.formatting)


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
flagship = next(iter(featured_names()), None)  # the model picker's default: the first featured flagship
if flagship is not None and st.session_state.get("training-file") not in labels:  # the first visit: the flagship
    default = next((label for label, p in labels.items() if p.name == f"{flagship}{SUFFIX}"), None)
    if default is not None:
        st.session_state["training-file"] = default
picked = st.selectbox(
    "Metrics file",
    list(labels),
    key="training-file",
    placeholder="no metrics file under models/pretrained or runs/",
    help="Opens on the featured flagship; a bundled model's whole chain (the runs it was started from) is drawn.",
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
    _curves(chained(path, frame))


show(path)
