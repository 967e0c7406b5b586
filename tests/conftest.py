"""Shared fixtures: a tiny Fashion-MNIST-format data folder made from the bundled real subset, bundled checkpoints
loaded once per session, and a models folder with one tiny checkpoint for the app. Plain helpers are in helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn

from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, save_checkpoint
from routescope.models.data import BUNDLED_SUBSET

from helpers import TINY_META


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    """A --data-dir whose train and test splits are both the bundled 500-image subset."""
    folder = tmp_path_factory.mktemp("fmnist")
    for kind in ("images-idx3", "labels-idx1"):
        src = BUNDLED_SUBSET / f"t10k-{kind}-ubyte.gz"
        shutil.copy(src, folder / f"t10k-{kind}-ubyte.gz")
        shutil.copy(src, folder / f"train-{kind}-ubyte.gz")
    return folder


@pytest.fixture(scope="session")
def loaded_checkpoint() -> Callable[..., nn.Module]:
    """``load(path, form="fast")``: ``load_checkpoint(path, form=form)``, loaded once per session, path and form, so the
    tests that go over every bundled checkpoint (golden traces, the usable check, both forms compared) load each one
    once. The model is shared: a test that changes it (weights, hooks, attributes, its mode, ``fast_form`` of a
    training form) must load its own with ``load_checkpoint``."""
    cache: dict[tuple[Path, str], nn.Module] = {}

    def load(path: Path, form: str = "fast") -> nn.Module:
        key = (Path(path).resolve(), form)
        if key not in cache:
            cache[key] = load_checkpoint(key[0], form=form)
        return cache[key]

    return load


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """$ROUTESCOPE_MODELS: a folder with one tiny random resnet8 checkpoint, ``tiny.pt`` (meta ``TINY_META``), and the
    app's caches cleared."""
    import streamlit as st

    save_checkpoint(tmp_path / "tiny.pt", create_model("resnet8", in_chans=1), TINY_META)
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    return tmp_path


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Tests never read $ROUTESCOPE_DATA, $ROUTESCOPE_MODELS or $ROUTESCOPE_DEVICE from the developer's shell, and the
    app's one-thread setting (app/streamlit_app.py, run in-process by AppTest) does not leak into later tests."""
    monkeypatch.delenv("ROUTESCOPE_DATA", raising=False)
    monkeypatch.delenv("ROUTESCOPE_MODELS", raising=False)
    monkeypatch.delenv("ROUTESCOPE_DEVICE", raising=False)
    monkeypatch.setenv("ROUTESCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # stored tables: per run
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
