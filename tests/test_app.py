"""AppTest of every page: bundled models, samples, real uploads, bad input that must not crash it, the data
behind the charts, the files behind the download buttons, and a shared model that no request mutates."""

import io
import json
import tempfile

import numpy as np
import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint
from routescope.models.data import FASHION_MNIST

from helpers import (
    TINY_META,
    array_shape,
    chart_data,
    encode,
    fingerprint,
    huge_png,
    page,
    plotly_values,
    shoe_on_white,
    start,
)


@pytest.fixture
def downloads(monkeypatch) -> dict[str, tuple[str, bytes]]:
    """``{file name: (mime type, bytes)}`` of every download button the runs create."""
    seen: dict[str, tuple[str, bytes]] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if filename is not None and isinstance(path_or_data, bytes):
            seen[filename] = (mimetype, path_or_data)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return seen


def shown_images(at: AppTest) -> list[str]:
    """Names of the images whose model input the page shows (from the image captions)."""
    return [
        c.split(": the exact input")[0] for image in at.get("image") for c in image.captions if ": the exact input" in c
    ]


def test_inspect_a_sample(models_dir):
    at = start()
    assert at.sidebar.selectbox[0].value == "tiny"
    labels = [m.label for m in at.metric]
    assert labels == ["Prediction", "MACs executed"]
    assert at.metric[0].value in FASHION_MNIST.classes
    assert "same as the dense" in at.metric[1].delta  # a static model costs what the dense network does


def test_upload_images_good_odd_and_bad(models_dir):
    """Each upload gives its report, a warning (content the model cannot see) or an error; nothing crashes."""
    rng = np.random.default_rng(0)
    noise = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    frames = [shoe_on_white(), Image.new("RGB", (300, 200), "black")]
    transparent = shoe_on_white(mode="RGBA")
    transparent.putalpha(Image.linear_gradient("L").resize(transparent.size))
    uploads = {
        "shoe.jpg": encode(shoe_on_white(), "JPEG"),
        "fake.png": b"this is text",
        "cut.png": noise[: len(noise) // 2],
        "bomb.png": huge_png(),
        "anim.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "cmyk.jpg": encode(shoe_on_white(mode="CMYK"), "JPEG"),
        "deep.png": encode(Image.fromarray(np.asarray(shoe_on_white().convert("L"), dtype=np.uint16) * 257)),
        "alpha.png": encode(transparent),
    }
    at = start()
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in uploads.items()]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 3, errors
    assert errors[0].startswith("bomb.png: ") and "megapixel limit" in errors[0], (
        "refused at the uploader, before decoding"
    )
    assert errors[1] == "fake.png: not an image file (or a format Pillow cannot read)"
    assert errors[2].startswith("cut.png: broken or truncated image")
    assert [w.value for w in at.warning] == [
        "anim.gif: animated (2 frames): used the first frame",
        "cmyk.jpg: CMYK converted to RGB",
        "deep.png: 16-bit grayscale image rescaled to 8 bits",
        "alpha.png: transparency composited on white",
    ]
    assert shown_images(at) == ["ankle-boot-1.png", "shoe.jpg", "anim.gif", "cmyk.jpg", "deep.png", "alpha.png"], (
        "the rest still works"
    )
    predictions = [m.value for m in at.metric if m.label == "Prediction"]
    assert len(predictions) == 6 and set(predictions) <= set(FASHION_MNIST.classes)
    tops = [d["data"][0] for d in chart_data(at) if d["layout"]["title"]["text"] == "Top classes"]
    assert len(tops) == 6 and all(t["y"][-1] == p for t, p in zip(tops, predictions)), (
        "bars are the trace's top classes"
    )
    assert any("inverted" in c.value for c in at.caption)


def test_side_by_side_upload_replaces_the_sample(models_dir):
    at = start()
    at.radio(key="inspect-mode").set_value("Side by side").run()
    at.radio(key="side-what").set_value("Two images, one model").run()
    at.file_uploader(key="side1-upload").set_value(("anim.gif", encode(shoe_on_white(), "GIF"), "image/gif")).run()
    assert not at.exception
    assert shown_images(at) == ["ankle-boot-1.png", "anim.gif"] and not at.warning, (
        "a one-frame palette GIF is plain RGB"
    )


