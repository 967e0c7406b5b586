"""Cached, shared resources of the app: models are loaded once per file and never mutated per request."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from analysis.core.catalog import bundled_checkpoints, featured_names
from analysis.core.table import dataset_table, load_test_images
from analysis.core.images import ModelInput, load_model_input
from analysis.core.latency import Latency, dense_counterpart, paired_latency
from analysis.core.perturb import perturbation_sweep, perturbed, pixels_tensor
from analysis.core.trace import trace_batch
from analysis.core.tradeoff import static_points
from analysis.core.sweeps import knob_sweep
from models.checkpoint import CheckpointError, check_usable, load_checkpoint
from models.data import find_fashion_mnist
from models.devices import ENV as DEVICE_ENV, default_device
from models.errors import UsageError

UPLOAD_MAX_BYTES = (
    25 * 2**20
)  # refused with a message (server.maxUploadSize is wider); the bundled checkpoints are < 5 MB


def app_device() -> str:
    """The device models are loaded on (``$ROUTESCOPE_DEVICE``, else cuda when available, else cpu); a
    ``UsageError`` that names the variable when it holds no usable device."""
    try:
        return str(default_device())
    except UsageError as e:
        raise UsageError(f"{DEVICE_ENV}={os.environ.get(DEVICE_ENV)!r} is not usable here: {e}") from None


@st.cache_resource(show_spinner="Loading model…", max_entries=64)
def _load(path: str, mtime: float, device: str) -> torch.nn.Module:
    model = load_checkpoint(path, map_location=device)
    model.cache_key = f"{path}@{mtime}@{device}"
    return model


def load_bundled(name: str) -> torch.nn.Module:
    path = bundled_checkpoints()[name]
    return _load(str(path), path.stat().st_mtime, app_device())


@st.cache_resource(show_spinner="Loading uploaded checkpoint…", max_entries=8)
def load_uploaded(data: bytes, device: str = "cpu") -> torch.nn.Module:
    """An uploaded checkpoint loaded on ``device``, keyed by its content and the device; ``CheckpointError``
    (without the temporary path) if it is not a usable RouteScope checkpoint."""
    if len(data) > UPLOAD_MAX_BYTES:
        raise CheckpointError(
            f"{len(data) / 2**20:.1f} MB is over the {UPLOAD_MAX_BYTES // 2**20} MB limit for uploaded "
            "checkpoints (RouteScope's own are under 5 MB); to open a larger one, put it in the models "
            "folder of an app you run yourself (ROUTESCOPE_MODELS)"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload-{digest}.pt"
        path.write_bytes(data)
        try:
            model = check_usable(load_checkpoint(path, map_location=device, max_bytes=UPLOAD_MAX_BYTES))
        except CheckpointError as e:
            raise CheckpointError(str(e).replace(f"{path}: ", "")) from None
        except Exception as e:  # whatever an untrusted file breaks must become a message, not a crash
            raise CheckpointError(
                f"cannot be used as a model ({type(e).__name__}); check it with "
                "python -m analysis.inspect --checkpoint FILE"
            ) from None
    model.cache_key = f"upload:{digest}@{device}"
    return model


CHOSEN = "chosen-model"  # the model choice, kept in a session key that is no widget's (see ``choose_model``)


def _chosen() -> dict:
    """``{"source", "name", "all", "upload": (file name, file id, bytes)}`` of this session: what the model picker
    shows on every page. Streamlit drops a widget's state on a run that does not draw it (another page, an upload
    branch not shown), so the widgets are seeded from here and write back here."""
    return st.session_state.setdefault(CHOSEN, {})


def _seed(widget_key: str, field: str, allowed=None) -> None:
    """Before the widget is drawn: give it the kept value (if it is still one of ``allowed``)."""
    kept = _chosen()
    if field in kept and (allowed is None or kept[field] in allowed):
        st.session_state[widget_key] = kept[field]


def _keep(widget_key: str, field: str) -> None:
    """Widget callback: the user's choice becomes the kept one."""
    _chosen()[field] = st.session_state[widget_key]


def _keep_show_all(widget_key: str, featured: list[str]) -> None:
    _keep(widget_key, "all")
    if not st.session_state[widget_key] and _chosen().get("name") not in featured:
        _chosen().pop("name", None)  # hiding the sweeps: back to the default model, not a hidden one


def _keep_upload(widget_key: str) -> None:
    if st.session_state.get(widget_key) is None:  # the user removed the file: forget it on every page
        _chosen().pop("upload", None)


