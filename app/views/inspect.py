"""Inspect: one model and one or more images, two images side by side, or one image across all models.

Each image can be questioned: force any decision, move any knob, perturb the picture. The first image's view
(model, sample, interventions) lives in the URL, so a link restores it.
"""

from __future__ import annotations

import streamlit as st

from routescope.app.model_vs_model import across_models, side_by_side
from routescope.app.components import (
    explain,
    forget_interventions_of_another_model,
    image_report,
    intervention_panel,
    perturbation_view,
    pick_images,
    restore_view,
    share_view,
    uploaded,
)
from routescope.app.resources import (
    chosen_test_set,
    choose_model,
    chosen_bundled_name,
    open_linked_image,
    reference_for,
    sample_pictures,
    show_model,
    test_image_index,
)
from routescope.analysis.core.catalog import sample_images

st.title("Inspect")
st.caption(
    "One image at a time: the prediction, the MACs it really executed and every decision the model took for it "
    "(which blocks ran, which width, which expert, where it left). Try: pick several samples, then flip a decision "
    "under **Intervene**, sweep brightness or occlusion under **Perturb**, or ask **Explain** what drove a decision."
)
model = choose_model()
if model is None:
    st.stop()
show_model(model)

chosen = chosen_test_set(model)  # the test set chosen on Compare (or the model's default): a few images per class
extra = sample_pictures(*chosen) if chosen is not None else {}
if chosen is not None:
    open_linked_image(*chosen, extra)  # ?index=N: a Compare gallery's image

mode = st.radio("View", ["Images", "Side by side", "Across all bundled models"], horizontal=True, key="inspect-mode")

if mode == "Images":
    forget_interventions_of_another_model(model)
    restore_view(model)
    inputs = pick_images("inspect", extra=extra)
    if not inputs:
        st.info("Pick a sample image or upload one.")
    uploads = uploaded("inspect", inputs)
    reference = reference_for(chosen[1]) if chosen is not None and any(uploads) else None  # on the first upload
    for i, (name, data) in enumerate(inputs):
        with st.container(border=True):
            trace = image_report(model, name, data, key=f"img{i}", upload=uploads[i], reference=reference)
            if trace is not None:
                # toggles, not expanders: an expander's body runs (and IG with it) on every rerun, even closed
                if st.toggle("Intervene: force decisions, move knobs", key=f"img{i}-intervene"):
                    intervention_panel(model, name, data, trace, key=f"img{i}")
                if st.toggle("Perturb the image and watch the routing", key=f"img{i}-perturb"):
                    perturbation_view(model, trace["pixels"], key=f"img{i}")
                if st.toggle("Explain this prediction or a decision (captum)", key=f"img{i}-explain"):
                    explain(model, trace, key=f"img{i}")
    first = inputs[0][0] if inputs and inputs[0][0] in {p.name for p in sample_images()} else None
    on_server = chosen is not None and chosen[0].upload is None  # an uploaded zip's image has no name a link carries
    index = test_image_index(inputs[0][0]) if inputs and first is None and on_server and inputs[0][0] in extra else None
    share_view(chosen_bundled_name(), first, index=index)
elif mode == "Side by side":
    side_by_side(model, extra)
else:
    across_models(extra)