def _broken_checkpoints(folder) -> dict[str, tuple[bytes, str]]:
    """Uploads that are not usable RouteScope checkpoints, with the message each must give."""

    def routescope(meta: dict) -> bytes:
        path = folder / "broken.pt"
        save_checkpoint(path, create_model("resnet8", in_chans=1), meta)
        return path.read_bytes()

    plain = io.BytesIO()
    torch.save(create_model("resnet8", in_chans=1).state_dict(), plain)
    return {
        "random.pt": (np.random.default_rng(0).bytes(4096), "not a loadable RouteScope checkpoint"),
        "zip.pt": (b"PK\x03\x04 not torch", "not a loadable RouteScope checkpoint"),
        "state_dict.pt": (plain.getvalue(), "not a RouteScope checkpoint (a plain state_dict"),
        "no_classes.pt": (routescope({k: v for k, v in TINY_META.items() if k != "classes"}), "its meta lacks classes"),
        "rgb_meta.pt": (
            routescope({**TINY_META, "input_size": [3, 32, 32]}),
            "a 3x32x32 input does not run through it",
        ),
        "few_classes.pt": (routescope({**TINY_META, "classes": ["a", "b"]}), "gives (1, 10) logits for 2 classes"),
    }


def test_foreign_checkpoint_uploads_give_a_message(models_dir, tmp_path_factory):
    at = start()
    at.sidebar.radio[0].set_value("Upload a checkpoint").run()
    for name, (data, message) in _broken_checkpoints(tmp_path_factory.mktemp("ckpt")).items():
        at.sidebar.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, (name, at.exception)
        assert len(at.sidebar.error) == 1 and at.sidebar.error[0].value.startswith(f"{name}: "), name
        assert message in at.sidebar.error[0].value, (name, at.sidebar.error[0].value)
        assert tempfile.gettempdir() not in at.sidebar.error[0].value, "no temporary paths in messages"
    at.sidebar.radio[0].set_value("Bundled").run()
    assert not at.exception and [m.label for m in at.metric] == ["Prediction", "MACs executed"], "the app goes on"