def pick_bundled(bundled: dict, key: str) -> str:
    """The bundled-model select: the featured models first (each method's flagship and its controls, the flagship
    SkipNet by default), the sweeps and ablations behind a toggle, still loadable."""
    featured = [name for name in featured_names() if name in bundled]
    others = [name for name in bundled if name not in featured]
    kept = _chosen()
    if featured and others:
        if kept.get("name") in others:  # e.g. from a shared link: keep it visible
            kept["all"] = True
        _seed(f"{key}-all", "all")
        show_all = st.sidebar.toggle(
            f"Also the {len(others)} sweeps and ablations",
            key=f"{key}-all",
            on_change=_keep_show_all,
            args=(f"{key}-all", featured),
        )
        names = featured + others if show_all else featured
    else:
        names = featured or others
    _seed(f"{key}-name", "name", names)
    name = st.sidebar.selectbox(
        "Bundled model",
        names,
        key=f"{key}-name",
        on_change=_keep,
        args=(f"{key}-name", "name"),
        format_func=lambda n: f"★ {n}" if n in featured else n,
    )
    kept["name"] = name  # the default too: another page must not fall back to another one
    return name


def chosen_bundled_name() -> str | None:
    """The bundled model this session shows (None: an uploaded checkpoint)."""
    kept = _chosen()
    return kept.get("name") if kept.get("source", "Bundled") == "Bundled" else None


def upload_message(file_name: str, error: Exception) -> str:
    """One sentence for a refused checkpoint upload; a published ``.pth.tar`` gets why it cannot be used yet."""
    text = str(error)
    if file_name.lower().endswith((".pth.tar", ".tar", ".ckpt")) and "RouteScope checkpoint" in text:
        return (
            f"{file_name}: not a RouteScope checkpoint, and converters for published checkpoint layouts "
            f"(.pth.tar) are not available yet; upload a .pt file written by python -m models.train."
        )
    return f"{file_name}: {text}"


def choose_model(key: str = "model") -> torch.nn.Module | None:
    """Sidebar: a bundled model or an uploaded checkpoint; shows a message and returns None on failure.

    The choice follows the user across pages (``_chosen``) and is in the page's URL (``?model=NAME``). The
    returned model carries ``cache_key`` (path, mtime and device, or the upload's digest) for dataset tables.
    """
    try:
        device = app_device()
    except UsageError as e:
        st.error(f"No model can be loaded: {e}. Unset {DEVICE_ENV} or set it to cpu, then restart the app.")
        return None
    bundled = bundled_checkpoints()
    kept = _chosen()
    if "url-read" not in kept:  # a shared view (?model=NAME) selects its model once per session
        kept["url-read"] = True
        wanted = st.query_params.get("model")
        if wanted is not None and wanted in bundled:
            kept["source"], kept["name"] = "Bundled", wanted
        elif wanted is not None:
            st.warning(f"The link names model `{wanted}`, which is not bundled here; showing another model.")
    _seed(f"{key}-source", "source")
    source = st.sidebar.radio(
        "Model",
        ["Bundled", "Upload a checkpoint"],
        key=f"{key}-source",
        horizontal=True,
        on_change=_keep,
        args=(f"{key}-source", "source"),
    )
    kept["source"] = source
    if source == "Bundled":
        if not bundled:
            st.sidebar.error("No bundled checkpoints in models/pretrained.")
            return None
        name = pick_bundled(bundled, key)
        st.query_params["model"] = name  # every page's URL names its model
        return load_bundled(name)
    st.query_params.pop("model", None)
    upload_key = f"{key}-upload"
    # no ``type`` filter: the browser would refuse a .pth.tar (or any other name) without a visible reason
    upload = st.sidebar.file_uploader(
        "RouteScope checkpoint (.pt, .pth or .pth.tar)",
        key=upload_key,
        on_change=_keep_upload,
        args=(upload_key,),
        help=f"A file written by `python -m models.train`, up to {UPLOAD_MAX_BYTES // 2**20} MB",
    )
    if upload is not None and kept.get("upload", (None, None))[1] != upload.file_id:
        kept["upload"] = (upload.name, upload.file_id, upload.getvalue())
    if kept.get("upload") is None:
        st.sidebar.info("Upload a checkpoint written by `python -m models.train`.")
        return None
    file_name, _, data = kept["upload"]
    if upload is None:
        st.sidebar.caption(f"Showing `{file_name}`, uploaded earlier; upload another file to replace it.")
    try:
        model = load_uploaded(data, device)
    except CheckpointError as e:
        st.sidebar.error(upload_message(file_name, e))
        return None
    return model


def show_model(model: torch.nn.Module) -> None:
    """The caption that names the page's model (exactly as the picker does), and where it came from."""
    meta = model.meta
    upload = _chosen().get("upload") if _chosen().get("source") == "Upload a checkpoint" else None
    accuracy = meta.get("metrics", {}).get("test_acc")
    origin = f" (uploaded file `{upload[0]}`)" if upload else ""
    st.caption(
        f"Model: **{meta['name']}**{origin} · method `{meta['method']}` · trained on {meta['dataset']}"
        + (f" · test accuracy {accuracy * 100:.2f}%" if isinstance(accuracy, (int, float)) else "")
    )


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
        return attributions.explain_prediction(
            copy.deepcopy(_model) if method == "gradcam" else _model, x, index, method
        )
    _, layer, value = target
    return attributions.explain_decision(_model, x, layer, value)


