"""Inspect: one model and one or more images, two images side by side, or one image across all models."""
from __future__ import annotations

import streamlit as st

from app.components import explain, image_report, pick_images
from app.resources import choose_model, load_bundled
from analysis.core.catalog import bundled_checkpoints

st.title("Inspect")
model = choose_model()
if model is None:
    st.stop()
meta = model.meta
accuracy = meta.get("metrics", {}).get("test_acc")
st.caption(f"**{meta['name']}** · method `{meta['method']}` · trained on {meta['dataset']}"
           + (f" · test accuracy {accuracy * 100:.2f}%" if accuracy is not None else ""))

mode = st.radio("View", ["Images", "Side by side", "Across all bundled models"], horizontal=True, key="inspect-mode")

if mode == "Images":
    inputs = pick_images("inspect")
    if not inputs:
        st.info("Pick a sample image or upload one.")
    for i, (name, data) in enumerate(inputs):
        with st.container(border=True):
            trace = image_report(model, name, data, key=f"img{i}")
            if trace is not None:
                # a toggle, not an expander: an expander's body runs (and IG with it) on every rerun, even closed
                if st.toggle("Explain this prediction or a decision (captum)", key=f"img{i}-explain"):
                    explain(model, trace, key=f"img{i}")
elif mode == "Side by side":
    columns = st.columns(2)
    for i, column in enumerate(columns):
        with column:
            inputs = pick_images(f"side{i}", multiple=False)
            if inputs:
                image_report(model, *inputs[0], key=f"side{i}", compact=True)
else:
    inputs = pick_images("across", multiple=False)
    if inputs:
        for name in bundled_checkpoints():
            with st.container(border=True):
                st.subheader(name)
                image_report(load_bundled(name), *inputs[0], key=f"across-{name}")
