"""Hostile inputs and many sessions: checkpoint limits before allocation, image byte limits, bounded and
thread-safe app caches, and CLI errors that are one line only when the project raised them on purpose."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from routescope.analysis.core.images import MAX_BYTES, ImageError, load_model_input
from routescope.models import train
from routescope.models.checkpoint import MAX_PARAMS, CheckpointError, check_usable, load_checkpoint, read_checkpoint
from routescope.models.evaluate import main as evaluate_main

from helpers import PRETRAINED, REPO, every_bundled_checkpoint

ARGS = [
    "--model",
    "resnet8",
    "--dataset",
    "fashion-mnist",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--limit-batches",
    "2",
    "--no-progress",
]


def _write(tmp_path: Path, edit, source: str = "resnet20_fmnist.pt") -> Path:
    payload = torch.load(PRETRAINED / source, weights_only=True)
    edit(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


# --- 1. checkpoints --------------------------------------------------------------------------------------


def test_huge_widths_fail_fast_naming_the_limit(tmp_path):
    path = _write(tmp_path, lambda p: p["config"].update(widths=[4096, 4096, 4096]))
    with pytest.raises(CheckpointError, match=r"widths=.*at most 2048"):
        load_checkpoint(path)
    path = _write(tmp_path, lambda p: p["config"].update(widths=[2048, 2048, 2048]))  # within the width bound
    with pytest.raises(CheckpointError, match=f"over the limit of {MAX_PARAMS:,}"):
        load_checkpoint(path)


def test_activation_memory_limit(tmp_path):
    path = _write(tmp_path, lambda p: p["meta"].update(input_size=[1, 1024, 1024]))
    with pytest.raises(CheckpointError, match="GiB of activations, over the limit"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "config,match",
    [
        ({"depth": 20}, "unknown config key"),
        ({"widths": "16,32,64"}, "widths"),
        ({"widths": [16, 32]}, "list of 3"),
        ({"widths": [16, 0, 64]}, "out of range"),
        ({"num_classes": "10"}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_chans": 1.0}, "in_chans"),
    ],
)
def test_config_keys_and_types(tmp_path, config, match):
    path = _write(tmp_path, lambda p: p["config"].update(config))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_tensors_checked_against_the_meta_build(tmp_path):
    def wrong(p):
        p["state_dict"]["stem.0.weight"] = p["state_dict"]["stem.0.weight"].double()
        p["state_dict"]["fc.weight"] = torch.zeros(3, 3)
        del p["state_dict"]["fc.bias"]
        p["state_dict"]["extra"] = torch.zeros(1)

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_write(tmp_path, wrong))
    message = str(info.value)
    assert "missing fc.bias" in message and "unexpected extra" in message and "fc.weight has shape (3, 3)" in message
    assert "stem.0.weight is float64, want float32" in message and "\n" not in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_weights_are_refused(tmp_path, value):
    def poison(p):
        p["state_dict"]["layer2.0.conv1.weight"][0, 0, 0, 0] = value

    with pytest.raises(CheckpointError, match="weights contain NaN/inf"):
        load_checkpoint(_write(tmp_path, poison))


def test_file_size_limit(tmp_path):
    with pytest.raises(CheckpointError, match="over the checkpoint size limit"):
        read_checkpoint(PRETRAINED / "resnet20_fmnist.pt", max_bytes=1000)
    assert read_checkpoint(PRETRAINED / "resnet20_fmnist.pt", max_bytes=None)["arch"] == "resnet20"


@pytest.mark.parametrize(
    "meta,match",
    [
        ({"input_size": None}, "input_size"),
        ({"std": [0.0]}, "std"),
        ({"mean": [0.1, 0.2]}, "mean"),
        ({"classes": "abc"}, "classes"),
    ],
)
def test_usable_check_refuses_broken_meta(tmp_path, meta, match):
    with pytest.raises(CheckpointError, match=match):
        check_usable(load_checkpoint(_write(tmp_path, lambda p: p["meta"].update(meta))))


def test_usable_check_refuses_nonfinite_logits(tmp_path):
    def scale(p):
        p["state_dict"]["fc.bias"] = torch.full_like(p["state_dict"]["fc.bias"], 3e38) * torch.tensor(
            [1.0] + [-1.0] * 9
        )
        p["state_dict"]["fc.weight"] = p["state_dict"]["fc.weight"] * 1e38

    with pytest.raises(CheckpointError, match="NaN/inf logits"):
        check_usable(load_checkpoint(_write(tmp_path, scale)))


@pytest.mark.parametrize("name", every_bundled_checkpoint())
def test_bundled_checkpoints_pass_every_check(name, loaded_checkpoint):
    check_usable(loaded_checkpoint(PRETRAINED / f"{name}.pt"))  # load_checkpoint's checks, then check_usable's


def test_image_byte_limit_and_empty_file(tmp_path):
    meta = {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353]}
    with pytest.raises(ImageError, match="image size limit"):
        load_model_input(b"\x89PNG" + bytes(MAX_BYTES), meta, "big.png")
    with pytest.raises(ImageError, match="empty file"):
        load_model_input(b"", meta, "empty.png")
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(ImageError, match="image size limit"):
        load_model_input(big, meta)


def test_streamlit_upload_limit_is_configured():
    """The server takes files up to its limit, so that an oversized image or checkpoint reaches the app's own checks
    (a sentence under the uploader) instead of the browser's silent refusal; the app's limits stay far below it."""
    import tomllib

    from routescope.analysis.core import images
    from routescope.app.resources import UPLOAD_MAX_BYTES

    limit_mb = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    assert limit_mb >= 192 and UPLOAD_MAX_BYTES < limit_mb * 2**20 and images.MAX_BYTES < limit_mb * 2**20


# --- 2. sessions -------------------------------------------------------------------------------------------


def test_every_app_cache_is_bounded():
    tree = ast.parse((REPO / "app" / "resources.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                name = ast.unparse(dec.func if isinstance(dec, ast.Call) else dec)
                if name in ("st.cache_resource", "st.cache_data"):
                    assert isinstance(dec, ast.Call) and any(k.arg == "max_entries" for k in dec.keywords), node.name


def test_figure_context_is_safe_to_share(monkeypatch):
    from routescope.analysis.core import figures

    calls = []

    def slow_table(model, images):
        calls.append(1)
        time.sleep(0.3)
        return pd.DataFrame({"x": [1.0]})

    monkeypatch.setattr(figures, "stored_table", slow_table)
    model = torch.nn.Identity()
    model.meta = {}
    monkeypatch.setattr(figures, "load_checkpoint", lambda path, **kwargs: model)
    monkeypatch.setattr(figures, "open_test_set", lambda test_set, meta: "images")
    context = figures.FigureContext({"m": Path("m.pt")}, dataset="fashion-mnist-subset")
    got = []
    threads = [threading.Thread(target=lambda: got.append(context.table("m"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(t) for t in got}) == 4
    got[0]["x"] = 5.0
    assert context.table("m")["x"].tolist() == [1.0]


# --- 5. command-line errors --------------------------------------------------------------------------------


def test_a_bad_option_value_is_one_line(fmnist_dir, tmp_path, capsys):
    assert train.main([*ARGS, "--data-dir", str(fmnist_dir), "--out", str(tmp_path), "--holdout", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --holdout must be between") and err.count("\n") == 1
    assert (
        train.main([*ARGS, "--data-dir", str(fmnist_dir), "--out", str(tmp_path), "--model-args", '{"widths": "x"}'])
        == 2
    )
    assert "error: --model-args: config widths" in capsys.readouterr().err
    assert train.main([*ARGS, "--data-dir", str(fmnist_dir), "--out", str(tmp_path), "--model-args", "{nope"]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_a_bug_inside_training_keeps_its_traceback(fmnist_dir, tmp_path, monkeypatch):
    def broken_fit(self):
        raise ValueError("a bug, not a usage error")

    monkeypatch.setattr(train.Trainer, "fit", broken_fit)
    with pytest.raises(ValueError, match="a bug"):
        train.main([*ARGS, "--data-dir", str(fmnist_dir), "--out", str(tmp_path)])
    monkeypatch.setattr(train.Trainer, "fit", lambda self: {}["missing key"])
    with pytest.raises(KeyError):
        train.main([*ARGS, "--data-dir", str(fmnist_dir), "--out", str(tmp_path)])


def test_evaluate_errors(tmp_path, capsys, monkeypatch):
    assert evaluate_main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    from routescope.models import evaluate

    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        evaluate_main(["--checkpoint", str(PRETRAINED / "resnet20_fmnist.pt"), "--dataset", "fashion-mnist-subset"])