@st.cache_resource(max_entries=1)
def _table_store() -> dict:
    """Dataset tables shared by all sessions, keyed by (model, data set); bounded by ``_bounded_store``."""
    return {}


_locks_lock = threading.Lock()
_key_locks: dict = {}


def _key_lock(key) -> threading.Lock:
    """One lock per store key: sessions that ask for the same table at once wait for one computation."""
    with _locks_lock:
        if len(_key_locks) > 1024:  # forget the locks nobody holds
            for k in [k for k, lock in _key_locks.items() if not lock.locked()]:
                del _key_locks[k]
        return _key_locks.setdefault(key, threading.Lock())


def test_sets() -> list[str]:
    """The bundled subset always; the full Fashion-MNIST test set when its files are on this machine."""
    return ["fashion-mnist-subset"] + (["fashion-mnist"] if find_fashion_mnist("test") else [])


@st.cache_resource(show_spinner="Loading test images…", max_entries=4)
def test_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_test_images(dataset)


def cached_table(model: torch.nn.Module, dataset: str) -> pd.DataFrame:
    """Trace a whole test set once (with a progress bar), then reuse it across reruns and sessions; each caller
    gets its own copy (a page may add columns)."""

    def make() -> pd.DataFrame:
        images, labels = test_images(dataset)
        bar = st.progress(0.0, text=f"Tracing {len(images):,} test images…")
        out = dataset_table(
            model, images, labels, progress=lambda f: bar.progress(f, text=f"Tracing test images… {f:.0%}")
        )
        bar.empty()
        return out

    return _bounded_store(_table_store(), ("table", model.cache_key, dataset), make, limit=64)


@st.cache_data(show_spinner=False, max_entries=256)
def intervened_image(
    _model: torch.nn.Module, model_key: str, name: str, data: bytes, overrides: str, knobs: str
) -> dict:
    """One image's trace with decisions forced and knobs moved (JSON strings, so the cache can hash them); a bad
    intervention raises ``ValueError`` (not cached). Reruns of the page reuse it."""
    model_input = load_model_input(data, _model.meta, name)
    return trace_batch(
        _model, model_input.tensor, [name], structure=False, overrides=json.loads(overrides), knobs=json.loads(knobs)
    )[0]


@st.cache_resource(show_spinner="Building the dense counterpart…", max_entries=8)
def dense_model(_model: torch.nn.Module, model_key: str) -> torch.nn.Module:
    """``model.dense_counterpart()`` once per model (a copy: the shared model is not touched)."""
    return dense_counterpart(_model)


@st.cache_data(show_spinner="Timing batch-1 latency against the dense network…", max_entries=128)
def latency(
    _model: torch.nn.Module, model_key: str, name: str, data: bytes, overrides: str, knobs: str
) -> tuple[Latency, Latency]:
    """Batch-1 latency of one image through the model (with its overrides and knobs, JSON strings) and through its
    dense counterpart, timed alternately in one run (``analysis.core.latency.paired_latency``, the timing path of
    ``tools.bench``), once per (model, image, overrides, knobs)."""
    x = load_model_input(data, _model.meta, name).tensor
    return paired_latency(_model, dense_model(_model, model_key), x, json.loads(overrides), json.loads(knobs))


@st.cache_data(show_spinner="Perturbing and tracing…", max_entries=64)
def perturbation(
    _model: torch.nn.Module, model_key: str, pixels: np.ndarray, name: str, strengths: tuple[float, ...]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The perturbation sweep of one image's uint8 picture and the perturbed pictures (N x H x W[x3])."""
    x = pixels_tensor(pixels)
    batch = perturbed(x, name, strengths)
    return perturbation_sweep(_model, x, name, strengths), batch.permute(0, 2, 3, 1).squeeze(-1).numpy()


def _bounded_store(store: dict, key, make, limit: int = 32):
    """A copy of ``store[key]``, made once even when several sessions ask at once (a lock per key); the oldest
    entries go past ``limit`` (a shared dict that must not grow forever). No session gets the object another
    session holds."""
    with _key_lock((id(store), key)):
        value = store.get(key)
        if value is None:
            value = make()
            with _locks_lock:
                while len(store) >= limit:
                    store.pop(next(iter(store)))
                store[key] = value
    return value.copy() if hasattr(value, "copy") else copy.deepcopy(value)


@st.cache_resource(max_entries=1)
def _sweep_store() -> dict:
    """Knob sweeps and static points shared by all sessions, keyed by (model, data set, what)."""
    return {}


def cached_sweep(model: torch.nn.Module, dataset: str, knob: str, values: tuple[float, ...]) -> pd.DataFrame:
    """``knob_sweep`` over a test set, with a progress bar the first time, reused per (model, data set, values)."""

    def make() -> pd.DataFrame:
        images, labels = test_images(dataset)
        bar = st.progress(0.0, text=f"Sweeping {knob} over {len(values)} values on {len(images):,} images…")
        out = knob_sweep(
            model, knob, values, images, labels, progress=lambda f: bar.progress(f, text=f"Sweeping {knob}… {f:.0%}")
        )
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
