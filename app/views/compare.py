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
    choose_test_set,
    image_names,
    images_for,
    load_bundled,
    picture,
    show_model,
)
from analysis.core.catalog import bundled_checkpoints

import pandas as pd

st.title("Compare")
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
    return f"{known.astype(float).mean() * 100:.0f}%" if len(known) else "–"


def gallery(subset: pd.DataFrame) -> None:
    """The images of ``subset``, decoded only now (a big test set is never held in memory)."""
    st.image(
        [picture(images, i) for i in subset.index],
        caption=[
            (f"{row['class']} → " if isinstance(row["class"], str) else "? → ")
            + f"{row['predicted']} · {row['macs'] / 1e6:.1f}M"
            for _, row in subset.iterrows()
        ],
        width=84,
    )


a, b, c = st.columns(3)
if labelled:
    accuracy = full_table["correct"].dropna().astype(float).mean()
    counted = f"{len(full_table):,} images" + (f", {labelled:,} labelled" if labelled < len(full_table) else "")
    a.metric("Accuracy", f"{accuracy * 100:.2f}%", counted, delta_color="off")
else:
    a.metric("Accuracy", "–", f"{len(full_table):,} images, none labelled", delta_color="off")
b.metric("Mean MACs / image", f"{full_table['macs'].mean() / 1e6:.2f} M")
c.metric("MACs range", f"{full_table['macs'].min() / 1e6:.2f} – {full_table['macs'].max() / 1e6:.2f} M")
if not labelled:
    st.info(f"{choice.label}: {NO_LABELS}. The views per class group the images by predicted class.")
elif labelled < len(full_table):
    st.caption(
        f"Accuracy is over the {labelled:,} labelled images; the other {len(full_table) - labelled:,} count "
        "for routing and cost only."
    )

table = full_table
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
        colours = ["MACs", "class", "correct"] if labelled else ["MACs", "predicted"]
        colour = st.radio("Colour the map by", colours, horizontal=True, key="map-colour")
        file = ["file"] if names is not None else []
        frame = full_table[[*file, "class", "predicted", "correct", "macs", "pattern"]].join(coords).reset_index()
        frame["MACs"], frame["correct"] = (
            frame["macs"] / 1e6,
            frame["correct"].map({True: "correct", False: "wrong"}).fillna("unlabelled"),
        )
        explained = coords.attrs["explained"]
        figure = px.scatter(
            frame,
            x="pc1",
            y="pc2",
            color=colour,
            hover_data=["index", *file, "class", "predicted", "pattern", "MACs"],
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
        f"MACs {subset['macs'].mean() / 1e6:.2f} M · accuracy {accuracy_text(subset)}"
    )
    gallery(subset)

st.subheader("Cost per class" if labelled else "Cost per predicted class")
cost = per_class_cost(by_class).reset_index()
st.plotly_chart(
    px.bar(
        cost,
        x="class",
        y="macs_mean",
        error_y=cost["macs_max"] - cost["macs_mean"],
        error_y_minus=cost["macs_mean"] - cost["macs_min"],
        hover_data=["accuracy", "images"] if labelled else ["images"],
        labels={"macs_mean": "mean MACs"},
    ),
    key="per-class",
)

for i, section in enumerate(compare_sections(by_class)):  # what each decision kind of this model offers
    show_section(section, key=f"section-{i}")

knobs = model.knobs() if hasattr(model, "knobs") else {}
if knobs:
    st.subheader("Knob sweep: accuracy vs MACs" if labelled else "Knob sweep: MACs per value")
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
    others_too = labelled and st.checkbox(  # points on the accuracy axis: only with labels
        "Add the other bundled models of this method (traces each one's test set)", value=True, key="sweep-others"
    )
    if st.toggle(f"Sweep {knob} over {int(count)} values on {len(images):,} images", key="sweep-run"):
        values = tuple(knob_values(model, knob, int(count), low, high))
        curve = cached_sweep(model, images, knob, values)
        if not labelled:  # nothing to put on the accuracy axis: what each value costs
            st.caption(f"{choice.label}: {NO_LABELS}. The sweep's cost per value:")
            st.dataframe(curve.drop(columns="accuracy"), hide_index=True)
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
            st.dataframe(curve, hide_index=True)

st.subheader("Per-image table")
if table is not full_table:
    st.caption(f"Filtered to routing pattern {picked}: {len(table):,} of {len(full_table):,} images.")
st.dataframe(table, height=300)
parquet = io.BytesIO()
table.to_parquet(parquet)
left, right = st.columns(2)
stem = f"{model.meta['name']}_{choice.slug.removesuffix('.zip')}"
left.download_button("Download CSV", table.to_csv().encode(), f"{stem}.csv", "text/csv")
right.download_button("Download Parquet", parquet.getvalue(), f"{stem}.parquet", "application/octet-stream")
