"""AppTest of issue 29 items 1, 7 and 11: the model picker's readable labels (the flagships starred, the exact name in
the help and the page's caption), an uploaded photo shown beside the input the model saw, flagged when it is unlike
the test images and deduplicated by content, and Perturb/Explain settings round-tripping through the URL."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from routescope.analysis.core.catalog import featured, featured_names, model_labels
from routescope.analysis.core.familiarity import familiarity, reference
from routescope.models.data import SAMPLE_IMAGES

from helpers import encode, start


def colour_photo() -> bytes:
    """A saturated colour photo: a red object on a blue-green background, bigger than any model input."""
    img = Image.new("RGB", (400, 300), (30, 140, 190))
    img.paste((210, 40, 40), (120, 90, 300, 220))
    return encode(img, "JPEG")


def test_picker_labels_star_only_the_flagships_and_name_the_checkpoint():
    st.cache_resource.clear()
    st.cache_data.clear()
    at = start()
    flagships = {e["flagship"] for e in featured().values()}
    labels = model_labels()
    select = at.sidebar.selectbox(key="model-name")
    assert list(select.options) == [labels[n] for n in featured_names()]
    starred = [label for label in select.options if label.startswith("★")]
    assert starred == [labels[n] for n in featured_names() if n in flagships] and len(starred) == len(flagships)
    assert all(" MACs" in label and "%" in label for label in select.options)
    skipnet = featured()["skipnet"]["flagship"]
    assert select.value == skipnet and labels[skipnet].startswith("★ SkipNet · flagship · ")
    assert skipnet not in labels[skipnet], "the label says what the model is, not its file name"
    assert f"`{skipnet}`" in select.help, "the exact name on hover"
    assert any(skipnet in c.value and labels[skipnet] in c.value for c in at.caption), "and in the page's caption"
    control = featured()["skipnet"]["controls"][0]
    assert labels[control].startswith("ResNet-20 · control, ")


def test_familiarity_flags_a_colour_photo_and_not_a_test_image():
    grey = [np.asarray(Image.open(p).convert("L").resize((28, 28))) for p in sorted(SAMPLE_IMAGES.glob("*-1.png"))]
    ref = reference(grey, "Fashion-MNIST", coloured=False)
    assert not familiarity(grey[0], 0.0, 0.3, ref).flagged
    flag = familiarity(255 - grey[0], 0.5, 0.99, ref)
    assert flag.flagged and flag.reason.startswith("A colour photo far from Fashion-MNIST")


def test_upload_beside_its_input_flagged_when_unlike_and_deduplicated(models_dir):
    sample = (SAMPLE_IMAGES / "ankle-boot-1.png").read_bytes()
    at = start()
    photo = colour_photo()
    uploads = [("colour.jpg", photo), ("boot.png", sample), ("again.jpg", photo), ("ankle-boot-1.png", sample)]
    at.file_uploader[0].set_value([(n, d, "application/octet-stream") for n, d in uploads]).run()
    assert not at.exception, at.exception
    captions = [c for image in at.get("image") for c in image.captions]
    seen = [c.split(": the exact input")[0] for c in captions if ": the exact input the model saw (28x28)" in c]
    assert seen == ["ankle-boot-1.png", "colour.jpg", "boot.png"], "one card per file content"
    assert any("`ankle-boot-1.png` is the same file as `boot.png`" in c.value for c in at.caption)
    assert "colour.jpg: as uploaded (400x300)" in captions and "boot.png: as uploaded (28x28)" in captions
    assert not any(c.startswith("ankle-boot-1.png: as uploaded") for c in captions), "a sample is no upload"
    assert any("`again.jpg` is the same file as `colour.jpg`" in c.value for c in at.caption)
    flags = [w.value for w in at.warning if "unlike the images" in w.value]
    assert (
        len(flags) == 1
        and flags[0].startswith("colour.jpg is unlike")
        and "colour photo far from Fashion-MNIST" in (flags[0])
    ), flags


def test_perturb_and_explain_round_trip_through_the_url(models_dir):
    at = start()
    at.toggle(key="img0-perturb").set_value(True).run()
    at.selectbox(key="img0-ptype").set_value("occlusion").run()
    low, high = at.slider(key="img0-prange-occlusion").value
    at.slider(key="img0-prange-occlusion").set_value((low, (low + high) / 2)).run()
    at.number_input(key="img0-psteps").set_value(5).run()
    at.toggle(key="img0-explain").set_value(True).run()
    at.radio(key="img0-method").set_value("GradCAM").run()
    assert not at.exception, at.exception
    params = {k: at.query_params[k] for k in at.query_params}
    assert params["perturb"] == "occlusion" and params["steps"] == "5"
    assert params["explain"] == "prediction" and params["method"] == "gradcam"
    assert "strength" in params

    st.cache_data.clear()
    again = start(params=params)
    assert again.toggle(key="img0-perturb").value and again.selectbox(key="img0-ptype").value == "occlusion"
    assert again.slider(key="img0-prange-occlusion").value == (low, (low + high) / 2)
    assert again.number_input(key="img0-psteps").value == 5
    assert again.toggle(key="img0-explain").value and again.radio(key="img0-method").value == "GradCAM"
    assert not again.warning and not again.error
    assert {k: again.query_params[k] for k in again.query_params} == params, "the URL still names the same view"


def test_a_bad_perturb_or_explain_link_is_a_message(models_dir):
    at = start(params={"perturb": "melt", "explain": "gates: layer9"})
    messages = [w.value for w in at.warning]
    assert any("perturbation `melt`" in m for m in messages)
    assert any("explain `gates: layer9`" in m for m in messages), messages
