"""Reusable pieces of the pages: image picking, one image's report, decision views, attribution view."""
from __future__ import annotations

import plotly.express as px
import streamlit as st
import torch

from analysis.core.catalog import sample_images
from analysis.core.charts import top_classes
from analysis.core.images import ImageError
from analysis.core.kinds import Section, attribution_targets, inspect_charts
from app.resources import attribution as cached_attribution, traced_image

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]


def pick_images(key: str, default_samples: int = 1, multiple: bool = True) -> list[tuple[str, bytes]]:
    """Sample images and uploads, as ``(name, bytes)``; decoding happens later, per model."""
    samples = {p.name: p for p in sample_images()}
    left, right = st.columns(2)
    if multiple:
        picked = left.multiselect("Sample images", list(samples), default=list(samples)[:default_samples], key=f"{key}-samples")
        uploads = right.file_uploader("…or upload images", accept_multiple_files=True, type=IMAGE_TYPES, key=f"{key}-upload") or []
    else:
        choice = left.selectbox("Sample image", ["(none)", *samples], index=1, key=f"{key}-samples")
        picked = [] if choice == "(none)" else [choice]
        upload = right.file_uploader("…or upload an image", type=IMAGE_TYPES, key=f"{key}-upload")
        uploads = [upload] if upload is not None else []
        if uploads:
            picked = []
    return [(name, samples[name].read_bytes()) for name in picked] + [(u.name, u.getvalue()) for u in uploads]


def show_decisions(decisions: list[dict], key: str) -> None:
    """Every chart the decisions' kinds offer, in the order the network takes them."""
    for i, (kind, figure) in enumerate(inspect_charts(decisions)):
        st.plotly_chart(figure, key=f"{key}-{kind}-{i}")


def show_section(section: Section, key: str, title: bool = True) -> None:
    """A ``Section`` a kind's view offers: its title, figure, table and caption."""
    if title:
        st.subheader(section.title)
    if section.figure is not None:
        st.plotly_chart(section.figure, key=key)
    if section.table is not None:
        st.dataframe(section.table, hide_index=True, height=min(320, 40 + 35 * len(section.table)))
    if section.caption:
        st.caption(section.caption)


def image_report(model: torch.nn.Module, name: str, data: bytes, key: str, compact: bool = False) -> dict | None:
    """The tensor the model saw, prediction, cost and every decision for one image; returns the trace.

    An unusable file is an error message and None; content the model cannot see (frames, alpha, bit depth,
    colour space) is a warning; routine fitting steps are captions.
    """
    try:
        model_input, trace = traced_image(model, model.cache_key, name, data)
    except ImageError as e:
        st.error(str(e))
        return None
    if model_input.warnings:
        st.warning(f"{name}: " + "; ".join(model_input.warnings))
    seen, result = st.columns([1, 3]) if not compact else (st.container(), st.container())
    seen.image(model_input.pixels, caption=f"{name}: the exact input the model saw", width=140, clamp=True)
    for note in model_input.notes:
        if note not in model_input.warnings:
            seen.caption(note)
    prediction, cost = trace["prediction"], trace["cost"]
    a, b = result.columns(2)
    a.metric("Prediction", prediction["label"], f"{prediction['probability'] * 100:.1f}% confidence", delta_color="off")
    b.metric("MACs executed", f"{cost['macs'] / 1e6:.2f} M",
             f"{cost['macs'] / cost['macs_full'] * 100:.0f}% of the dense {cost['macs_full'] / 1e6:.2f} M", delta_color="off")
    with result:
        st.plotly_chart(top_classes(trace), key=f"{key}-top")
        if trace["decisions"]:
            show_decisions(trace["decisions"], key)
        else:
            st.caption("A static network: every layer runs for every image, so there are no routing decisions.")
    return {**trace, "tensor": model_input.tensor}


def explain(model: torch.nn.Module, trace: dict, key: str) -> None:
    """captum attributions of the prediction or of one decision value, with IG's convergence delta (cached per
    model, image and target in ``app.resources.attribution``)."""
    decisions = [d for d in trace["decisions"] if attribution_targets(d)]
    choices = ["prediction"] + [f"{d['kind']}: {d['layer']}" for d in decisions]
    choice = st.selectbox("Explain", choices, key=f"{key}-target")
    if choice == "prediction":
        method = st.radio("Method", ["Integrated Gradients", "GradCAM"], horizontal=True, key=f"{key}-method")
        target = ("prediction", trace["prediction"]["index"], "gradcam" if method == "GradCAM" else "integrated_gradients")
    else:
        decision = decisions[choices.index(choice) - 1]
        options = attribution_targets(decision)
        picked = options[0]
        if len(options) > 1:
            picked = st.selectbox("Value", options, format_func=lambda t: t.label, key=f"{key}-option")
        target = ("decision", decision["layer"], picked)
    attribution = cached_attribution(model, model.cache_key, trace["tensor"].numpy(), target)
    limit = float(abs(attribution.heatmap).max()) or 1.0
    figure = px.imshow(attribution.heatmap, color_continuous_scale="RdBu_r", zmin=-limit, zmax=limit,
                       title=f"{attribution.method}: {attribution.target}")
    figure.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(figure, key=f"{key}-attribution")
    if attribution.delta is not None:
        st.caption(f"Convergence delta (completeness error of IG): {attribution.delta:.2e}")
