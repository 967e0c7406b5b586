"""Cached, shared resources of the app: models are loaded once per file and never mutated per request."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from analysis.catalog import bundled_checkpoints
from analysis.dataset_table import dataset_table, load_test_images
from models.data import find_fashion_mnist
from models.checkpoint import CheckpointError, load_checkpoint


@st.cache_resource(show_spinner="Loading model…")
def _load(path: str, mtime: float) -> torch.nn.Module:
    model = load_checkpoint(path)
    model.cache_key = f"{path}@{mtime}"
    return model


def load_bundled(name: str) -> torch.nn.Module:
    path = bundled_checkpoints()[name]
    return _load(str(path), path.stat().st_mtime)


@st.cache_resource(show_spinner="Loading uploaded checkpoint…", max_entries=8)
def load_uploaded(data: bytes) -> torch.nn.Module:
    """An uploaded checkpoint, keyed by its content; ``CheckpointError`` if it is not a RouteScope one."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload-{digest}.pt"
        path.write_bytes(data)
        model = load_checkpoint(path)
    model.cache_key = f"upload:{digest}"
    return model


def choose_model(key: str = "model") -> torch.nn.Module | None:
    """Sidebar: a bundled model or an uploaded checkpoint; shows a message and returns None on failure.

    The returned model carries ``cache_key`` (path and mtime, or the upload's digest) for dataset tables.
    """
    bundled = bundled_checkpoints()
    source = st.sidebar.radio("Model", ["Bundled", "Upload a checkpoint"], key=f"{key}-source", horizontal=True)
    if source == "Bundled":
        if not bundled:
            st.sidebar.error("No bundled checkpoints in models/pretrained.")
            return None
        name = st.sidebar.selectbox("Bundled model", list(bundled), key=f"{key}-name")
        return load_bundled(name)
    upload = st.sidebar.file_uploader("RouteScope checkpoint (.pt)", type=["pt", "pth"], key=f"{key}-upload")
    if upload is None:
        st.sidebar.info("Upload a checkpoint written by `python -m models.train`.")
        return None
    try:
        return load_uploaded(upload.getvalue())
    except CheckpointError as e:
        st.sidebar.error(str(e).replace(str(Path(tempfile.gettempdir())), "…"))
        return None


@st.cache_resource
def _table_store() -> dict:
    """Dataset tables shared by all sessions, keyed by (model, data set)."""
    return {}


def test_sets() -> list[str]:
    """The bundled subset always; the full Fashion-MNIST test set when its files are on this machine."""
    return ["fashion-mnist-subset"] + (["fashion-mnist"] if find_fashion_mnist("test") else [])


@st.cache_resource(show_spinner="Loading test images…")
def test_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_test_images(dataset)


def cached_table(model: torch.nn.Module, dataset: str) -> pd.DataFrame:
    """Trace a whole test set once (with a progress bar), then reuse it across reruns and sessions."""
    store = _table_store()
    key = (model.cache_key, dataset)
    if key not in store:
        images, labels = test_images(dataset)
        bar = st.progress(0.0, text=f"Tracing {len(images):,} test images…")
        store[key] = dataset_table(model, images, labels, progress=lambda f: bar.progress(f, text=f"Tracing test images… {f:.0%}"))
        bar.empty()
    return store[key]
