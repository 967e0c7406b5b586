"""AppTest of the Inspect page: bundled models, samples, uploads, and bad input that must not crash it."""
import io

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from analysis.catalog import sample_images
from models import create_model
from models.checkpoint import save_checkpoint
from models.data import FASHION_MNIST
from test_images import huge_png

from conftest import REPO

APP = str(REPO / "app" / "streamlit_app.py")


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    meta = {"name": "tiny", "method": "baseline", "dataset": "fashion-mnist", "classes": list(FASHION_MNIST.classes),
            "input_size": [1, 28, 28], "mean": [0.286], "std": [0.353], "dark_background": True,
            "metrics": {"test_acc": 0.5}, "recipe": {}}
    save_checkpoint(tmp_path / "tiny.pt", create_model("resnet8", in_chans=1), meta)
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    return tmp_path


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_inspect_a_sample(models_dir):
    at = start()
    assert at.sidebar.selectbox[0].value == "tiny"
    labels = [m.label for m in at.metric]
    assert labels == ["Prediction", "MACs executed"]
    assert at.metric[0].value in FASHION_MNIST.classes
    assert "100% of the dense" in at.metric[1].delta


def test_upload_images_good_and_bad(models_dir):
    at = start()
    at.multiselect[0].set_value([])
    photo = io.BytesIO()
    Image.new("RGB", (120, 90), "white").save(photo, "JPEG")
    at.file_uploader[0].set_value([
        ("shoe.jpg", photo.getvalue(), "image/jpeg"),
        ("fake.png", b"this is text", "image/png"),
        ("cut.png", sample_images()[0].read_bytes()[:50], "image/png"),
        ("bomb.png", huge_png(), "image/png"),
    ]).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 3 and "not an image" in errors[0] and "truncated" in errors[1]
    assert len(at.metric) == 2, "the good upload is still shown"
    assert any("inverted" in c.value for c in at.caption)


def test_foreign_checkpoint_upload_gives_a_message(models_dir):
    at = start()
    at.sidebar.radio[0].set_value("Upload a checkpoint").run()
    at.sidebar.file_uploader[0].set_value(("other.pt", b"PK\x03\x04 not torch", "application/octet-stream")).run()
    assert not at.exception
    assert "not a loadable RouteScope checkpoint" in at.sidebar.error[0].value


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app" / "pages" / f"{name}.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def chart_data(at: AppTest) -> list[dict]:
    """The plotly figure JSON behind every chart of the page."""
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array_shape(value) -> tuple:
    """Shape of a plotly array, whether plain lists or plotly's typed-array encoding."""
    if isinstance(value, dict):
        return tuple(int(n) for n in value["shape"].split(","))
    import numpy as np

    return np.asarray(value).shape


def test_inspect_side_by_side_and_across_models(models_dir):
    at = start()
    at.radio(key="inspect-mode").set_value("Side by side").run()
    assert not at.exception and len(at.metric) == 4
    at.radio(key="inspect-mode").set_value("Across all bundled models").run()
    assert not at.exception and [s.value for s in at.subheader] == ["tiny"]


def test_explain_prediction(models_dir):
    at = start()
    at.toggle(key="img0-explain").set_value(True).run()
    at.selectbox(key="img0-target").set_value("prediction").run()
    assert not at.exception
    assert any("Convergence delta" in c.value for c in at.caption)
    heatmap = [d for d in chart_data(at) if d["data"][0]["type"] == "heatmap"]
    assert heatmap and array_shape(heatmap[-1]["data"][0]["z"]) == (28, 28)


def test_compare_page_table_and_downloads(models_dir):
    at = page("compare")
    assert [m.label for m in at.metric] == ["Accuracy", "Mean MACs / image", "MACs range"]
    per_class = chart_data(at)[0]["data"][0]
    assert len(per_class["x"]) == 10
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]


def test_structure_page_without_structure(models_dir):
    at = page("structure")
    assert "no learned per-model structure" in at.info[0].value


def test_figures_page_offers_three_formats(models_dir):
    at = page("figures")
    assert [b.label for b in at.get("download_button")] == ["Download PNG", "Download PDF", "Download SVG"]
