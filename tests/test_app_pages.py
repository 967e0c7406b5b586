"""AppTest of what spans the pages: the chosen (or uploaded) model follows the user and every page names it, the
Training page opens run files only, refusals are sentences next to their control, the device the app loads on,
and the latency timed against the dense network in one run."""

import io
import os
import pickle
import tomllib

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint

from helpers import authors_file, APP, REPO, TIMEOUT, TINY_META, encode, page, shoe_on_white, start

VIEWS = "views"  # AppTest.switch_page takes paths relative to the entry script's folder


@pytest.fixture
def two_models(models_dir):
    save_checkpoint(
        models_dir / "tiny_skipnet.pt",
        create_model("skipnet_resnet8", in_chans=1),
        {**TINY_META, "name": "tiny_skipnet", "method": "skipnet"},
    )
    return models_dir


def model_caption(at: AppTest) -> str:
    (caption,) = [c.value for c in at.caption if c.value.startswith("Model: ")]
    return caption


def go(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"{VIEWS}/{name}.py").run()
    assert not at.exception, (name, at.exception)
    return at


def test_the_chosen_model_follows_across_pages_and_each_page_names_it(two_models):
    at = start()
    at.sidebar.selectbox(key="model-name").set_value("tiny_skipnet").run()
    for name in ("compare", "figures", "structure", "inspect"):  # Figures has no model picker: the choice survives it
        go(at, name)
        if name != "figures":
            assert at.sidebar.selectbox(key="model-name").value == "tiny_skipnet", name
            assert "**tiny_skipnet**" in model_caption(at), name
            assert at.query_params["model"] in ("tiny_skipnet", ["tiny_skipnet"]), "the page's URL names its model"
    assert "Skip ratio per block" not in [s.value for s in at.subheader]


def test_a_link_chooses_the_model_for_every_page(two_models):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = "tiny_skipnet"
    at.run()
    assert not at.exception and "**tiny_skipnet**" in model_caption(at)
    go(at, "compare")
    assert at.sidebar.selectbox(key="model-name").value == "tiny_skipnet" and "**tiny_skipnet**" in model_caption(at)


def test_an_uploaded_model_follows_across_pages(two_models, tmp_path):
    save_checkpoint(tmp_path / "mine.pt", create_model("resnet8", in_chans=1), {**TINY_META, "name": "mine"})
    at = start()
    at.sidebar.radio(key="model-source").set_value("Upload a checkpoint").run()
    at.sidebar.file_uploader[0].set_value(
        ("mine.pt", (tmp_path / "mine.pt").read_bytes(), "application/octet-stream")
    ).run()
    assert "**mine** (uploaded file `mine.pt`)" in model_caption(at)
    for name in ("figures", "compare", "structure"):
        go(at, name)
    assert at.sidebar.radio(key="model-source").value == "Upload a checkpoint"
    assert "**mine** (uploaded file `mine.pt`)" in model_caption(at) and not at.sidebar.error
    assert any("uploaded earlier" in c.value for c in at.sidebar.caption)
    assert "model" not in at.query_params, "an upload has no name a link could carry"


def test_training_page_opens_run_files_only(monkeypatch, tmp_path):
    """No typed path: a list of ``*.metrics.jsonl`` under the run folders, and a link out of them is left out."""
    (tmp_path / "run.metrics.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "seed1.metrics.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "escape.metrics.jsonl").symlink_to("/etc/passwd")
    (tmp_path / "notes.txt").write_text("not a run")
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    at = page("training")
    assert not at.text_input, "no box that takes a path"
    options = list(at.selectbox(key="training-file").options)
    assert {str(tmp_path / "run.metrics.jsonl"), str(tmp_path / "experiments" / "seed1.metrics.jsonl")} <= set(options)
    assert all(o.endswith(".metrics.jsonl") and "escape" not in o for o in options), options
    roots = [str(tmp_path), str(REPO / "runs")]
    assert all(os.path.isabs(o) and o.startswith(tuple(roots)) or o.startswith("runs/") for o in options), options


def _module_pickle() -> bytes:
    buffer = io.BytesIO()
    torch.save(create_model("resnet8", in_chans=1), buffer)  # the whole nn.Module, pickled
    return buffer.getvalue()


def _state_dict() -> bytes:
    buffer = io.BytesIO()
    torch.save({"epoch": 90, "state_dict": create_model("resnet8", in_chans=1).state_dict()}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("random.pt", np.random.default_rng(1).bytes(8192), "not a PyTorch file"),
        (
            "module.pt",
            _module_pickle(),
            "contains pickled Python code (routescope.models.resnet.ResNet), which RouteScope never runs",
        ),
        ("code.pt", pickle.dumps(os.system), "never unpickles code"),
        (
            "model_best.pth.tar",
            _state_dict(),
            "not a RouteScope checkpoint (a plain state_dict or another tool's file?)",
        ),
    ],
)
def test_checkpoint_refusals_are_the_projects_sentences(models_dir, name, data, words):  # noqa: F811
    at = start()
    at.sidebar.radio(key="model-source").set_value("Upload a checkpoint").run()
    at.sidebar.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    (message,) = [e.value for e in at.sidebar.error]  # in the sidebar, under the uploader
    assert message.startswith(f"{name}: ") and words in message, message
    assert "\x1b" not in message and "weights_only" not in message and "PyTorch 2." not in message, message
    assert "\n" not in message and len(message) < 400, message
    assert not at.main.error, "the refusal sits next to its control only"
    assert not at.sidebar.file_uploader[0].proto.type, "no type filter: the browser would refuse a .pth.tar unseen"


