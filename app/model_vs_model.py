"""Model against model: on Inspect, one image through two models side by side (or two images through one model)
and one image through every bundled model as a compact table with a card on demand; on Compare, two models on one
test set."""

from __future__ import annotations

import math
from typing import Callable

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch

from routescope.analysis.core.catalog import bundled_checkpoints, featured, featured_names
from routescope.analysis.core.images import ImageError
from routescope.analysis.core.kinds import routing_pattern
from routescope.app.components import image_report, pick_images
from routescope.analysis.core.two_models import OUTCOMES, easy_for_one, paired, summary
from routescope.analysis.core.units import MILLION, macs_axis
from routescope.app.formatting import macs, percent, show_table
from routescope.app.resources import (
    SetChoice,
    cached_table,
    chosen_bundled_name,
    images_for,
    labels_of,
    load_bundled,
    traced_image,
)
from routescope.models.decisions import decision_kind

TWO_MODELS, TWO_IMAGES = "Two models, one image", "Two images, one model"


def _value(entry: dict) -> str:
    """One decision as a short value: its kind's signature (a skip bit, a width, an expert, an exit)."""
    signature = decision_kind(entry["kind"]).signature
    value = signature(entry) if signature is not None else None
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def aligned_decisions(first: dict, second: dict, names: tuple[str, str]) -> pd.DataFrame:
    """The decisions of two traces of one image, one row per layer (the first model's order, then the second's
    other layers): each model's decision there ("–": it decides nothing there) and whether they differ."""
    rows: dict[tuple[str, str], dict] = {}
    for name, trace in zip(names, (first, second)):
        for entry in trace["decisions"]:
            row = rows.setdefault((entry["layer"], entry["kind"]), {"layer": entry["layer"], "kind": entry["kind"]})
            row[name] = _value(entry)
    frame = pd.DataFrame(list(rows.values()), columns=["layer", "kind", *names]).astype(object).fillna("–")
    frame["differs"] = frame[names[0]] != frame[names[1]]
    return frame


def _default_second(first: str | None, names: list[str]) -> str:
    """The model to put beside ``first``: its first featured control, else the next featured model."""
    for entry in featured().values():
        if entry["flagship"] == first:
            for control in entry.get("controls", []):
                if control in names:
                    return control
    rest = [n for n in featured_names() if n in names and n != first] or [n for n in names if n != first]
    return rest[0] if rest else names[0]


def second_model(
    first_name: str | None, key: str = "side-model-b", fits: Callable[[torch.nn.Module], bool] | None = None
) -> tuple[str, torch.nn.Module] | None:
    """The select of the model to put beside the sidebar's: the bundled models (those ``fits`` accepts), featured
    first, the flagship's first control by default. None when no bundled model fits."""
    bundled = bundled_checkpoints()
    labels = labels_of(bundled)
    ordered = [n for n in featured_names() if n in bundled] + [n for n in bundled if n not in featured_names()]
    if fits is not None:
        ordered = [n for n in ordered if fits(load_bundled(n))]
    if not ordered:
        return None
    if st.session_state.get(key) not in (None, *ordered):
        del st.session_state[key]
    name = st.selectbox(
        "Second model",
        ordered,
        index=ordered.index(_default_second(first_name, ordered)),
        key=key,
        format_func=lambda n: labels.get(n, n),
        help="The model beside the sidebar's; featured models first (a flagship's control is the default).",
    )
    return name, load_bundled(name)


def side_by_side(model: torch.nn.Module, extra: dict) -> None:
    """Two models on one image (the sidebar's and a second one: decisions aligned by layer, cost side by side), or
    two images on the sidebar's model."""
    what = st.radio("Side by side", [TWO_MODELS, TWO_IMAGES], horizontal=True, key="side-what")
    if what == TWO_IMAGES:
        columns = st.columns(2)
        for i, column in enumerate(columns):
            with column:
                inputs = pick_images(f"side{i}", multiple=False, extra=extra)
                if inputs:
                    st.markdown(f"**Image {i + 1}: {inputs[0][0]}**")
                    image_report(model, *inputs[0], key=f"side{i}", compact=True)
        return
    first_name = model.meta["name"]
    picked = second_model(chosen_bundled_name())
    if picked is None:
        st.info("No bundled model to put beside this one.")
        return
    second_name, second = picked
    inputs = pick_images("side-models", multiple=False, extra=extra)
    if not inputs:
        st.info("Pick a sample image or upload one.")
        return
    traces = []
    for column, (name, m, key) in zip(st.columns(2), ((first_name, model, "sidem0"), (second_name, second, "sidem1"))):
        with column:
            st.markdown(f"**{name}**")
            traces.append(image_report(m, *inputs[0], key=key, compact=True))
    if None in traces:
        return
    a, b = traces
    st.markdown("**Decisions and cost, layer by layer**")
    names = (first_name, second_name) if first_name != second_name else (f"{first_name} (1)", f"{second_name} (2)")
    cost = pd.DataFrame(
        [
            {
                "model": n,
                "predicted": t["prediction"]["label"],
                "confidence": t["prediction"]["probability"],
                "macs": t["cost"]["macs"],
                "mac_ratio": t["cost"]["macs"] / t["cost"]["macs_full"],
                "macs_full": t["cost"]["macs_full"],
            }
            for n, t in zip(names, (a, b))
        ]
    )
    show_table(cost, key="side-cost")
    aligned = aligned_decisions(a, b, names)
    if aligned.empty:
        st.caption("Neither model decides anything per image: both run every layer.")
    else:
        differ = int(aligned["differs"].sum())
        st.caption(
            f"{differ} of {len(aligned)} decisions differ. A value is the decision's signature: 1/0 a block run or "
            "skipped, a width, the dominant expert, the exit taken; – where the model decides nothing at that layer."
        )
        show_table(aligned, key="side-aligned", most=12)


