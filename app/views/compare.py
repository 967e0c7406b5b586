"""Compare: easy vs hard images over a test set, routing patterns and a map of the decisions, per-class cost,
per-layer decision statistics, and the knob sweep against the static alternatives."""

from __future__ import annotations

import io
from typing import Callable

import plotly.express as px
import streamlit as st

from routescope.analysis.core.figures import matching_baselines
from routescope.analysis.core.kinds import compare_sections
from routescope.analysis.core.patterns import decision_map, pattern_labels, pattern_summary, readable_patterns
from routescope.analysis.core.table import easy_and_hard, per_class_cost
from routescope.analysis.core.trace import dense_macs
from routescope.analysis.core.sweeps import COLUMNS as SWEEP_COLUMNS, flat_sweep
from routescope.analysis.core.tradeoff import POINTS, table_point, tradeoff_figure
from routescope.analysis.core.units import MILLION, macs_axis
from routescope.app.components import show_section
from routescope.app.gallery import gallery as show_gallery, image_caption
from routescope.app.model_vs_model import against_another_model
from routescope.app.formatting import cost_delta, macs, percent, show_table
from routescope.app.resources import (
    cached_adaptive_sweep,
    cached_static_points,
    cached_table,
    choose_model,
    choose_test_set,
    image_names,
    images_for,
    load_bundled,
    show_model,
    sweep_seconds,
)
from routescope.analysis.core.catalog import bundled_checkpoints

import pandas as pd

st.title("Compare")
st.caption(
    "A whole test set through one model: which paths images take, which images are cheap or costly, the cost per "
    "class and per layer, and what the model's knob trades. Try: pick a routing pattern to filter the galleries, "
    "lasso a cluster on the decision map, or sweep the knob against the static alternatives."
)
model = choose_model()
if model is None:
    st.stop()
show_model(model)
chosen = choose_test_set(model)
if chosen is None:
    st.stop()
choice, images = chosen
full_table = cached_table(model, images)
names = image_names(images)
if names is not None:  # which file each row is (a zip's member, a file under the server's folder)
    full_table.insert(0, "file", [names[i] for i in full_table.index])
labelled = int(full_table["correct"].notna().sum())
NO_LABELS = "no labels for this model's classes: routing and cost only, no accuracy"
# without labels, the views per class group the images by the class the model predicts
by_class = (
    full_table
    if labelled
    else full_table.assign(**{"class": pd.Categorical(full_table["predicted"], categories=list(model.meta["classes"]))})
)


def accuracy_text(subset: pd.DataFrame) -> str:
    """Accuracy over the labelled images of ``subset`` (unlabelled ones are skipped), or a dash."""
    known = subset["correct"].dropna()
    return percent(known.astype(float).mean(), 0) if len(known) else "–"


def duration(seconds: float) -> str:
    """``12 s``, ``3 min``: how long something takes, as the page says it."""
    return f"{max(seconds, 1):,.0f} s" if seconds < 120 else f"{seconds / 60:,.0f} min"


def stop_sweep() -> None:
    """Button callback: the sweep ends after the value being traced (the run is interrupted at the next element)."""
    st.session_state["sweep-run"] = False


def gallery(subset: pd.DataFrame, caption: Callable[[pd.Series], str] = image_caption) -> None:
    """``app.gallery`` of this page's test set."""
    show_gallery(choice, images, subset, caption)


a, b, c = st.columns(3)
if labelled:
    accuracy = full_table["correct"].dropna().astype(float).mean()
    counted = f"{len(full_table):,} images" + (f", {labelled:,} labelled" if labelled < len(full_table) else "")
    a.metric("Accuracy", percent(accuracy, 2), counted, delta_color="off", delta_arrow="off")
else:
    a.metric("Accuracy", "–", f"{len(full_table):,} images, none labelled", delta_color="off", delta_arrow="off")
delta, colour = cost_delta(full_table["macs"].mean(), dense_macs(model))
b.metric(
    "Mean MACs / image",
    macs(full_table["macs"].mean(), 2),
    delta,
    delta_color=colour,
    delta_arrow="off" if colour == "off" else "auto",
)
c.metric("MACs range", f"{full_table['macs'].min() / MILLION:.2f} – {macs(full_table['macs'].max(), 2)}")
if not labelled:
    st.info(f"{choice.label}: {NO_LABELS}. The views per class group the images by predicted class.")
