"""Shared fixtures: a tiny Fashion-MNIST-format data folder made from the bundled real subset."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from models.data import BUNDLED_SUBSET

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    """A --data-dir whose train and test splits are both the bundled 500-image subset."""
    folder = tmp_path_factory.mktemp("fmnist")
    for kind in ("images-idx3", "labels-idx1"):
        src = BUNDLED_SUBSET / f"t10k-{kind}-ubyte.gz"
        shutil.copy(src, folder / f"t10k-{kind}-ubyte.gz")
        shutil.copy(src, folder / f"train-{kind}-ubyte.gz")
    return folder


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """Tests never read $ROUTESCOPE_DATA or $ROUTESCOPE_MODELS from the developer's shell, and the app's
    one-thread setting (app/streamlit_app.py, run in-process by AppTest) does not leak into later tests."""
    monkeypatch.delenv("ROUTESCOPE_DATA", raising=False)
    monkeypatch.delenv("ROUTESCOPE_MODELS", raising=False)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
