"""Shared fixtures: a tiny Fashion-MNIST-format data folder made from the bundled real subset, and bundled
checkpoints loaded once per session."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn

from models.checkpoint import load_checkpoint
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


@pytest.fixture(scope="session")
def loaded_checkpoint() -> Callable[[Path], nn.Module]:
    """``load(path)``: ``load_checkpoint(path)`` (its defaults: the fast form), loaded once per session and path, so the
    tests that go over every bundled checkpoint (golden traces, the usable check) load each one once. The model is
    shared: a test that changes it (weights, hooks, attributes) must load its own with ``load_checkpoint``."""
    cache: dict[Path, nn.Module] = {}

    def load(path: Path) -> nn.Module:
        key = Path(path).resolve()
        if key not in cache:
            cache[key] = load_checkpoint(key)
        return cache[key]

    return load


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """Tests never read $ROUTESCOPE_DATA, $ROUTESCOPE_MODELS or $ROUTESCOPE_DEVICE from the developer's shell, and the app's
    one-thread setting (app/streamlit_app.py, run in-process by AppTest) does not leak into later tests."""
    monkeypatch.delenv("ROUTESCOPE_DATA", raising=False)
    monkeypatch.delenv("ROUTESCOPE_MODELS", raising=False)
    monkeypatch.delenv("ROUTESCOPE_DEVICE", raising=False)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
