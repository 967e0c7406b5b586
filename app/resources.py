"""Cached, shared resources of the app: models are loaded once per file and never mutated per request."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import streamlit as st
import torch

from analysis.catalog import bundled_checkpoints
from models.checkpoint import CheckpointError, load_checkpoint


@st.cache_resource(show_spinner="Loading model…")
def _load(path: str, mtime: float) -> torch.nn.Module:
    return load_checkpoint(path)


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
        return load_checkpoint(path)


def choose_model(key: str = "model") -> torch.nn.Module | None:
    """Sidebar: a bundled model or an uploaded checkpoint; shows a message and returns None on failure."""
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
