"""Structure: what a model learned once for all inputs: DGConv group structure, RePr filter overlaps."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.charts import decision_charts
from analysis.routing import model_structure
from app.resources import choose_model

st.title("Structure")
model = choose_model()
if model is None:
    st.stop()
structure = model_structure(model)
if not structure:
    st.info(f"`{model.meta['name']}` ({model.meta['method']}) has no learned per-model structure to show: "
            "pick a DGConv or RePr model.")
    st.stop()

groups = [e for e in structure if e["kind"] == "groups"]
if groups:
    st.subheader("Learned group structure (DGConv)")
    st.dataframe(pd.DataFrame([{"layer": e["layer"], "groups": e["groups"], "channels": len(e["group_of_channel"]),
                                "group size": len(e["group_of_channel"]) // e["groups"]} for e in groups]), hide_index=True)
    layer = st.selectbox("Layer", [e["layer"] for e in groups])
    entry = next(e for e in groups if e["layer"] == layer)
    st.plotly_chart(decision_charts("groups", [entry])[0], key="group-mask")

filters = [e for e in structure if e["kind"] == "filters"]
if filters:
    st.subheader("Filter overlap (RePr ranking)")
    layer = st.selectbox("Conv layer", [e["layer"] for e in filters])
    entry = next(e for e in filters if e["layer"] == layer)
    st.plotly_chart(decision_charts("filters", [entry])[0], key="filter-overlap")
    ranking = pd.DataFrame({"filter": range(len(entry["overlap"])), "overlap": entry["overlap"]})
    ranking["dropped in last cycle"] = ranking["filter"].isin(entry.get("dropped", []))
    st.dataframe(ranking.sort_values("overlap", ascending=False), hide_index=True, height=240)
    cycles = [h["repr_cycle_record"] for h in model.meta.get("history", []) if "repr_cycle_record" in h]
    if cycles:
        st.markdown("**Filters dropped per cycle**")
        st.dataframe(pd.DataFrame([{"cycle": c, "layer": name, "dropped": dropped}
                                   for c, record in enumerate(cycles, 1) for name, dropped in record["dropped"].items()]),
                     hide_index=True)