@st.cache_data(show_spinner=False, max_entries=16)
def _all_rows(data: bytes, image: str, names: tuple[str, ...]) -> list[dict]:
    rows = []
    for name in names:
        model = load_bundled(name)
        try:
            _, trace = traced_image(model, model.cache_key, image, data)
        except ImageError as e:
            rows.append({"model": name, "method": model.meta["method"], "predicted": f"cannot read: {e}"})
            continue
        cost = trace["cost"]
        rows.append(
            {
                "model": name,
                "method": model.meta["method"],
                "predicted": trace["prediction"]["label"],
                "confidence": trace["prediction"]["probability"],
                "macs": cost["macs"],
                "mac_ratio": cost["macs"] / cost["macs_full"],
                "decisions": routing_pattern(trace["decisions"]) or "none (static)",
            }
        )
    return rows


ALL_COLUMNS = ["model", "method", "predicted", "confidence", "macs", "mac_ratio", "decisions"]


def across_models(extra: dict) -> None:
    """One image through every bundled model: one row each (prediction, confidence, MACs, share of dense, the
    routing pattern), featured models first; select a row (or pick a model) to open its full card."""
    inputs = pick_images("across", multiple=False, extra=extra)
    if not inputs:
        return
    image, data = inputs[0]
    bundled = bundled_checkpoints()
    featured_first = [n for n in featured_names() if n in bundled] + [n for n in bundled if n not in featured_names()]
    with st.spinner(f"Tracing {image} through {len(featured_first)} models…"):
        frame = pd.DataFrame(_all_rows(data, image, tuple(featured_first)), columns=ALL_COLUMNS)
    agree = frame["predicted"].value_counts()
    st.caption(
        f"{len(frame)} models, featured first. {agree.iloc[0]} of them predict {agree.index[0]}"
        + (f", the others {', '.join(f'{k} ({v})' for k, v in agree.iloc[1:].items())}" if len(agree) > 1 else "")
        + f"; MACs from {frame['macs'].min() / 1e6:.2f} to {frame['macs'].max() / 1e6:.2f} M. Decisions: each "
        "model's routing pattern (skip bits, widths, experts, exit). Select a row to open that model's card."
    )
    event = show_table(
        frame,
        key="across-table",
        most=14,
        on_select="rerun",
        selection_mode="single-row",
        column_config={"decisions": st.column_config.TextColumn("decisions", help="the routing pattern")},
    )
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    labels = labels_of(bundled)
    picked = frame["model"].iloc[selected[0]] if selected else None
    if picked != st.session_state.get("across-selected"):  # a new row selected: its card (the select can move on)
        st.session_state["across-selected"] = picked
        if picked is not None:
            st.session_state["across-card"] = picked
    card = st.selectbox(
        "Open the card of",
        ["(none)", *featured_first],
        key="across-card",
        format_func=lambda n: n if n == "(none)" else f"{n} · {labels.get(n, n)}",
    )
    if card != "(none)":
        with st.container(border=True):
            st.subheader(card)
            row = frame[frame["model"] == card].iloc[0]
            st.caption(f"{labels.get(card, card)} · {percent(row['confidence'])} confidence")
            image_report(load_bundled(card), image, data, key=f"across-{card}")


OUTCOME_COLOURS = {
    "both right": "#9d9d9d",
    "only the first right": "#4c78a8",
    "only the second right": "#f58518",
    "both wrong": "#d62728",
    "unlabelled": "#bab0ac",
}


