"""Cached, shared resources of the app: models are loaded once per file and never mutated per request."""
from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from analysis.core.catalog import bundled_checkpoints
from analysis.core.table import dataset_table, load_test_images
from analysis.core.images import ModelInput, load_model_input
from analysis.core.latency import Latency, dense_counterpart, image_latency
from analysis.core.perturb import perturbation_sweep, perturbed, pixels_tensor
from analysis.core.trace import trace_batch
from analysis.core.tradeoff import static_points
from analysis.sweep import knob_sweep
from models.checkpoint import META_KEYS, CheckpointError, load_checkpoint
from models.data import find_fashion_mnist
from models.trace import traced_forward


@st.cache_resource(show_spinner="Loading model…")
def _load(path: str, mtime: float) -> torch.nn.Module:
    model = load_checkpoint(path)
    model.cache_key = f"{path}@{mtime}"
    return model


def load_bundled(name: str) -> torch.nn.Module:
    path = bundled_checkpoints()[name]
    return _load(str(path), path.stat().st_mtime)


def _check_usable(model: torch.nn.Module) -> torch.nn.Module:
    """An uploaded file is untrusted: the meta the pages read must be there and one traced forward pass must
    give one logit per class, or every image would fail later, deep inside a page."""
    missing = [k for k in META_KEYS if k not in model.meta]
    if missing:
        raise CheckpointError(f"its meta lacks {', '.join(missing)}")
    logits, _ = traced_forward(model, torch.zeros(1, *model.meta["input_size"]))
    if logits.shape != (1, len(model.meta["classes"])):
        raise CheckpointError(f"it gives {tuple(logits.shape)} logits for {len(model.meta['classes'])} classes")
    return model


