"""AppTest of the test-set picker (issue 27): an uploaded zip of an ImageFolder tree on Compare (labels, table size,
skipped files listed), a hostile zip refused with a sentence while the page keeps working, a CIFAR model on the
bundled Fashion-MNIST subset (no labels: routing and cost only), a CIFAR-10 test set found under $ROUTESCOPE_DATA
(default for a CIFAR model, named by a link, sampled on Inspect), and the tables computed once for all sessions."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from routescope.analysis.core.catalog import sample_images
from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint
from routescope.models.data import CIFAR10, FASHION_MNIST

from helpers import APP, CIFAR_META, REPO, TIMEOUT, TINY_META, start, write_cifar10

COMPARE = str(REPO / "app" / "views" / "compare.py")
NO_LABELS = "no labels for this model's classes: routing and cost only, no accuracy"


@pytest.fixture
def cifar_model(models_dir):
    """``tiny_cifar`` beside ``tiny`` in the models folder: a random resnet8 that takes 3x32x32 CIFAR-10 images."""
    torch.manual_seed(27)  # weights of its own: stored tables are keyed by the weights, not by the meta
    save_checkpoint(models_dir / "tiny_cifar.pt", create_model("resnet8", num_classes=10, in_chans=3), CIFAR_META)
    return models_dir


def compare(model: str = "tiny", query: dict | None = None) -> AppTest:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    if at.sidebar.selectbox(key="model-name").value != model:
        at.sidebar.selectbox(key="model-name").set_value(model).run()
    assert not at.exception, at.exception
    return at


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def sample_tree() -> tuple[bytes, list[int]]:
    """A zip of ``mine/<class>/<image>`` made from the bundled sample images (folders named loosely:
    ``ankle-boot`` is ``Ankle boot``), a folder that is no class, a text file and a broken image; with the label
    the model should give each usable image, in the zip's order (-1: unlabelled)."""
    members, labels = {}, []
    for path in sample_images():
        folder, _, _ = path.stem.rpartition("-")
        if folder == "photo":
            members[f"mine/photos/{path.name}"] = path.read_bytes()
            labels.append(-1)
        else:
            members[f"mine/{folder}/{path.name}"] = path.read_bytes()
            keys = [c.lower().replace("/", "-").replace(" ", "-") for c in FASHION_MNIST.classes]
            labels.append(keys.index(folder))
    members["mine/readme.txt"] = b"my test images"
    members["mine/bag/broken.png"] = b"\x89PNG\r\n\x1a\n not really"
    return zip_of(members), labels


def upload_zip(at: AppTest, name: str, data: bytes) -> AppTest:
    at.selectbox(key="testset-set").set_value("upload").run()
    at.file_uploader(key="testset-zip").set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def table_of(at: AppTest) -> pd.DataFrame:
    return at.dataframe[-1].value  # the per-image table is the page's last


def test_compare_on_an_uploaded_image_folder_zip(models_dir):
    data, labels = sample_tree()
    at = upload_zip(compare(), "mine.zip", data)
    assert not at.error
    table = table_of(at)
    assert len(table) == len(labels) and list(table["label"]) == labels
    assert table["file"].iloc[0] == "mine/ankle-boot/ankle-boot-1.png", "each row names its file in the zip"
    assert table["correct"].isna().sum() == labels.count(-1), "the photos folder is unlabelled"
    accuracy = next(m for m in at.metric if m.label == "Accuracy")
    assert accuracy.delta == f"{len(labels)} images, {len(labels) - labels.count(-1)} labelled"
    summary = next(c.value for c in at.caption if c.value.startswith("`mine.zip`"))
    assert f"{len(labels)} images in 11 folders, 20 labelled" in summary and "2 files skipped" in summary, summary
    assert any("`photos`" in w.value and "unlabelled" in w.value for w in at.warning)
    (expander,) = at.expander
    assert expander.label == "2 skipped files, 1 unlabelled folder"
    listed = expander.dataframe[0].value
    assert list(listed["in the zip"]) == ["mine/readme.txt", "mine/bag/broken.png", "photos/"]
    assert listed["what happened"].iloc[0] == "skipped: not an image file (.txt)"
    assert at.query_params.get("testset") in (None, []), "an upload has no name a link could carry"
    downloads = [b.label for b in at.get("download_button")]
    assert downloads == ["Download CSV", "Download Parquet"]