elif labelled < len(full_table):
    st.caption(
        f"Accuracy is over the {labelled:,} labelled images; the other {len(full_table) - labelled:,} count "
        "for routing and cost only."
    )

table = full_table
readable: dict[str, str] = {}  # pattern -> as the legend reads it
st.subheader("Routing patterns")
if "pattern" not in full_table.columns:
    st.caption(
        f"`{model.meta['name']}` decides nothing per image: every image takes the same path, so there are no "
        "routing patterns or decision map."
    )
else:
    patterns = pattern_summary(by_class)
    if not labelled:
        patterns = patterns.drop(columns="accuracy").rename(columns={"classes": "predicted classes"})
    readable = pattern_labels(full_table)  # DS-Net's widths "1/1", not the signature's "11"
    _, legends = readable_patterns(full_table)
    st.caption(
        f"{len(patterns):,} distinct paths: each image's decisions written in a row"
        + (', one part per kind of decision (" | " between kinds)' if len(legends) > 1 else "")
        + ". Pick one to filter the galleries and the per-image table."
    )
    if legends:
        st.caption("**How to read a pattern.** " + " ".join(legends))
    show_table(
        patterns.assign(pattern=patterns["pattern"].map(readable)),
        column_config={"pattern": st.column_config.TextColumn("pattern", help="the path, as the legend above reads")},
    )
    counts = dict(zip(patterns["pattern"], patterns["images"]))
    picked = st.selectbox(
        "Routing pattern",
        ["(all patterns)", *patterns["pattern"]],
        key="pattern-filter",
        format_func=lambda p: p if p == "(all patterns)" else f"{readable.get(p) or '(empty)'} · {counts[p]} images",
    )
    if picked != "(all patterns)":
        table = full_table[full_table["pattern"] == picked]
        gallery(table.head(16))
    else:
        for pattern in patterns["pattern"].head(3):
            st.markdown(f"**{readable.get(pattern, pattern)}** · {counts[pattern]} images")
            gallery(full_table[full_table["pattern"] == pattern].head(8))

    coords = decision_map(full_table)
    if coords is None:
        st.caption("Every image decided alike: there is no decision map to draw.")
    else:
        colours = ["MACs", "class", "correct"] if labelled else ["MACs", "predicted"]
        colour = st.radio("Colour the map by", colours, horizontal=True, key="map-colour")
        file = ["file"] if names is not None else []
        frame = full_table[[*file, "class", "predicted", "correct", "macs", "pattern"]].join(coords).reset_index()
        frame["MACs"], frame["correct"], frame["pattern"] = (
            frame["macs"] / MILLION,
            frame["correct"].map({True: "correct", False: "wrong"}).fillna("unlabelled"),
            frame["pattern"].map(readable),
        )
        explained = coords.attrs["explained"]
        figure = px.scatter(
            frame,
            x="pc1",
            y="pc2",
            color=colour,
            symbol="correct" if labelled else None,
            symbol_map={"correct": "circle", "wrong": "x", "unlabelled": "circle-open"},
            color_continuous_scale="Viridis",  # dark to yellow: the cheapest images stay visible on white
            color_discrete_map={"correct": "#4c78a8", "wrong": "#d62728", "unlabelled": "#9d9d9d"},
            hover_data={
                "index": True,
                **{f: True for f in file},
                "class": True,
                "predicted": True,
                "pattern": True,
                "MACs": ":.2f",
                "pc1": False,
                "pc2": False,
            },
            custom_data=["index"],
            labels={"MACs": "MACs (M)", "correct": "prediction"},
            title=f"Decision map: PCA of the decision vectors "
            f"({explained[0]:.0%} + {explained[1]:.0%} of the variance)",
        )
        if labelled:
            cross = dict(size=11, line=dict(width=1, color="#222"))
            figure.update_traces(marker=cross, selector=dict(marker_symbol="x"))
        figure.update_layout(
            height=460,
            dragmode="lasso",  # what the caption says a drag does
            coloraxis_colorbar=dict(title="MACs", ticksuffix=" M"),
            legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, title=None),
        )
        event = st.plotly_chart(
            figure, key="decision-map", on_select="rerun", selection_mode=("points", "box", "lasso")
        )
        selected = [frame.loc[i, "index"] for i in (event.selection.point_indices if event else [])] if event else []
        mark = " Wrong predictions are crosses." if labelled else ""
        if selected:
            st.caption(f"{len(selected)} selected images (first 24):")
            gallery(full_table.loc[selected[:24]])
        else:
            st.caption(f"Drag to lasso points (or click one) to see their images; hover a point for its index.{mark}")