@st.cache_resource(show_spinner="Loading uploaded checkpoint…", max_entries=8)
def load_uploaded(data: bytes) -> torch.nn.Module:
    """An uploaded checkpoint, keyed by its content; ``CheckpointError`` (without the temporary path) if it
    is not a usable RouteScope checkpoint."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload-{digest}.pt"
        path.write_bytes(data)
        try:
            model = _check_usable(load_checkpoint(path))
        except CheckpointError as e:
            raise CheckpointError(str(e).replace(f"{path}: ", "")) from None
        except Exception as e:  # whatever an untrusted file breaks must become a message, not a crash
            raise CheckpointError(f"cannot be used ({type(e).__name__}: {str(e)[:200]})") from None
    model.cache_key = f"upload:{digest}"
    return model


def choose_model(key: str = "model") -> torch.nn.Module | None:
    """Sidebar: a bundled model or an uploaded checkpoint; shows a message and returns None on failure.

    The returned model carries ``cache_key`` (path and mtime, or the upload's digest) for dataset tables.
    """
    bundled = bundled_checkpoints()
    if f"{key}-url-read" not in st.session_state:  # a shared view (?model=NAME) selects its model once per session
        st.session_state[f"{key}-url-read"] = True
        wanted = st.query_params.get("model")
        if wanted is not None and wanted in bundled:
            st.session_state[f"{key}-source"], st.session_state[f"{key}-name"] = "Bundled", wanted
        elif wanted is not None:
            st.warning(f"The link names model `{wanted}`, which is not bundled here; showing another model.")
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
        st.sidebar.error(f"{upload.name}: {e}")
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def traced_image(_model: torch.nn.Module, model_key: str, name: str, data: bytes) -> tuple[ModelInput, dict]:
    """Decode and trace one image once per (model, image bytes): reruns (a widget touched, another image
    added) reuse it, and the cached copy is the caller's own. ``ImageError`` is not cached (it is cheap)."""
    model_input = load_model_input(data, _model.meta, name)
    return model_input, trace_batch(_model, model_input.tensor, [name], structure=False)[0]


@st.cache_data(show_spinner="Computing the attribution…", max_entries=128)
def attribution(_model: torch.nn.Module, model_key: str, image: np.ndarray, target: tuple):
    """A captum attribution of one normalized image (1xCxHxW), once per (model, image, target): Integrated
    Gradients runs 32 forward and backward passes, and every widget touched reruns the page.

    ``target`` is ``("prediction", class index, "integrated_gradients" | "gradcam")`` or ``("decision", layer,
    AttributionTarget)``. GradCAM hooks the model's last layer while it works, so it runs on a copy of the model
    that every session shares. captum is imported here, on first use, not when every page starts.
    """
    from analysis.core import attributions

    x = torch.from_numpy(image)
    if target[0] == "prediction":
        _, index, method = target
        return attributions.explain_prediction(copy.deepcopy(_model) if method == "gradcam" else _model, x, index, method)
    _, layer, value = target
    return attributions.explain_decision(_model, x, layer, value)


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


def _json(value: dict | None) -> str:
    return json.dumps(value or {}, sort_keys=True)


@st.cache_data(show_spinner=False, max_entries=256)
def intervened_image(_model: torch.nn.Module, model_key: str, name: str, data: bytes, overrides: str, knobs: str) -> dict:
    """One image's trace with decisions forced and knobs moved (JSON strings, so the cache can hash them); a bad
    intervention raises ``ValueError`` (not cached). Reruns of the page reuse it."""
    model_input = load_model_input(data, _model.meta, name)
    return trace_batch(_model, model_input.tensor, [name], structure=False, overrides=json.loads(overrides),
                       knobs=json.loads(knobs))[0]


@st.cache_resource(show_spinner="Building the dense counterpart…", max_entries=8)
def dense_model(_model: torch.nn.Module, model_key: str) -> torch.nn.Module:
    """``model.dense_counterpart()`` once per model (a copy: the shared model is not touched)."""
    return dense_counterpart(_model)


@st.cache_data(show_spinner="Timing batch-1 latency…", max_entries=128)
def latency(_model: torch.nn.Module, model_key: str, name: str, data: bytes, overrides: str, knobs: str,
            dense: bool = False) -> Latency:
    """Batch-1 latency of one image (median of 15 runs after 3 warm-ups), once per (model, image, overrides,
    knobs); ``dense``: through the model's dense counterpart instead."""
    x = load_model_input(data, _model.meta, name).tensor
    if dense:
        return image_latency(dense_model(_model, model_key), x)
    return image_latency(_model, x, json.loads(overrides), json.loads(knobs))


@st.cache_data(show_spinner="Perturbing and tracing…", max_entries=64)
def perturbation(_model: torch.nn.Module, model_key: str, pixels: np.ndarray, name: str,
                 strengths: tuple[float, ...]) -> tuple[pd.DataFrame, np.ndarray]:
    """The perturbation sweep of one image's uint8 picture and the perturbed pictures (N x H x W[x3])."""
    x = pixels_tensor(pixels)
    batch = perturbed(x, name, strengths)
    return perturbation_sweep(_model, x, name, strengths), batch.permute(0, 2, 3, 1).squeeze(-1).numpy()


def _bounded_store(store: dict, key, make, limit: int = 32):
    """``store[key]``, made once; the oldest entries go past ``limit`` (a shared dict that must not grow forever)."""
    if key not in store:
        value = make()
        while len(store) >= limit:
            store.pop(next(iter(store)))
        store[key] = value
    return store[key]


@st.cache_resource
def _sweep_store() -> dict:
    """Knob sweeps and static points shared by all sessions, keyed by (model, data set, what)."""
    return {}


def cached_sweep(model: torch.nn.Module, dataset: str, knob: str, values: tuple[float, ...]) -> pd.DataFrame:
    """``knob_sweep`` over a test set, with a progress bar the first time, reused per (model, data set, values)."""
    def make() -> pd.DataFrame:
        images, labels = test_images(dataset)
        bar = st.progress(0.0, text=f"Sweeping {knob} over {len(values)} values on {len(images):,} images…")
        out = knob_sweep(model, knob, values, images, labels, progress=lambda f: bar.progress(f, text=f"Sweeping {knob}… {f:.0%}"))
        bar.empty()
        return out

    return _bounded_store(_sweep_store(), (model.cache_key, dataset, knob, values), make)


def cached_static_points(model: torch.nn.Module, dataset: str) -> pd.DataFrame:
    """The model's static variants (``evaluation_variants()``) on a test set, once per (model, data set)."""
    def make() -> pd.DataFrame:
        images, labels = test_images(dataset)
        bar = st.progress(0.0, text="Evaluating the static variants…")
        out = static_points(model, images, labels, progress=lambda f: bar.progress(f, text=f"Static variants… {f:.0%}"))
        bar.empty()
        return out

    return _bounded_store(_sweep_store(), (model.cache_key, dataset, "static"), make)