@pytest.mark.parametrize(
    "members, words",
    [
        ({"../../etc/evil.png": b"x", "ok/a.png": b"y"}, "points outside the archive"),
        ({"cats/a.png": b"x", "dogs/b.png": b"y"}, "are not the model's classes"),
    ],
    ids=["traversal", "no-class-matches"],
)
def test_a_refused_zip_is_a_sentence_and_the_page_keeps_working(models_dir, members, words):
    at = upload_zip(compare(), "bad.zip", zip_of(members))
    (error,) = at.error
    assert error.value.startswith("bad.zip: ") and words in error.value, error.value
    assert not at.metric, "nothing is analysed"
    at.selectbox(key="testset-set").set_value("fashion-mnist-subset").run()
    assert not at.exception and not at.error
    assert len(table_of(at)) == 500


def test_a_cifar_model_on_the_bundled_subset_has_no_labels(cifar_model):
    at = compare("tiny_cifar")
    assert at.selectbox(key="testset-set").value == "fashion-mnist-subset", "no CIFAR data on this server"
    assert any(NO_LABELS in i.value for i in at.info)
    accuracy = next(m for m in at.metric if m.label == "Accuracy")
    assert accuracy.value == "–" and accuracy.delta == "500 images, none labelled"
    table = table_of(at)
    assert len(table) == 500 and table["correct"].isna().all() and set(table["predicted"]) <= set(CIFAR10.classes)
    assert "Cost per predicted class" in [s.value for s in at.subheader]