def cost_bubbles(pairs: pd.DataFrame, first: str, second: str) -> go.Figure:
    """Each image's MACs under both models, one bubble per (cost pair, outcome) sized by its images: a dynamic
    model's MACs take few distinct values, so single points would hide hundreds of images under one mark. The
    outcomes of one cost pair sit side by side (dodged by a small fixed step), so none hides another."""
    order = [*OUTCOMES, "unlabelled"]
    counts = (
        pairs.assign(x=(pairs["macs_1"] / MILLION).round(2), y=(pairs["macs_2"] / MILLION).round(2))
        .groupby(["x", "y", "outcome"], observed=True)
        .size()
        .rename("images")
        .reset_index()
    )
    top = float(max(counts["x"].max(), counts["y"].max())) * 1.12
    step = top * 0.018
    counts["shown_x"] = counts["x"] + [step * (order.index(o) - 1.5) for o in counts["outcome"]]
    figure = px.scatter(
        counts,
        x="shown_x",
        y="y",
        size="images",
        size_max=36,
        color="outcome",
        color_discrete_map=OUTCOME_COLOURS,
        category_orders={"outcome": order},
        hover_data={"images": True, "x": ":.2f", "y": ":.2f", "shown_x": False},
        labels={"x": "first (M MACs)", "y": "second (M MACs)"},
        title="Each image's MACs under both models (bubbles: images; dotted: equal cost)",
    )
    figure.add_shape(type="line", x0=0, y0=0, x1=top, y1=top, line=dict(color="#888", dash="dot", width=1))
    figure.update_layout(
        xaxis=dict(macs_axis(f"first: {first}"), range=[0, top]),
        yaxis=dict(macs_axis(f"second: {second}"), range=[0, top]),
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, title=None),
        height=440,
    )
    return figure


def against_another_model(
    model: torch.nn.Module, choice: SetChoice, table: pd.DataFrame, k: int, gallery: Callable[..., None]
) -> None:
    """Compare's two models on one test set: agreement and who is right where, each image's cost under both, and
    galleries of the images one finds easy and the other hard (cost ranks within each model: ``two_models``)."""

    def fits(other: torch.nn.Module) -> bool:
        return other.cache_key != model.cache_key and list(other.meta["classes"]) == list(model.meta["classes"])

    picked = second_model(chosen_bundled_name(), key="compare-second-model", fits=fits)
    if picked is None:
        st.info(f"No other bundled model predicts the classes of `{model.meta['name']}`.")
        return
    name, second = picked
    theirs = images_for(second, choice)
    if theirs is None:
        st.warning(f"`{name}` cannot take {choice.label}; pick another model.")
        return
    pairs = paired(table, cached_table(second, theirs))
    facts = summary(pairs)
    first = model.meta["name"]
    a, b, c = st.columns(3)
    a.metric(
        "Same prediction",
        percent(facts["agree"], 1),
        f"of {facts['images']:,} images",
        delta_color="off",
        delta_arrow="off",
    )
    b.metric(
        "Mean MACs / image",
        f"{macs(facts['macs_1'])} vs {macs(facts['macs_2'])}",
        "first vs second",
        delta_color="off",
        delta_arrow="off",
    )
    correlation = facts["cost_correlation"]
    c.metric(
        "Cost agreement",
        "–" if math.isnan(correlation) else f"{correlation:.2f}",
        "one model's cost never varies" if math.isnan(correlation) else "rank correlation of MACs",
        delta_color="off",
        delta_arrow="off",
        help="Spearman correlation of the two models' MACs per image: 1 when the same images cost both the most, "
        "0 when their costs are unrelated; none when a model spends the same on every image.",
    )
    counted = sum(facts[outcome] for outcome in OUTCOMES)  # the labelled images
    st.caption(
        f"First: `{first}`; second: `{name}`."
        + (" " + " · ".join(f"{outcome}: {facts[outcome]:,}" for outcome in OUTCOMES) if counted else "")
        + (f" ({facts['images'] - counted:,} images without a label)" if 0 < counted < facts["images"] else "")
    )
    st.plotly_chart(cost_bubbles(pairs, first, name), key="compare-second-scatter")

    def both(row: pd.Series) -> str:
        label = f"{row['class']} → " if isinstance(row["class"], str) else ""
        same = row["predicted_1"] == row["predicted_2"]
        predicted = row["predicted_1"] if same else f"{row['predicted_1']} / {row['predicted_2']}"
        return f"{label}{predicted} · {row['macs_1'] / MILLION:.1f} / {macs(row['macs_2'])}".replace(" M", "\u00a0M")

    static = [n for n, column in ((first, "macs_1"), (name, "macs_2")) if pairs[column].nunique() == 1]
    st.caption(
        "Easy and hard are each model's own order: by MACs executed, ties by confidence (the surer easier)"
        + (f"; `{static[0]}` spends the same on every image, so its order is its confidence alone." if static else ".")
    )
    easy_first, easy_second = easy_for_one(pairs, k)
    for title, subset in (
        (f"Easy for `{first}`, hard for `{name}`", easy_first),
        (f"Easy for `{name}`, hard for `{first}`", easy_second),
    ):
        st.markdown(f"**{title}** · {len(subset)} images")
        if subset.empty:
            st.caption("None: the two models order every image alike.")
        else:
            gallery(subset, both)
    differ = pairs[~pairs["agree"]]
    st.markdown(
        f"**Predicted differently** · {len(differ):,} images" + (f" (first {k} shown)" if len(differ) > k else "")
    )
    if differ.empty:
        st.caption("The two models predict the same class for every image.")
    else:
        gallery(differ.head(k), both)
    st.caption(
        "Captions: class → the prediction (first's / second's where they differ) · first's MACs / second's. "
        "Each image opens in Inspect."
    )