def test_compare_page_with_a_model_for_other_images(models_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("rgb") / "rgb.pt"
    save_checkpoint(path, create_model("resnet8", in_chans=3), {**TINY_META, "name": "rgb", "input_size": [3, 32, 32]})
    at = page("compare")
    at.sidebar.radio[0].set_value("Upload a checkpoint").run()
    at.sidebar.file_uploader[0].set_value(("rgb.pt", path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception and not at.error, "the test images are converted to what the model takes (issue 27)"
    table = at.dataframe[-1].value
    assert len(table) == 500 and table["correct"].notna().all(), "its classes are Fashion-MNIST's: labelled"


def test_inspect_side_by_side_and_across_models(models_dir):
    at = start()
    at.radio(key="inspect-mode").set_value("Side by side").run()
    assert not at.exception and len(at.metric) == 4
    at.radio(key="inspect-mode").set_value("Across all bundled models").run()
    assert not at.exception and not at.subheader  # a table, one row per model; a card on demand
    assert list(next(t.value for t in at.dataframe if "decisions" in t.value.columns)["model"]) == ["tiny"]
    at.selectbox(key="across-card").set_value("tiny").run()
    assert not at.exception and [s.value for s in at.subheader] == ["tiny"]


def test_explain_prediction(models_dir):
    at = start()
    at.toggle(key="img0-explain").set_value(True).run()
    at.selectbox(key="img0-target").set_value("prediction").run()
    assert not at.exception
    assert any("Convergence delta" in c.value for c in at.caption)
    heatmap = [d for d in chart_data(at) if d["data"][0]["type"] == "heatmap"]
    assert heatmap and array_shape(heatmap[-1]["data"][0]["z"]) == (28, 28)


def test_compare_page_table_and_downloads(models_dir, downloads):
    at = page("compare")
    assert [m.label for m in at.metric] == ["Accuracy", "Mean MACs / image", "MACs range"]
    per_class = chart_data(at)[0]["data"][0]
    assert len(per_class["x"]) == 10
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]
    mime, csv = downloads["tiny_fashion-mnist-subset.csv"]
    assert mime == "text/csv" and len(csv.decode().splitlines()) == 501


def test_structure_page_without_structure(models_dir):
    at = page("structure")
    assert "no learned per-model structure" in at.info[0].value


def test_figures_page_offers_png_pdf_and_svg(models_dir, downloads):
    at = page("figures")
    buttons = [b.label for b in at.get("download_button")]
    assert buttons and buttons == ["Download PNG", "Download PDF", "Download SVG"] * (len(buttons) // 3)
    magic = {"png": ("image/png", b"\x89PNG"), "pdf": ("application/pdf", b"%PDF"), "svg": ("image/svg+xml", b"<?xml")}
    assert len(downloads) == len(buttons)
    for name, (mime, data) in downloads.items():
        want_mime, head = magic[name.rsplit(".", 1)[1]]
        assert mime == want_mime and data.startswith(head), name
        if name.endswith(".svg"):
            assert b"<svg" in data[:2000]


def test_requests_never_mutate_the_cached_model(models_dir, monkeypatch):
    """Inspect (uploads, attributions of a decision, IG and GradCAM, a forced gate, a knob moved, a perturbation
    sweep), Compare (with its knob sweep): the shared model stays as loaded."""
    from routescope import analysis
    import routescope.analysis.core.attributions  # noqa: F401
    from routescope.app.resources import load_bundled

    skipnet = create_model("skipnet_resnet8", in_chans=1)
    save_checkpoint(models_dir / "tiny_skipnet.pt", skipnet, {**TINY_META, "name": "tiny_skipnet", "method": "skipnet"})
    shared = {name: load_bundled(name) for name in ("tiny", "tiny_skipnet")}
    before = {name: fingerprint(model) for name, model in shared.items()}

    explained_on = []
    real = analysis.core.attributions.explain_prediction

    def spy(model, x, target, method="integrated_gradients"):
        explained_on.append((method, model is shared["tiny_skipnet"]))
        return real(model, x, target, method)

    monkeypatch.setattr(analysis.core.attributions, "explain_prediction", spy)

    at = start()
    at.sidebar.selectbox[0].set_value("tiny_skipnet").run()
    at.file_uploader[0].set_value(("shoe.jpg", encode(shoe_on_white(), "JPEG"), "image/jpeg")).run()
    skips = [d["data"][0] for d in chart_data(at) if d["layout"]["title"]["text"].startswith("Blocks executed")]
    assert len(skips) == 2 and all(
        len(s["z"][0]) == len(skipnet.gate_names) and set(s["z"][0]) <= {0, 1} for s in skips
    )
    at.toggle(key="img1-explain").set_value(True).run()
    target = at.selectbox(key="img1-target")
    target.set_value(target.options[1]).run()  # a skip decision
    assert not at.exception and any("gate probability" in d["layout"]["title"]["text"] for d in chart_data(at))
    at.selectbox(key="img1-target").set_value("prediction").run()
    at.radio(key="img1-method").set_value("GradCAM").run()
    at.toggle(key="img1-intervene").set_value(True).run()  # interventions and knob moves go through the trace only
    gate = next(t for t in at.toggle if t.key and t.key.startswith("img1-ctl-"))
    gate.set_value(not gate.value).run()
    at.slider(key="img1-knob-threshold").set_value(0.9).run()
    assert not at.exception and any(m.label == "MACs (intervened)" for m in at.metric)
    at.toggle(key="img1-perturb").set_value(True).run()
    at.radio(key="inspect-mode").set_value("Across all bundled models").run()
    assert not at.exception, at.exception
    assert set(explained_on) == {("integrated_gradients", True), ("gradcam", False)}, "captum hooks only a copy"

    compare = page("compare")
    compare.sidebar.selectbox[0].set_value("tiny_skipnet").run()
    assert not compare.exception and "Skip ratio per block" in [s.value for s in compare.subheader]
    compare.number_input(key="sweep-count").set_value(3).run()
    compare.toggle(key="sweep-run").set_value(True).run()
    assert not compare.exception, compare.exception

    assert {name: load_bundled(name) for name in shared} == shared, "still the same cached objects"
    assert {name: fingerprint(model) for name, model in shared.items()} == before


@pytest.mark.parametrize(
    "bundled, kind", [("dgconv_resnet20_fmnist_b0.5", "groups"), ("repr_convnet3_fmnist", "filters")]
)
def test_structure_page_of_a_bundled_model(tmp_path, monkeypatch, bundled, kind):
    """The learned structure of a real DGConv / RePr checkpoint: table and heatmap data from the model itself."""
    import shutil

    from routescope.analysis.core.catalog import PRETRAINED
    from routescope.analysis.core.kinds import kind_view
    from routescope.analysis.core.trace import model_structure
    from routescope.models.checkpoint import load_checkpoint

    shutil.copy(PRETRAINED / f"{bundled}.pt", tmp_path / f"{bundled}.pt")
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    at = page("structure")
    entries = [e for e in model_structure(load_checkpoint(tmp_path / f"{bundled}.pt")) if e["kind"] == kind]
    assert entries and not at.info
    shown = next((e for e in entries if kind_view(kind).notable(e)), entries[0])  # the page opens on a notable layer
    assert at.selectbox(key=f"{kind}-layer").value == shown["layer"]
    heatmap = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    if kind == "groups":
        table = at.dataframe[0].value
        assert list(table["groups"]) == [e["groups"] for e in entries]
        assert np.asarray(heatmap["z"]).sum() == sum(len(e["group_of_channel"]) ** 2 // e["groups"] for e in [shown])
    else:
        ranking = at.dataframe[0].value
        assert shown.get("dropped"), "a RePr layer with dropped filters"
        assert sorted(ranking["overlap"]) == sorted(np.round(shown["overlap"], 3)), "shown to 3 decimals"
        assert len(at.dataframe) == 2, "the filters dropped per cycle are listed"


def test_results_page_without_evaluated_models(models_dir):
    at = page("results")
    assert "No evaluated checkpoints" in at.info[0].value and not at.get("plotly_chart")


def test_results_page_pareto_speed_and_seeds(tmp_path, monkeypatch):
    """Real checkpoints' metas on the plot and in the table, the front from them, a broken file left out with a
    message, the saved benchmark rows, and the seeds table of a replicated experiment."""
    import shutil

    from routescope.analysis.core.catalog import PRETRAINED
    from routescope.analysis.core.pareto import models_frame, pareto_front

    names = ["resnet20_fmnist", "skipnet_resnet20_fmnist_a1", "dgconv_resnet20_fmnist_b0.5", "convnet3_fmnist"]
    for name in names:
        shutil.copy(PRETRAINED / f"{name}.pt", tmp_path / f"{name}.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    row = {
        "model": "m",
        "vs": "dense backbone",
        "mac_ratio": 0.5,
        "latency_ms": 1.0,
        "latency_ref_ms": 2.0,
        "latency_ratio": 0.5,
        "batch": 64,
        "throughput": 4.0,
        "throughput_ref": 2.0,
        "throughput_ratio": 2.0,
    }
    (tmp_path / "bench.json").write_text(
        json.dumps(
            {"command": "python -m tools.bench", "machine": "test", "torch": "x", "date": "2026-11-22", "rows": [row]}
        )
    )
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_data.clear()
    at = page("results")
    assert "broken.pt" in at.warning[0].value
    frame = models_frame(tmp_path / f"{n}.pt" for n in names)
    (figure,) = chart_data(at)
    points = [
        (x, y)
        for trace in figure["data"]
        if trace["mode"] == "markers"
        for x, y in zip(plotly_values(trace["x"]), plotly_values(trace["y"]))
    ]
    assert sorted(points) == sorted(zip(frame["macs_mean"] / 1e6, frame["test_acc"] * 100))
    (line,) = [trace for trace in figure["data"] if trace["name"] == "Pareto front"]
    front = pareto_front(frame)
    assert (
        list(plotly_values(line["x"])) == list(front["macs_mean"] / 1e6) and front["name"].iloc[-1] == "resnet20_fmnist"
    )
    table = at.dataframe[0].value
    assert set(table["name"]) == set(names) and set(table.loc[table["on_front"], "name"]) == set(front["name"])
    speed = [d.value for d in at.dataframe if "throughput_ratio" in d.value.columns]  # latency, throughput
    assert len(speed) == 2 and speed[1]["throughput_ratio"].tolist() == [2.0]
    (seeds,) = [d.value for d in at.dataframe if "n_runs" in d.value.columns]  # the RePr experiment: ConvNet seed
    assert seeds["arch"].tolist() == ["convnet3"] and seeds["n_runs"].tolist() == [1]


def test_featured_models_first_and_the_flagship_skipnet_by_default():
    """On the bundled models the app opens on the flagship SkipNet; sweeps and ablations sit behind a toggle."""
    from routescope.analysis.core.catalog import featured, featured_names

    st.cache_resource.clear()
    at = start()
    flagship = featured()["skipnet"]["flagship"]
    select = at.sidebar.selectbox(key="model-name")
    assert select.value == flagship and list(select.options)[0].startswith("★ SkipNet · flagship")
    assert len(select.options) == len(featured_names())
    at.sidebar.toggle(key="model-all").set_value(True).run()
    assert len(at.sidebar.selectbox(key="model-name").options) > len(featured_names())
    assert not at.exception