@pytest.fixture
def server_data(cifar_model, tmp_path, monkeypatch):
    """Two data folders in $ROUTESCOPE_DATA: one with CIFAR-10 batches, one with a folder of photos."""
    cifar, other = tmp_path / "cifar", tmp_path / "more"
    _, labels = write_cifar10(cifar)
    (other / "photos").mkdir(parents=True)
    for path in sample_images()[:3]:
        (other / "photos" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("ROUTESCOPE_DATA", os.pathsep.join([str(cifar), str(other)]))
    return labels


def test_a_server_test_set_is_the_cifar_models_default(server_data):
    at = compare("tiny_cifar")
    picker = at.selectbox(key="testset-set")
    assert picker.value == "cifar10:cifar" and list(picker.options) == [
        "Bundled Fashion-MNIST subset (500 images)",
        "CIFAR-10 test set (cifar/)",
        "photos/ (images, unlabelled)",
        "Upload a .zip of images",
    ]
    table = table_of(at)
    assert list(table["label"]) == server_data and table["correct"].notna().all()
    assert at.query_params.get("testset") in (None, []), "the default needs no link"
    picker.set_value("folder:photos").run()
    assert at.query_params["testset"] in ("folder:photos", ["folder:photos"])
    assert list(table_of(at)["file"]) == [p.name for p in sample_images()[:3]]
    assert at.selectbox(key="testset-set").value == "folder:photos"


def test_a_link_names_the_server_test_set_and_inspect_samples_it(server_data):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny_cifar", "testset": "folder:photos"})
    at.run()
    at.switch_page("views/compare.py").run()
    assert not at.exception and at.selectbox(key="testset-set").value == "folder:photos"
    at.switch_page("views/inspect.py").run()
    samples = at.multiselect(key="inspect-samples")
    photos = [o for o in samples.options if o.startswith("folder:photos #")]
    assert len(photos) == 3 and samples.value == [sample_images()[0].name], "the bundled photo stays the default"
    samples.set_value([photos[0]]).run()
    assert not at.exception and not at.error
    assert any(c.startswith(f"{photos[0]}: the exact input") for image in at.get("image") for c in image.captions)


def test_fashion_models_keep_the_bundled_subset_and_offer_no_cifar(server_data):
    at = start()  # Inspect: the tiny Fashion-MNIST model, with a few images per class of the bundled subset
    samples = at.multiselect(key="inspect-samples").options
    assert sum(o.startswith("fashion-mnist-subset #") for o in samples) == 20, "two per class"
    at = compare("tiny")
    options = at.selectbox(key="testset-set").options
    assert at.selectbox(key="testset-set").value == "fashion-mnist-subset"
    assert not any(o.startswith("CIFAR-10") for o in options), "no CIFAR class is a Fashion-MNIST class"


def test_tables_are_traced_once_and_copied_per_session(monkeypatch):
    """Four sessions asking at once wait for one computation; each gets its own copy."""
    from routescope.analysis.core.testsets import ModelImages
    from routescope.app import resources
    from routescope.models.data import TensorImages

    resources._table_store.clear()
    calls = []

    def slow_table(model, images, progress=None, **kw):
        calls.append(1)
        time.sleep(0.3)
        return pd.DataFrame({"label": [1, 2, 3]})

    monkeypatch.setattr(resources, "stored_table", slow_table)
    model = torch.nn.Identity()
    model.cache_key = "fake@1"
    data = TensorImages(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), torch.tensor([1, 2, 3]))
    images = ModelImages(data, list(range(10)), TINY_META, "fake-images", FASHION_MNIST.classes)
    got = []
    threads = [threading.Thread(target=lambda: got.append(resources.cached_table(model, images))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4
    assert len({id(t) for t in got}) == 4, "no two sessions hold the same object"
    got[0]["label"] = 0
    assert list(resources.cached_table(model, images)["label"]) == [1, 2, 3]
    resources._table_store.clear()


def test_the_progress_bar_says_how_long_is_left():
    from routescope.analysis.core.table_store import Progress
    from routescope.app.resources import tracing_text

    assert tracing_text(Progress(0, 10_000, 0.0)) == "Tracing 10,000 images… 0%"
    assert tracing_text(Progress(2_500, 10_000, 10.0)) == "Tracing 10,000 images… 25% (about 30 s left)"
    assert tracing_text(Progress(1_000, 10_000, 60.0)) == "Tracing 10,000 images… 10% (about 9 min left)"


def test_the_knob_sweep_runs_on_the_uploaded_zip(models_dir):
    """Labelled images: the accuracy-vs-MACs figure, titled with the zip; unlabelled ones: the cost per value."""
    from helpers import chart_data

    skipnet = create_model("skipnet_resnet8", in_chans=1)
    save_checkpoint(models_dir / "tiny_skipnet.pt", skipnet, {**TINY_META, "name": "tiny_skipnet", "method": "skipnet"})
    data, labels = sample_tree()
    at = upload_zip(compare("tiny_skipnet"), "mine.zip", data)
    at.number_input(key="sweep-count").set_value(3).run()
    at.toggle(key="sweep-run").set_value(True).run()
    assert not at.exception, at.exception
    titles = [d["layout"].get("title", {}).get("text", "") for d in chart_data(at)]
    assert "Knob sweep: tiny_skipnet, threshold on mine.zip" in titles, titles

    flat = zip_of({path.name: path.read_bytes() for path in sample_images()[:4]})
    at.file_uploader(key="testset-zip").set_value(("flat.zip", flat, "application/zip")).run()
    assert not at.exception, at.exception
    assert any(c.value == "`flat.zip`: 4 images without class folders." for c in at.caption)
    assert any(NO_LABELS in i.value for i in at.info) and "Knob sweep: MACs per value" in [
        s.value for s in at.subheader
    ]
    assert not any(
        t.startswith("Knob sweep") for t in (d["layout"].get("title", {}).get("text", "") for d in chart_data(at))
    )
    curve = next(d.value for d in at.dataframe if "value" in d.value.columns)
    assert len(curve) == 3 and "accuracy" not in curve.columns and curve["macs_mean"].gt(0).all()


def test_the_uploaded_zip_follows_to_figures_and_inspect(models_dir):
    data, labels = sample_tree()
    at = start()
    at.switch_page("views/compare.py").run()
    upload_zip(at, "mine.zip", data)
    at.switch_page("views/figures.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="testset-set").value == "upload", "figures draw on the zip too"
    captions = [c.value for c in at.caption]
    # each caption names exactly the set its figure used: the overview reads the checkpoints' stored metrics
    assert any("full test set" in c and "The chosen test images are not used." in c for c in captions), captions
    assert not any("Test images:" in c for c in captions if "full test set" in c), captions
    if len(at.selectbox(key="figures-method").options) > 2:  # a figure of the test images: it names the zip
        at.selectbox(key="figures-method").set_value("every figure").run()
        captions = [c.value for c in at.caption]
        assert any(f"Test images: mine.zip ({len(labels):,})." in c for c in captions), captions
    assert at.image, "figures drawn"
    at.switch_page("views/inspect.py").run()
    options = at.multiselect(key="inspect-samples").options
    assert [o for o in options if o.startswith("mine.zip #")][:2] == [
        "mine.zip #0 (Ankle boot)",
        "mine.zip #1 (Ankle boot)",
    ], "two images of each class of the zip"
    at.switch_page("views/compare.py").run()
    assert at.selectbox(key="testset-set").value == "upload" and len(table_of(at)) == len(labels), "still the zip"
    assert any("uploaded earlier" in c.value for c in at.caption)