def test_a_published_skipnet_upload_is_recognised_converted_and_inspected(models_dir):  # noqa: F811
    """The SkipNet authors' file (legacy format): the sidebar says what it is, converts it on request, says what it
    did, and Inspect runs the converted model (a CIFAR model on the bundled images, converted to 32x32 RGB)."""
    buffer = io.BytesIO()
    torch.save(authors_file("cifar10_rnn_gate_38"), buffer, _use_new_zipfile_serialization=False)
    at = start()
    at.sidebar.radio(key="model-source").set_value("Upload a checkpoint").run()
    at.sidebar.file_uploader[0].set_value(("resnet-38-rnn-sp-cifar10.pth.tar", buffer.getvalue(), "")).run()
    assert not at.exception and not at.sidebar.error, (at.exception, at.sidebar.error)
    (info,) = [i.value for i in at.sidebar.info]
    assert "SkipNet authors' CIFAR-10/100 recurrent-gate ResNet" in info and "no code in it runs" in info
    at.sidebar.toggle(key="model-convert").set_value(True).run()
    assert not at.exception and not at.sidebar.error, (at.exception, at.sidebar.error)
    (done,) = [s.value for s in at.sidebar.success]
    assert "as `skipnet-cifar`" in done and "python -m models.convert resnet-38-rnn-sp-cifar10.pth.tar" in done
    assert any("skipnet_resnet38_cifar10_sp_ucbdrive" in c.value for c in at.caption)


def test_a_huge_image_is_refused_next_to_the_uploader_with_what_to_do(models_dir):  # noqa: F811
    """The browser takes up to ``server.maxUploadSize`` (beyond it only a red icon); the app refuses above the image
    limits of ``analysis.core.images`` with a sentence under the uploader."""
    from routescope.analysis.core.images import MAX_BYTES

    limit_mb = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    assert limit_mb >= 192, "a 192 MB photo must reach the app, which then says why it is refused"
    at = start()
    uploader = at.file_uploader(key="inspect-upload")
    assert not uploader.proto.type, "no type filter: a refused type would have no visible reason"
    big = encode(shoe_on_white()) + bytes(MAX_BYTES)  # a PNG with trailing bytes: over the limit by size alone
    uploader.set_value([("big.png", big, "image/png"), ("shoe.png", encode(shoe_on_white()), "image/png")]).run()
    assert not at.exception, at.exception
    (message,) = [e.value for e in at.error]
    assert message.startswith("big.png: ") and "MB limit for images; upload a smaller copy" in message, message
    column = next(c for c in at.columns if c.get("file_uploader"))
    assert [e.value for e in column.error] == [message], "under the uploader"
    assert len([m for m in at.metric if m.label == "Prediction"]) == 2, "the sample and the good upload still run"


def test_app_loads_on_the_device_of_routescope_device(models_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ROUTESCOPE_DEVICE", "cpu")
    at = start()
    assert [m.label for m in at.metric] == ["Prediction", "MACs executed"]
    from routescope.app.resources import load_bundled

    assert next(load_bundled("tiny").parameters()).device.type == "cpu"


def test_a_bad_routescope_device_is_a_message(models_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ROUTESCOPE_DEVICE", "nonsense")
    at = start()
    assert not at.exception and not at.metric
    (message,) = [e.value for e in at.error]
    assert "ROUTESCOPE_DEVICE='nonsense'" in message and "set it to cpu" in message, message
    for name in ("compare", "structure"):
        go(at, name)
        assert [e.value for e in at.error] == [message], name


def test_latency_is_timed_against_the_dense_network_in_one_run(two_models, monkeypatch):
    """One ``paired_latency`` call per shown run (original, intervened), each giving the model's and the dense
    network's latency measured alternately; the cards show both."""
    from routescope import app
    import routescope.app.resources  # noqa: F401

    calls = []
    real = app.resources.paired_latency

    def spy(model, dense, x, overrides=None, knobs=None, **kwargs):
        calls.append((overrides, knobs))
        assert dense is not model
        return real(model, dense, x, overrides, knobs, rounds=2, warmup=1)

    monkeypatch.setattr(app.resources, "paired_latency", spy)
    at = start()
    at.sidebar.selectbox(key="model-name").set_value("tiny_skipnet").run()
    at.toggle(key="img0-intervene").set_value(True).run()
    assert not at.exception, at.exception
    cards = {m.label: m for m in at.metric if m.label.startswith("Latency")}
    assert set(cards) == {"Latency (original)", "Latency (intervened)"}
    assert all("the dense" in m.delta for m in cards.values()), [m.delta for m in cards.values()]
    assert calls == [({}, {})], "original and (unforced) intervened run are the same cached measurement"