st.subheader("Easy vs hard images")
st.caption("Easy: fewest MACs executed; hard: most (ties broken by confidence).")
k = st.slider("Images per gallery", 4, 16, 8)
for title, subset in zip(("Easy", "Hard"), easy_and_hard(table, k)):
    st.markdown(
        f"**{title}** · mean brightness {subset['brightness'].mean():.3f} · contrast {subset['contrast'].mean():.3f} · "
        f"MACs {macs(subset['macs'].mean(), 2)} · accuracy {accuracy_text(subset)}"
    )
    gallery(subset)

st.subheader("Against another model")
if st.toggle(
    "Trace a second model on the same images",
    key="compare-second",
    help="Where the two predict differently, and which images one finds easy and the other hard.",
):
    against_another_model(model, choice, full_table, k, gallery)

st.subheader("Cost per class" if labelled else "Cost per predicted class")
cost = per_class_cost(by_class).reset_index()
bars = px.bar(
    cost,
    x="class",
    y=cost["macs_mean"] / MILLION,
    error_y=(cost["macs_max"] - cost["macs_mean"]) / MILLION,
    error_y_minus=(cost["macs_mean"] - cost["macs_min"]) / MILLION,
    custom_data=[cost["macs_min"] / MILLION, cost["macs_max"] / MILLION, cost["accuracy"], cost["images"]],
)
bars.update_traces(
    hovertemplate="%{x}: %{y:.2f} M MACs on average (%{customdata[0]:.2f}–%{customdata[1]:.2f} M)"
    + ("<br>accuracy %{customdata[2]:.1%}" if labelled else "")
    + " · %{customdata[3]} images<extra></extra>"
)
bars.update_layout(yaxis=macs_axis("mean MACs per image"), xaxis_title="class" if labelled else "predicted class")
st.plotly_chart(bars, key="per-class")
st.caption("Bars: mean MACs per image; whiskers: the cheapest and the costliest image of the class.")

for i, section in enumerate(compare_sections(by_class)):  # what each decision kind of this model offers
    show_section(section, key=f"section-{i}")

