"""Structure: what a model learned once for all inputs (DGConv group structure, RePr filter overlaps): each
structure kind's summary table and its view of one layer."""

from __future__ import annotations

import streamlit as st

from analysis.core.kinds import grouped, kind_view
from analysis.core.trace import model_structure
from app.components import show_section
from app.resources import choose_model, show_model

st.title("Structure")
model = choose_model()
if model is None:
    st.stop()
show_model(model)
structure = model_structure(model)
if not structure:
    st.info(
        f"`{model.meta['name']}` ({model.meta['method']}) has no learned per-model structure to show: "
        "pick a DGConv or RePr model."
    )
    st.stop()

for kind, entries in grouped(structure).items():
    view = kind_view(kind)
    if view is None:
        continue
    st.subheader(view.title)
    if view.summary is not None:
        st.dataframe(view.summary(entries), hide_index=True)
    if view.detail is not None:
        layer = st.selectbox("Layer", [e["layer"] for e in entries], key=f"{kind}-layer")
        entry = next(e for e in entries if e["layer"] == layer)
        for i, section in enumerate(view.detail(entry, model.meta)):
            show_section(section, key=f"{kind}-{i}", title=i > 0)
