"""Compare: easy vs hard images over a test set, routing patterns and a map of the decisions, per-class cost,
per-layer decision statistics, and the knob sweep against the static alternatives."""

from __future__ import annotations

import io

import plotly.express as px
import streamlit as st

from analysis.core.figures import matching_baselines
from analysis.core.kinds import compare_sections
from analysis.core.patterns import decision_map, pattern_summary
from analysis.core.table import easy_and_hard, per_class_cost
from analysis.core.tradeoff import POINTS, knob_values, table_point, tradeoff_figure
from app.components import show_section
from app.resources import (
    cached_sweep,
    cached_static_points,
    cached_table,
    choose_model,
    load_bundled,
    show_model,
    test_images,
    test_sets,
)
from analysis.core.catalog import bundled_checkpoints

import pandas as pd

st.title("Compare")
model = choose_model()
if model is None:
    st.stop()
show_model(model)
dataset = st.selectbox(
    "Test images", test_sets(), help="The bundled 500-image subset, or the full test set when installed."
)
images, _ = test_images(dataset)
if list(images.shape[1:]) != list(model.meta["input_size"]):  # e.g. an uploaded CIFAR checkpoint
    st.error(
        f"`{model.meta['name']}` takes {'x'.join(map(str, model.meta['input_size']))} inputs, the test images "
        f"are {'x'.join(map(str, images.shape[1:]))}: there is nothing to compare on."
    )
    st.stop()
full_table = cached_table(model, dataset)


def gallery(subset: pd.DataFrame) -> None:
    st.image(
        [images[i].permute(1, 2, 0).squeeze(-1).numpy() for i in subset.index],
        caption=[f"{row['class']} → {row['predicted']} · {row['macs'] / 1e6:.1f}M" for _, row in subset.iterrows()],
        width=84,
    )


a, b, c = st.columns(3)
a.metric("Accuracy", f"{full_table['correct'].mean() * 100:.2f}%", f"{len(full_table):,} images", delta_color="off")
b.metric("Mean MACs / image", f"{full_table['macs'].mean() / 1e6:.2f} M")
c.metric("MACs range", f"{full_table['macs'].min() / 1e6:.2f} – {full_table['macs'].max() / 1e6:.2f} M")

table = full_table
st.subheader("Routing patterns")
if "pattern" not in full_table.columns:
    st.caption(
        f"`{model.meta['name']}` decides nothing per image: every image takes the same path, so there are no "
        "routing patterns or decision map."
    )