knobs = model.knobs() if hasattr(model, "knobs") else {}
if knobs:
    st.subheader("Knob sweep: accuracy vs MACs" if labelled else "Knob sweep: MACs per value")
    left, middle, right = st.columns([2, 1, 3])
    knob = left.selectbox("Knob", list(knobs), key="sweep-knob", help=knobs[next(iter(knobs))]["help"])
    spec = knobs[knob]
    count = int(
        middle.number_input(
            "Values",
            3,
            21,
            11,
            key="sweep-count",
            help="The budget of values: five evenly spaced, then the interval where MACs or accuracy change most is "
            "halved, again and again, until the budget is spent (an adaptive grid).",
        )
    )
    low, high = right.slider(
        "Range",
        float(spec["low"]),
        float(spec["high"]),
        (float(spec["low"]), float(spec["high"])),
        key=f"sweep-range-{knob}",
    )
    others_too = labelled and st.checkbox(  # points on the accuracy axis: only with labels
        "Add the other bundled models of this method (traces each one's test set)", value=True, key="sweep-others"
    )
    sweep_key = (model.cache_key, images.fingerprint, knob, count, low, high)
    per_value = sweep_seconds(model, model.cache_key, images, images.fingerprint, knob)
    st.caption(
        f"Up to {count} values of {knob} from {low:g} to {high:g}, placed where the decisions change: one value traces "
        f"{len(images):,} images, about {duration(per_value)} here, so the sweep takes up to about "
        f"{duration(per_value * count)} (values traced before are read from the store). It can be stopped after any "
        "value, keeping the values done."
    )
    running = st.toggle(f"Sweep {knob} over up to {count} values on {len(images):,} images", key="sweep-run")
    partial = st.session_state.get("sweep-partial")
    curve = None
    if running:
        stop_slot = st.empty()  # the button shows while values are traced, and goes once the sweep is done
        stop_slot.button(
            "Stop after the current value",
            key="sweep-stop",
            icon=":material/stop_circle:",
            on_click=stop_sweep,
            help="The value being traced finishes (and is stored); the curve then shows the values done.",
        )
        done_rows: list[dict] = []
        st.session_state["sweep-partial"] = {"key": sweep_key, "rows": done_rows}
        bar = st.empty()

        def value_done(row: dict) -> None:
            done_rows.append(row)  # kept before the bar is drawn: a stop interrupts the run at the next element
            left_s = per_value * (count - len(done_rows))
            bar.progress(
                len(done_rows) / count,
                text=f"{len(done_rows)} of up to {count} values done ({knob}={row['value']:g}); "
                f"about {duration(left_s)} left at most",
            )

        curve = cached_adaptive_sweep(model, images, knob, count, low, high, done=value_done)
        bar.empty()
        stop_slot.empty()
        st.session_state.pop("sweep-partial", None)
    elif partial is not None and partial["key"] == sweep_key and partial["rows"]:
        curve = pd.DataFrame(sorted(partial["rows"], key=lambda r: r["value"]), columns=SWEEP_COLUMNS)
        st.info(
            f"Stopped after {len(curve)} of up to {count} values: the curve shows the values done. Turn the sweep on "
            "again to finish it (the values done are read from the store, not traced again)."
        )
    if curve is not None:
        if flat_sweep(curve):
            st.warning(
                f"{knob} changes nothing over {low:g}–{high:g} on these images: every value gives the same MACs and "
                "accuracy (within 0.5% of the MACs and 0.1 point of accuracy). The model's decisions do not depend on "
                "it here; try another knob or range."
            )
        if not labelled:  # nothing to put on the accuracy axis: what each value costs
            st.caption(f"{choice.label}: {NO_LABELS}. The sweep's cost per value:")
            show_table(curve.drop(columns="accuracy"), column_config={"value": st.column_config.NumberColumn(knob)})
        else:
            rows = cached_static_points(model, images).to_dict("records")
            bundled = {name: load_bundled(name) for name in bundled_checkpoints()}
            baselines = {n: m for n, m in bundled.items() if m.meta["method"] == "baseline"}
            others = list(matching_baselines(baselines, model).items())
            if others_too:
                others += [
                    (n, m)
                    for n, m in bundled.items()
                    if m.meta["method"] == model.meta["method"] and m.cache_key != model.cache_key
                ]
            for n, m in others:  # each on the same test images, as that model takes them
                theirs = images_for(m, choice)
                if theirs is not None and theirs.labelled:
                    kind = "dense" if m.meta["method"] == "baseline" else f"other {model.meta['method']} models"
                    rows.append(table_point(n, kind, cached_table(m, theirs)))
            trained = table_point(f"trained ({knob}={spec['default']:g})", "trained", full_table)
            figure = tradeoff_figure(
                curve,
                knob,
                trained,
                pd.DataFrame(rows, columns=POINTS),
                f"Knob sweep: {model.meta['name']}, {knob} on {choice.label}",
            )
            st.plotly_chart(figure, key="sweep")
            show_table(curve, column_config={"value": st.column_config.NumberColumn(knob, format="%g")})

st.subheader("Per-image table")
if table is not full_table:
    shown_as = readable.get(picked, picked)
    st.caption(f"Filtered to routing pattern {shown_as}: {len(table):,} of {len(full_table):,} images.")
else:
    st.caption(f"{len(table):,} images, one row each (scroll for more; click a column to sort).")
shown_table = table.assign(pattern=table["pattern"].map(readable)) if "pattern" in table.columns else table
show_table(shown_table, most=8, hide_index=False)
st.caption("The downloads hold the raw numbers (MACs as counts, fractions as 0-1) and the stored pattern signatures.")
parquet = io.BytesIO()
table.to_parquet(parquet)
left, right = st.columns(2)
stem = f"{model.meta['name']}_{choice.slug.removesuffix('.zip')}"
left.download_button("Download CSV", table.to_csv().encode(), f"{stem}.csv", "text/csv")
right.download_button("Download Parquet", parquet.getvalue(), f"{stem}.parquet", "application/octet-stream")
