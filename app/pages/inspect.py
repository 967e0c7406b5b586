"""Inspect: one model, one or more images; the tensor the model saw, its prediction and its cost."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from analysis.catalog import sample_images
from analysis.images import ImageError, load_model_input
from analysis.routing import trace_batch
from app.resources import choose_model

st.title("Inspect")
model = choose_model()
if model is None:
    st.stop()
meta = model.meta
st.caption(f"**{meta['name']}** · method `{meta['method']}` · trained on {meta['dataset']} · "
           f"test accuracy {meta.get('metrics', {}).get('test_acc', float('nan')) * 100:.2f}%")

samples = {p.name: p for p in sample_images()}
left, right = st.columns(2)
picked = left.multiselect("Sample images", list(samples), default=list(samples)[:1])
uploads = right.file_uploader("…or upload images", accept_multiple_files=True,
                              type=["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"])

inputs = [(name, samples[name].read_bytes()) for name in picked] + [(u.name, u.getvalue()) for u in uploads or []]
if not inputs:
    st.info("Pick a sample image or upload one.")
    st.stop()

for name, data in inputs:
    with st.container(border=True):
        try:
            model_input = load_model_input(data, meta, name)
        except ImageError as e:
            st.error(str(e))
            continue
        trace = trace_batch(model, model_input.tensor, [name])[0]
        seen, result = st.columns([1, 3])
        seen.image(model_input.pixels, caption=f"{name}: what the model saw", width=168, clamp=True)
        for note in model_input.notes:
            seen.caption(note)
        prediction, cost = trace["prediction"], trace["cost"]
        a, b = result.columns(2)
        a.metric("Prediction", prediction["label"], f"{prediction['probability'] * 100:.1f}% confidence", delta_color="off")
        b.metric("MACs executed", f"{cost['macs'] / 1e6:.2f} M", f"{cost['macs'] / cost['macs_full'] * 100:.0f}% of the dense "
                 f"{cost['macs_full'] / 1e6:.2f} M", delta_color="off")
        top = pd.DataFrame(trace["top"])
        figure = px.bar(top, x="probability", y="label", orientation="h", range_x=[0, 1], height=220)
        figure.update_layout(margin=dict(l=0, r=0, t=10, b=0), yaxis=dict(autorange="reversed", title=None))
        result.plotly_chart(figure, use_container_width=True, key=f"top-{name}")
        if trace["decisions"]:
            result.dataframe(pd.DataFrame(trace["decisions"]), hide_index=True)
        else:
            result.caption("A static network: every layer runs for every image, so there are no routing decisions.")
