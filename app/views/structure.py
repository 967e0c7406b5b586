"""Structure: what a model learned once for all inputs (DGConv group structure, RePr filter overlaps): each
structure kind's summary table and its view of one layer."""

from __future__ import annotations

import streamlit as st

from routescope.analysis.core.catalog import bundled_checkpoints, featured
from routescope.analysis.core.kinds import grouped, kind_view
from routescope.analysis.core.trace import model_structure
from routescope.app.components import show_section
from routescope.app.formatting import show_table
from routescope.app.resources import choose_bundled, choose_model, load_bundled, show_model
from routescope.models.decisions import decision_kinds

st.title("Structure")
st.caption(
    "What a model learned once for every input: DGConv's group structure (which channels a layer connects) and "
    "RePr's filter ranking (the filters it dropped and re-initialized). Try: another layer in the list, or the other "
    "DGConv budgets under the sweeps."
)
model = choose_model()
if model is None:
    st.stop()
show_model(model)
structure = model_structure(model)
if not structure:  # open on a model that has something to show: the featured ones whose structure is learned
    learned = {kind.method for kind in decision_kinds(per="model").values()}  # the methods that learn a structure
    bundled = bundled_checkpoints()
    with_structure = [
        e["flagship"] for method, e in featured().items() if method in learned and e["flagship"] in bundled
    ]
    if not with_structure:
        st.info(
            f"`{model.meta['name']}` ({model.meta['method']}) has no learned per-model structure to show: pick a "
            "DGConv or RePr model."
        )
        st.stop()
    st.info(
        f"`{model.meta['name']}` ({model.meta['method']}) has no learned per-model structure: its decisions are made "
        "per image (see Inspect and Compare). Below, a featured model whose structure is learned."
    )
    left, right = st.columns([3, 2])
    name = left.radio("Show the structure of", with_structure, horizontal=True, key="structure-of")
    right.button("Make it the model of every page", key="structure-open", on_click=choose_bundled, args=(name,))
    model = load_bundled(name)
    structure = model_structure(model)

for kind, entries in grouped(structure).items():
    view = kind_view(kind)
    if view is None:
        continue
    st.subheader(view.title)
    if view.summary is not None:
        show_table(view.summary(entries), most=8)
    if view.detail is not None:
        layers = [e["layer"] for e in entries]
        notable = [e["layer"] for e in entries if view.notable is not None and view.notable(e)]
        start = layers.index(notable[0]) if notable else 0  # open on a layer that has something to show
        layer = st.selectbox("Layer", layers, index=start, key=f"{kind}-layer")
        entry = next(e for e in entries if e["layer"] == layer)
        for i, section in enumerate(view.detail(entry, model.meta)):
            show_section(section, key=f"{kind}-{i}", title=i > 0)
