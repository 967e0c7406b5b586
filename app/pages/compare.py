"""Compare: easy vs hard images over a test set, per-class cost, per-layer decision statistics."""
from __future__ import annotations

import io

import plotly.express as px
import streamlit as st

from analysis.core.kinds import compare_sections
from analysis.core.table import easy_and_hard, per_class_cost
from app.components import show_section
from app.resources import cached_table, choose_model, test_images, test_sets

st.title("Compare")
model = choose_model()
if model is None:
    st.stop()
dataset = st.selectbox("Test images", test_sets(), help="The bundled 500-image subset, or the full test set when installed.")
images, _ = test_images(dataset)
if list(images.shape[1:]) != list(model.meta["input_size"]):  # e.g. an uploaded CIFAR checkpoint
    st.error(f"`{model.meta['name']}` takes {'x'.join(map(str, model.meta['input_size']))} inputs, the test images "
             f"are {'x'.join(map(str, images.shape[1:]))}: there is nothing to compare on.")
    st.stop()
table = cached_table(model, dataset)

a, b, c = st.columns(3)
a.metric("Accuracy", f"{table['correct'].mean() * 100:.2f}%", f"{len(table):,} images", delta_color="off")
b.metric("Mean MACs / image", f"{table['macs'].mean() / 1e6:.2f} M")
c.metric("MACs range", f"{table['macs'].min() / 1e6:.2f} – {table['macs'].max() / 1e6:.2f} M")

st.subheader("Easy vs hard images")
st.caption("Easy: fewest MACs executed; hard: most (ties broken by confidence).")
k = st.slider("Images per gallery", 4, 16, 8)
for title, subset in zip(("Easy", "Hard"), easy_and_hard(table, k)):
    st.markdown(f"**{title}** · mean brightness {subset['brightness'].mean():.3f} · contrast {subset['contrast'].mean():.3f} · "
                f"MACs {subset['macs'].mean() / 1e6:.2f} M · accuracy {subset['correct'].mean() * 100:.0f}%")
    st.image([images[i].permute(1, 2, 0).squeeze(-1).numpy() for i in subset.index],
             caption=[f"{row['class']} → {row['predicted']} · {row['macs'] / 1e6:.1f}M" for _, row in subset.iterrows()], width=84)

st.subheader("Cost per class")
cost = per_class_cost(table).reset_index()
st.plotly_chart(px.bar(cost, x="class", y="macs_mean", error_y=cost["macs_max"] - cost["macs_mean"],
                       error_y_minus=cost["macs_mean"] - cost["macs_min"], hover_data=["accuracy", "images"],
                       labels={"macs_mean": "mean MACs"}), key="per-class")

for i, section in enumerate(compare_sections(table)):  # what each decision kind of this model offers
    show_section(section, key=f"section-{i}")

st.subheader("Per-image table")
st.dataframe(table, height=300)
parquet = io.BytesIO()
table.to_parquet(parquet)
left, right = st.columns(2)
left.download_button("Download CSV", table.to_csv().encode(), f"{model.meta['name']}_{dataset}.csv", "text/csv")
right.download_button("Download Parquet", parquet.getvalue(), f"{model.meta['name']}_{dataset}.parquet", "application/octet-stream")