else:
    patterns = pattern_summary(full_table)
    st.caption(
        f"{len(patterns):,} distinct paths (each decision's signature concatenated: skip bits, width per stage, "
        "dominant expert per block, exit taken). Pick one to filter the galleries and the per-image table."
    )
    st.dataframe(
        patterns,
        hide_index=True,
        height=min(320, 40 + 35 * (len(patterns) + 1)),
        column_config={
            "share": st.column_config.NumberColumn(format="%.3f"),
            "accuracy": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    counts = dict(zip(patterns["pattern"], patterns["images"]))
    picked = st.selectbox(
        "Routing pattern",
        ["(all patterns)", *patterns["pattern"]],
        key="pattern-filter",
        format_func=lambda p: p if p == "(all patterns)" else f"{p or '(empty)'} · {counts[p]} images",
    )
    if picked != "(all patterns)":
        table = full_table[full_table["pattern"] == picked]
        gallery(table.head(16))
    else:
        for pattern in patterns["pattern"].head(3):
            st.markdown(f"**{pattern}** · {counts[pattern]} images")
            gallery(full_table[full_table["pattern"] == pattern].head(8))

    coords = decision_map(full_table)
    if coords is None:
        st.caption("Every image decided alike: there is no decision map to draw.")
    else:
        colour = st.radio("Colour the map by", ["MACs", "class", "correct"], horizontal=True, key="map-colour")
        frame = full_table[["class", "predicted", "correct", "macs", "pattern"]].join(coords).reset_index()
        frame["MACs"], frame["correct"] = frame["macs"] / 1e6, frame["correct"].map({True: "correct", False: "wrong"})
        explained = coords.attrs["explained"]
        figure = px.scatter(
            frame,
            x="pc1",
            y="pc2",
            color=colour,
            hover_data=["index", "class", "predicted", "pattern", "MACs"],
            custom_data=["index"],
            title=f"Decision map: PCA of the decision vectors "
            f"({explained[0]:.0%} + {explained[1]:.0%} of the variance)",
        )
        figure.update_layout(height=420)
        event = st.plotly_chart(
            figure, key="decision-map", on_select="rerun", selection_mode=("points", "box", "lasso")
        )
        selected = [frame.loc[i, "index"] for i in (event.selection.point_indices if event else [])] if event else []
        if selected:
            st.caption(f"{len(selected)} selected images (first 24):")
            gallery(full_table.loc[selected[:24]])
        else:
            st.caption("Hover a point for its image index; click or lasso points to see their images.")

st.subheader("Easy vs hard images")
st.caption("Easy: fewest MACs executed; hard: most (ties broken by confidence).")
k = st.slider("Images per gallery", 4, 16, 8)
for title, subset in zip(("Easy", "Hard"), easy_and_hard(table, k)):
    st.markdown(
        f"**{title}** · mean brightness {subset['brightness'].mean():.3f} · contrast {subset['contrast'].mean():.3f} · "
        f"MACs {subset['macs'].mean() / 1e6:.2f} M · accuracy {subset['correct'].mean() * 100:.0f}%"
    )
    gallery(subset)

st.subheader("Cost per class")
cost = per_class_cost(full_table).reset_index()
st.plotly_chart(
    px.bar(
        cost,
        x="class",
        y="macs_mean",
        error_y=cost["macs_max"] - cost["macs_mean"],
        error_y_minus=cost["macs_mean"] - cost["macs_min"],
        hover_data=["accuracy", "images"],
        labels={"macs_mean": "mean MACs"},
    ),
    key="per-class",
)

for i, section in enumerate(compare_sections(full_table)):  # what each decision kind of this model offers
    show_section(section, key=f"section-{i}")

knobs = model.knobs() if hasattr(model, "knobs") else {}
if knobs:
    st.subheader("Knob sweep: accuracy vs MACs")
    left, middle, right = st.columns([2, 1, 3])
    knob = left.selectbox("Knob", list(knobs), key="sweep-knob", help=knobs[next(iter(knobs))]["help"])
    spec = knobs[knob]
    count = middle.number_input("Values", 3, 21, 11, key="sweep-count")
    low, high = right.slider(
        "Range",
        float(spec["low"]),
        float(spec["high"]),
        (float(spec["low"]), float(spec["high"])),
        key=f"sweep-range-{knob}",
    )
    others_too = st.checkbox(
        "Add the other bundled models of this method (traces each one's test set)", value=True, key="sweep-others"
    )
    if st.toggle(f"Sweep {knob} over {int(count)} values on {len(images):,} images", key="sweep-run"):
        values = tuple(knob_values(model, knob, int(count), low, high))
        curve = cached_sweep(model, dataset, knob, values)
        rows = cached_static_points(model, dataset).to_dict("records")
        bundled = {name: load_bundled(name) for name in bundled_checkpoints()}
        baselines = {n: m for n, m in bundled.items() if m.meta["method"] == "baseline"}
        rows += [
            table_point(n, "dense", cached_table(m, dataset)) for n, m in matching_baselines(baselines, model).items()
        ]
        if others_too:
            rows += [
                table_point(n, f"other {model.meta['method']} models", cached_table(m, dataset))
                for n, m in bundled.items()
                if m.meta["method"] == model.meta["method"] and m.cache_key != model.cache_key
            ]
        trained = table_point(f"trained ({knob}={spec['default']:g})", "trained", full_table)
        figure = tradeoff_figure(
            curve,
            knob,
            trained,
            pd.DataFrame(rows, columns=POINTS),
            f"Knob sweep: {model.meta['name']}, {knob} on {dataset}",
        )
        st.plotly_chart(figure, key="sweep")
        st.dataframe(curve, hide_index=True)

st.subheader("Per-image table")
if table is not full_table:
    st.caption(f"Filtered to routing pattern {picked}: {len(table):,} of {len(full_table):,} images.")
st.dataframe(table, height=300)
parquet = io.BytesIO()
table.to_parquet(parquet)
left, right = st.columns(2)
left.download_button("Download CSV", table.to_csv().encode(), f"{model.meta['name']}_{dataset}.csv", "text/csv")
right.download_button(
    "Download Parquet", parquet.getvalue(), f"{model.meta['name']}_{dataset}.parquet", "application/octet-stream"
)
