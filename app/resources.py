"""Cached, shared resources of the app: models are loaded once per file and never mutated per request."""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from routescope.analysis.core.archive import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    ArchiveError,
    ArchiveImages,
    ArchiveTestSet,
    archive_fingerprint,
    archive_test_set,
    read_image_archive,
)
from routescope.analysis.core.catalog import bundled_checkpoints, featured_names, model_labels
from routescope.analysis.core.familiarity import Reference, colourfulness, reference
from routescope.analysis.core.images import ImageError, ModelInput, load_model_input, open_image
from routescope.analysis.core.latency import Latency, dense_counterpart, paired_latency
from routescope.analysis.core.perturb import perturbation_sweep, perturbed, pixels_tensor
from routescope.analysis.core.trace import trace_batch
from routescope.analysis.core.tradeoff import static_points
from routescope.analysis.core.sweeps import adaptive_sweep, seconds_per_value
from routescope.analysis.core.table import as_table
from routescope.analysis.core.table_store import Progress, model_fingerprint, stored_table
from routescope.analysis.core.testsets import BUNDLED, UNLABELLED, ModelImages, TestSet, label_map, open_test_set
from routescope.app.formatting import show_table
from routescope.models.checkpoint import CheckpointError, check_usable, inference_form, load_checkpoint
from routescope.models.convert import convert_source, detect_layout, layouts, read_source
from routescope.models.inference import fast_form
from routescope.models.loading import PLUGIN_PREFIX, load_model
from routescope.models.plugin_registry import installed_plugins
from routescope.models.data import (
    CIFAR10,
    DATASET_TITLES,
    FASHION_MNIST,
    SVHN,
    SYSTEM_FASHION_MNIST,
    DataNotFoundError,
    ImageFolderImages,
    find_fashion_mnist,
)
from routescope.models.devices import ENV as DEVICE_ENV, default_device
from routescope.models.errors import UsageError

DATA_ENV = "ROUTESCOPE_DATA"
UPLOAD_MAX_BYTES = (
    25 * 2**20
)  # refused with a message (server.maxUploadSize is wider); the bundled checkpoints are < 5 MB
PUBLISHED_MAX_BYTES = 128 * 2**20  # a published checkpoint to convert (timm's 8-expert CondConv B0: 96 MB)


def app_device() -> str:
    """The device models are loaded on (``$ROUTESCOPE_DEVICE``, else cuda when available, else cpu); a
    ``UsageError`` that names the variable when it holds no usable device."""
    try:
        return str(default_device())
    except UsageError as e:
        raise UsageError(f"{DEVICE_ENV}={os.environ.get(DEVICE_ENV)!r} is not usable here: {e}") from None


@st.cache_resource(show_spinner="Loading model…", max_entries=64)
def _load(path: str, mtime: float | str, device: str) -> torch.nn.Module:
    """A bundled checkpoint (``path``, its ``mtime``) or an installed plug-in (``plugin:NAME``, its version)."""
    model = load_model(path, map_location=device)
    model.cache_key = f"{path}@{mtime}@{device}"
    model_fingerprint(model)  # what keys its stored tables, kept on the model: computed here, as it is loaded
    return model


def load_bundled(name: str) -> torch.nn.Module:
    path = bundled_checkpoints()[name]
    return _load(str(path), path.stat().st_mtime, app_device())


PLUGIN_GROUP = "plug-in: "  # the model source of an installed plug-in package: "plug-in: GROUP"


def plugin_groups() -> dict[str, list[str]]:
    """``{"plug-in: GROUP": [model names]}`` of the installed plug-ins (entry points ``routescope.models``): code the
    server's user installed, never anything uploaded. A plug-in that fails to import is a sidebar warning."""
    groups: dict[str, list[str]] = {}
    for name, declared in installed_plugins(on_error=lambda e: st.sidebar.warning(f"Not listed: {e}")).items():
        groups.setdefault(PLUGIN_GROUP + declared.group, []).append(name)
    return groups


def load_plugin_model(name: str) -> torch.nn.Module:
    """An installed plug-in model, through the same cache as the bundled checkpoints (keyed by its version)."""
    return _load(PLUGIN_PREFIX + name, installed_plugins()[name].version, app_device())


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
    model_fingerprint(model)
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


@st.cache_data(ttl=60, show_spinner=False, max_entries=4)
def bundled_labels(folder: str) -> dict[str, str]:
    """``catalog.model_labels`` of the models folder (read from its manifest), looked at again after a minute."""
    return model_labels(Path(folder))


def labels_of(bundled: dict) -> dict[str, str]:
    """The picker's readable label of each bundled model (the name where none can be made)."""
    folders = {str(path.parent) for path in bundled.values()}
    labels = bundled_labels(folders.pop()) if len(folders) == 1 else {}
    return {name: labels.get(name, name) for name in bundled}


def pick_bundled(bundled: dict, key: str) -> str:
    """The bundled-model select: the featured models first (each method's flagship, starred, then its controls; the
    flagship SkipNet by default), the sweeps and ablations behind a toggle, still loadable. Each is listed by what it
    is (method, role, accuracy, share of the dense MACs: ``catalog.model_label``); its exact name is in the help."""
    featured = [name for name in featured_names() if name in bundled]
    others = [name for name in bundled if name not in featured]
    labels = labels_of(bundled)
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
    current = st.session_state.get(f"{key}-name", names[0])
    name = st.sidebar.selectbox(
        "Bundled model",
        names,
        key=f"{key}-name",
        on_change=_keep,
        args=(f"{key}-name", "name"),
        format_func=lambda n: labels.get(n, n),
        help=f"Checkpoint `{current if current in names else names[0]}` (models/pretrained). Starred: each method's "
        "flagship; its controls follow it. Then: test accuracy, and the mean MACs per image as a share of the dense "
        "network's.",
    )
    kept["name"] = name  # the default too: another page must not fall back to another one
    return name


def chosen_bundled_name() -> str | None:
    """The bundled or plug-in model this session shows, as ``?model=`` names it (None: an uploaded checkpoint)."""
    kept = _chosen()
    source = kept.get("source", "Bundled")
    return kept.get("name") if source == "Bundled" else kept.get("plugin") if source.startswith(PLUGIN_GROUP) else None


def pick_plugin(names: list[str], key: str) -> str:
    """The select of one plug-in group's models."""
    _seed(f"{key}-plugin", "plugin", names)
    name = st.sidebar.selectbox(
        "Plug-in model", names, key=f"{key}-plugin", on_change=_keep, args=(f"{key}-plugin", "plugin")
    )
    _chosen()["plugin"] = name
    return name


def upload_message(file_name: str, error: Exception) -> str:
    """One sentence for a refused checkpoint upload."""
    return f"{file_name}: {error}"


@st.cache_resource(show_spinner="Looking at the file's tensors…", max_entries=8)
def upload_layout(data: bytes) -> str | None:
    """The published layout (``models.convert``) an uploaded file that is no RouteScope checkpoint is in, recognised
    from its tensor names and shapes (read without running code), or None."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            state, _ = read_source(path, max_bytes=PUBLISHED_MAX_BYTES)
        except UsageError:
            return None
    layout = detect_layout(state)
    return None if layout is None else layout.name


@st.cache_resource(show_spinner="Converting the published checkpoint…", max_entries=4)
def load_converted(data: bytes, file_name: str, layout: str, device: str = "cpu") -> torch.nn.Module:
    """An uploaded published checkpoint converted (``models.convert``), in the fast inference form on ``device``;
    its meta records the provenance (file name, SHA-256, layout, converter version)."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(file_name).name
        path.write_bytes(data)
        try:
            model, _ = convert_source(path, layout)
            model = check_usable(fast_form(inference_form(model.to(device).eval())))
        except CheckpointError as e:
            raise CheckpointError(str(e).replace(f"{path}: ", "")) from None
    model.cache_key = f"converted:{digest}@{device}"
    model_fingerprint(model)
    return model


def _converted_upload(file_name: str, data: bytes, device: str, key: str) -> torch.nn.Module | None:
    """A published checkpoint in the sidebar: what it is, a toggle to convert it, and what the conversion did."""
    layout = upload_layout(data)
    summary = layouts()[layout].summary
    st.sidebar.info(
        f"`{file_name}` is not a RouteScope checkpoint: it is a {summary} file. RouteScope can convert it into a "
        "model that executes its decisions for real (its tensors are read; no code in it runs)."
    )
    if not st.sidebar.toggle("Convert it", key=f"{key}-convert"):
        return None
    try:
        model = load_converted(data, file_name, layout, device)
    except CheckpointError as e:
        st.sidebar.error(f"{file_name}: {e}")
        return None
    provenance = model.meta["provenance"]
    st.sidebar.success(
        f"Converted `{provenance['source']}` (SHA-256 {provenance['sha256'][:12]}…) as `{layout}` "
        f"(converter version {provenance['converter_version']}) into `{model.meta['name']}`: "
        f"{model.arch}, {len(model.meta['classes']):,} classes, input {'x'.join(map(str, model.meta['input_size']))}. "
        f"The same on the command line: `python -m models.convert {file_name} --from {layout} --out model.pt`."
    )
    return model


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
    plugins = plugin_groups()
    kept = _chosen()
    if "url-read" not in kept:  # a shared view (?model=NAME) selects its model once per session
        kept["url-read"] = True
        wanted = st.query_params.get("model")
        group = next((g for g, names in plugins.items() if wanted in names), None)
        if wanted is not None and wanted in bundled:
            kept["source"], kept["name"] = "Bundled", wanted
        elif group is not None:
            kept["source"], kept["plugin"] = group, wanted
        elif wanted is not None:
            st.warning(f"The link names model `{wanted}`, which is not bundled here; showing another model.")
    _seed(f"{key}-source", "source", ["Bundled", *plugins, "Upload a checkpoint"])
    source = st.sidebar.radio(
        "Model",
        ["Bundled", *plugins, "Upload a checkpoint"],
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
    if source in plugins:
        name = pick_plugin(plugins[source], key)
        st.query_params["model"] = name
        return load_plugin_model(name)
    st.query_params.pop("model", None)
    upload_key = f"{key}-upload"
    # no ``type`` filter: the browser would refuse a .pth.tar (or any other name) without a visible reason
    upload = st.sidebar.file_uploader(
        "Checkpoint (.pt, .pth, .pth.tar, .safetensors)",
        key=upload_key,
        on_change=_keep_upload,
        args=(upload_key,),
        help=f"A file written by `python -m models.train` (up to {UPLOAD_MAX_BYTES // 2**20} MB), or a published "
        f"checkpoint RouteScope converts: the SkipNet authors', timm's CondConv EfficientNets (up to "
        f"{PUBLISHED_MAX_BYTES // 2**20} MB)",
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
        if upload_layout(data) is None:
            st.sidebar.error(upload_message(file_name, e))
            return None
        return _converted_upload(file_name, data, device, key)
    return model


def choose_bundled(name: str) -> None:
    """Button callback: make the bundled model ``name`` this session's choice (the picker shows it on the rerun)."""
    _chosen().update(source="Bundled", name=name)


def show_model(model: torch.nn.Module) -> None:
    """The caption that names the page's model (its exact checkpoint name and the picker's label), and where it came
    from."""
    meta = model.meta
    upload = _chosen().get("upload") if _chosen().get("source") == "Upload a checkpoint" else None
    accuracy = meta.get("metrics", {}).get("test_acc")
    group = getattr(model, "group", None)  # a plug-in's entry point
    origin = f" (uploaded file `{upload[0]}`)" if upload else f" (plug-in `{group}`)" if group else ""
    bundled = bundled_checkpoints() if not upload and not group else {}
    label = labels_of(bundled).get(meta["name"]) if meta["name"] in bundled else None
    st.caption(
        f"Model: **{meta['name']}**{origin}"
        + (f" ({label})" if label and label != meta["name"] else "")
        + f" · method `{meta['method']}` · trained on {meta['dataset']}"
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
    from routescope.analysis.core import attributions

    x = torch.from_numpy(image)
    if target[0] == "prediction":
        _, index, method = target
        return attributions.explain_prediction(
            copy.deepcopy(_model) if method == "gradcam" else _model, x, index, method
        )
    _, layer, value = target
    return attributions.explain_decision(_model, x, layer, value)


# --- test sets: the server's, or an uploaded zip ------------------------------------------------------------------

TESTSET = "chosen-testset"  # the test-set choice, kept like the model's (a session key that is no widget's)
UPLOAD_OPTION = "upload"  # the picker's option for an uploaded zip
KNOWN_LAYOUTS = {"cifar-10-batches-py", "cifar-100-python", "svhn", "fashion-mnist", "FashionMNIST"}
ZIP_HELP = (
    "An ImageFolder tree (a folder per class, named after the model's classes: its images are labelled) or a flat "
    f"folder of images (unlabelled: routing and cost, no accuracy). Up to {DEFAULT_LIMITS.max_files:,} files and "
    f"{DEFAULT_LIMITS.max_total_bytes // 2**20} MB unpacked, each image up to {DEFAULT_LIMITS.max_file_bytes // 2**20} "
    f"MB and {DEFAULT_LIMITS.max_megapixels:g} megapixels; other files are skipped and listed."
)


def data_roots() -> list[Path]:
    """The server's data folders: ``$ROUTESCOPE_DATA`` (one folder, or several separated by ``os.pathsep``) and the
    system Fashion-MNIST. Only test sets found under them are offered: the app never opens a typed path."""
    roots = [Path(p) for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p.strip()]
    return [*roots, SYSTEM_FASHION_MNIST]


def _has_image(folder: Path, limit: int = 200) -> bool:
    """Whether one of the first ``limit`` entries of ``folder`` is an image file (a quick look, not a walk)."""
    try:
        with os.scandir(folder) as entries:
            for i, entry in enumerate(entries):
                if i >= limit:
                    break
                if entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith("."):
                    return True
    except OSError:
        return False
    return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _cifar100_classes(folder: Path) -> tuple[str, ...]:
    with open(folder / "cifar-100-python" / "meta", "rb") as f:  # a file of the server's own data folder
        return tuple(n.decode() for n in pickle.load(f, encoding="bytes")[b"fine_label_names"])


def _sets_in(folder: Path, root: Path) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """The test sets whose files are in ``folder`` as the readers of ``models.data`` expect them: (name, data_dir,
    class names; None: unlabelled). Only names and sizes are looked at, no image is read."""
    found: list[tuple[str, str, tuple[str, ...] | None]] = []
    fashion = find_fashion_mnist("test", folder)  # it also looks in the system path: keep what is under root
    if fashion and fashion[0].resolve().is_relative_to(root.resolve()):
        found.append(("fashion-mnist", str(fashion[0].parent), FASHION_MNIST.classes))
    if all((folder / "cifar-10-batches-py" / f).is_file() for f in ("test_batch", "batches.meta")):
        found.append(("cifar10", str(folder), CIFAR10.classes))
    if all((folder / "cifar-100-python" / f).is_file() for f in ("test", "meta")):
        try:
            found.append(("cifar100", str(folder), _cifar100_classes(folder)))
        except Exception:  # a damaged meta file: not offered
            pass
    if (folder / "svhn" / "test_32x32.mat").is_file():
        found.append(("svhn", str(folder), SVHN.classes))
    return found


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _discover(roots: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """Every test set under the data roots (each root and each folder in it): the layouts ``models.data`` reads,
    a folder of class folders of images (``imagefolder``, its ``val/`` split where it has one) and a folder of
    images (``folder``). Looked at again after a minute, so data added to a running server shows up."""
    found, seen = [], set()
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        candidates = _sets_in(root, root)
        for sub in _subfolders(root):
            if sub.name in KNOWN_LAYOUTS:
                continue
            candidates += _sets_in(sub, root)
            tree = sub / "val" if (sub / "val").is_dir() else sub  # where ``models.data.image_root`` looks
            if tree.name != "val" and (tree / "test").is_dir():
                tree = tree / "test"
            classes = _subfolders(tree)
            if classes and any(_has_image(c) for c in classes[:50]):
                candidates.append(("imagefolder", str(sub), tuple(c.name for c in classes)))
            elif _has_image(sub):
                candidates.append(("folder", str(sub), None))
        for name, data_dir, classes in candidates:
            if (name, Path(data_dir).resolve()) not in seen:
                seen.add((name, Path(data_dir).resolve()))
                found.append((name, data_dir, classes))
    return found


def _fits(classes: tuple[str, ...] | None, meta: dict) -> bool:
    """A labelled set fits a model when one of its classes is one of the model's; an unlabelled one always does."""
    return classes is None or any(label != UNLABELLED for label in label_map(classes, meta["classes"]))


def server_test_sets(meta: dict) -> dict[str, TestSet]:
    """The test sets this server offers a model (``meta``), by the key a link names (``?testset=KEY``): the bundled
    subset first (always: other models get it converted, unlabelled), then every set found under ``data_roots()``
    that fits the model (``_fits``)."""
    offered = {BUNDLED: TestSet(BUNDLED)}
    for name, data_dir, classes in _discover(tuple(map(str, data_roots()))):
        if _fits(classes, meta):
            key = f"{name}:{Path(data_dir).name}"
            while key in offered:  # two roots with a folder of the same name
                key += "+"
            offered[key] = TestSet(name, data_dir)
    return offered


def default_key(meta: dict, offered: dict[str, TestSet]) -> str:
    """``testsets.default_test_set`` among the server's sets: the model's own data set where it is found, else the
    bundled subset (also the default of the Fashion-MNIST models: 500 images, quick)."""
    own = meta.get("dataset")
    if own not in (BUNDLED, "fashion-mnist"):
        for key, test_set in offered.items():
            if test_set.name == own:
                return key
    return BUNDLED


def set_label(test_set: TestSet) -> str:
    """How the picker and captions name a server test set (its folder's name, never its full path)."""
    if test_set.name == BUNDLED:
        return "Bundled Fashion-MNIST subset (500 images)"
    folder = Path(test_set.data_dir or ".").name
    if test_set.name == "imagefolder":
        return f"{folder}/ (a folder per class)"
    if test_set.name == "folder":
        return f"{folder}/ (images, unlabelled)"
    return f"{DATASET_TITLES.get(test_set.name, test_set.name)} test set ({folder}/)"


@dataclass(frozen=True)
class SetChoice:
    """The session's test images: a server test set (``test_set``) or an uploaded zip (``upload``: its file name,
    ``digest``: the SHA-256 of its bytes, which the session keeps)."""

    key: str
    label: str
    test_set: TestSet | None = None
    upload: str | None = None
    digest: str | None = None

    @property
    def slug(self) -> str:
        """For file names: the key without what a file name should not hold."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in (self.upload or self.key))


def _kept_test_set() -> dict:
    """``{"key", "upload": (file name, file id, bytes, digest), "url-read"}`` of this session (see ``_chosen``)."""
    return st.session_state.setdefault(TESTSET, {})


def _keep_test_set(widget_key: str) -> None:
    _kept_test_set()["key"] = st.session_state[widget_key]


def _keep_zip(widget_key: str) -> None:
    if st.session_state.get(widget_key) is None:  # the user removed the file: forget it on every page
        _kept_test_set().pop("upload", None)


def _meta_key(meta: dict) -> str:
    """What decides how a test set's images reach a model: two models that agree on it share the opened set."""
    fields = ("input_size", "classes", "crop_pct", "dark_background")
    return json.dumps({k: meta.get(k) for k in fields}, sort_keys=True, default=str)


@st.cache_resource(show_spinner="Opening the test images…", max_entries=8)
def _open_server_set(name: str, data_dir: str | None, meta_key: str, _meta: dict) -> ModelImages:
    return open_test_set(TestSet(name, data_dir), _meta)


@st.cache_resource(show_spinner="Checking the uploaded zip…", max_entries=8)
def _read_archive(digest: str, classes: tuple[str, ...], _data: bytes) -> ArchiveTestSet | str:
    """The uploaded zip read for a model's classes, once per (content, classes); a refusal is its sentence."""
    try:
        return read_image_archive(_data, list(classes))
    except ArchiveError as e:
        return str(e)


@st.cache_resource(max_entries=8)
def _archive_images(digest: str, meta_key: str, _archive: ArchiveTestSet, _meta: dict) -> ModelImages:
    return archive_test_set(_archive, _meta, digest)


def _upload_images(meta: dict, choice: SetChoice) -> ModelImages | str:
    """The uploaded zip as the model described by ``meta`` takes it, or why it cannot be used (one sentence)."""
    upload = _kept_test_set().get("upload")
    if upload is None or upload[3] != choice.digest:
        return "the uploaded zip is no longer in this session; upload it again"
    archive = _read_archive(choice.digest, tuple(meta["classes"]), upload[2])
    if isinstance(archive, str):
        return archive
    return _archive_images(choice.digest, _meta_key(meta), archive, meta)


def images_for(model: torch.nn.Module, choice: SetChoice) -> ModelImages | None:
    """The chosen test images as ``model`` takes them (its size, channels and classes); None where that model
    cannot use them (a zip whose folders are none of its classes, a set no longer on the server)."""
    return images_for_meta(model.meta, choice)


def images_for_meta(meta: dict, choice: SetChoice) -> ModelImages | None:
    """``images_for`` by the model's meta (what decides how images reach it)."""
    if choice.test_set is not None:
        try:
            return _open_server_set(choice.test_set.name, choice.test_set.data_dir, _meta_key(meta), meta)
        except (DataNotFoundError, UsageError, OSError):
            return None
    images = _upload_images(meta, choice)
    return None if isinstance(images, str) else images


def _server_choice(key: str, test_set: TestSet) -> SetChoice:
    return SetChoice(key, set_label(test_set), test_set=test_set)


def chosen_test_set(model: torch.nn.Module) -> tuple[SetChoice, ModelImages] | None:
    """This session's test images for ``model`` without drawing a picker (Inspect's samples): the kept choice where
    it fits the model, else the model's default; None when no images can be opened."""
    offered = server_test_sets(model.meta)
    _read_link(offered)
    kept = _kept_test_set()
    upload = kept.get("upload")
    if kept.get("key") == UPLOAD_OPTION and upload is not None:
        choice = SetChoice(UPLOAD_OPTION, upload[0], upload=upload[0], digest=upload[3])
    else:
        key = kept.get("key") if kept.get("key") in offered else default_key(model.meta, offered)
        choice = _server_choice(key, offered[key])
    images = images_for(model, choice)
    return None if images is None else (choice, images)


def _read_link(offered: dict[str, TestSet]) -> None:
    """A shared view (``?testset=KEY``) chooses its server test set once per session."""
    kept = _kept_test_set()
    if "url-read" in kept:
        return
    kept["url-read"] = True
    wanted = st.query_params.get("testset")
    if wanted is not None and wanted in offered:
        kept["key"] = wanted
    elif wanted is not None:
        st.warning(f"The link names test set `{wanted}`, which this server does not offer this model; showing another.")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' * (n != 1)}"


def _archive_report(file_name: str, archive: ArchiveTestSet, model: torch.nn.Module) -> None:
    """What the zip gave: images and labels in one caption, a warning for folders that are no class of the model,
    and the skipped files and unmatched folders listed in an expander."""
    labelled = sum(label is not None for _, label in archive.items)
    text = f"`{file_name}`: {_plural(len(archive), 'image')}"
    if archive.layout == "imagefolder":
        text += f" in {_plural(len(archive.classes_found), 'folder')}, {labelled:,} labelled by their folder"
    else:
        text += " without class folders"
    if archive.skipped:
        text += f" · {_plural(len(archive.skipped), 'file')} skipped"
    st.caption(text + ".")
    unmatched = archive.unmatched_folders
    if unmatched:
        names = ", ".join(f"`{f}`" for f in unmatched)
        one = len(unmatched) == 1
        st.warning(
            f"The folder{'' if one else 's'} {names} {'is not' if one else 'are not'} named after a class of "
            f"`{model.meta['name']}`: {'its' if one else 'their'} images are kept, unlabelled."
        )
    if archive.skipped or unmatched:
        rows = [(name, f"skipped: {why}") for name, why in archive.skipped]
        rows += [(f"{folder}/", "kept, unlabelled: not one of the model's classes") for folder in unmatched]
        title = ", ".join(
            part
            for part in (
                _plural(len(archive.skipped), "skipped file") if archive.skipped else "",
                _plural(len(unmatched), "unlabelled folder") if unmatched else "",
            )
            if part
        )
        with st.expander(title[0].upper() + title[1:]):
            st.dataframe(
                pd.DataFrame(rows, columns=["in the zip", "what happened"]),
                hide_index=True,
                height=min(320, 40 + 35 * len(rows)),
            )


def choose_test_set(model: torch.nn.Module, key: str = "testset") -> tuple[SetChoice, ModelImages] | None:
    """The test-set picker: a server test set (``server_test_sets``) or a zip of images. Shared by the pages through
    the session (and ``?testset=KEY`` for a server set). Returns the choice and its images as ``model`` takes them,
    or None after a message (no zip yet, a refused zip): the page then stops, the app keeps serving."""
    offered = server_test_sets(model.meta)
    _read_link(offered)
    kept = _kept_test_set()
    default = default_key(model.meta, offered)
    default = default if default in offered else next(iter(offered))
    options = [*offered, UPLOAD_OPTION]
    widget = f"{key}-set"
    st.session_state[widget] = kept["key"] if kept.get("key") in options else default
    left, right = st.columns([2, 3])
    picked = left.selectbox(
        "Test images",
        options,
        key=widget,
        on_change=_keep_test_set,
        args=(widget,),
        format_func=lambda k: "Upload a .zip of images" if k == UPLOAD_OPTION else set_label(offered[k]),
        help="The test sets found in the server's data folders ($ROUTESCOPE_DATA) that have images of this model's "
        "classes, the bundled 500-image Fashion-MNIST subset, or a zip of your own images.",
    )
    if picked != UPLOAD_OPTION:
        if picked == default:
            st.query_params.pop("testset", None)
        else:
            st.query_params["testset"] = picked  # a link opens the same server test set
        choice = _server_choice(picked, offered[picked])
        images = images_for(model, choice)
        if images is None:
            st.error(f"{choice.label} could not be opened on this server; pick another test set.")
            return None
        return choice, images

    st.query_params.pop("testset", None)
    widget_zip = f"{key}-zip"
    upload = right.file_uploader(
        "A .zip of test images", key=widget_zip, on_change=_keep_zip, args=(widget_zip,), help=ZIP_HELP
    )
    if upload is not None and kept.get("upload", (None, None))[1] != upload.file_id:
        data = upload.getvalue()
        kept["upload"] = (upload.name, upload.file_id, data, archive_fingerprint(data))
    if kept.get("upload") is None:
        st.info(
            "Upload a .zip of an ImageFolder tree (a folder per class, named after the model's classes) or of a "
            "folder of images (unlabelled: routing and cost, no accuracy)."
        )
        return None
    file_name, _, data, digest = kept["upload"]
    if upload is None:
        right.caption(f"Showing `{file_name}`, uploaded earlier; upload another zip to replace it.")
    archive = _read_archive(digest, tuple(model.meta["classes"]), data)
    if isinstance(archive, str):
        st.error(f"{file_name}: {archive}")
        return None
    _archive_report(file_name, archive, model)
    choice = SetChoice(UPLOAD_OPTION, file_name, upload=file_name, digest=digest)
    return choice, _archive_images(digest, _meta_key(model.meta), archive, model.meta)


def picture(images: ModelImages, index: int) -> np.ndarray:
    """One test image as the model takes it ((H, W) or (H, W, 3) uint8), decoded on demand: a gallery reads only
    the images it shows."""
    return images[int(index)][0].permute(1, 2, 0).squeeze(-1).numpy()


@st.cache_data(show_spinner=False, max_entries=512)
def _picture_png(_images: ModelImages, fingerprint: str, meta_key: str, index: int) -> bytes:
    """One test image, as the model takes it, as PNG bytes (decoded when first asked for)."""
    buffer = io.BytesIO()
    Image.fromarray(picture(_images, index)).save(buffer, "PNG")
    return buffer.getvalue()


REFERENCE_IMAGES = 500  # test images the familiarity reference is measured on (evenly spread)


@st.cache_resource(show_spinner="Measuring the test images once…", max_entries=8)
def test_set_reference(_images: ModelImages, fingerprint: str, meta_key: str) -> Reference:
    """``familiarity.reference`` of (up to ``REFERENCE_IMAGES`` of) a test set as the model takes it: computed once
    per (test set, model input), on the first uploaded image that needs it, and shared by every session."""
    n = len(_images)
    indices = np.unique(np.linspace(0, n - 1, min(n, REFERENCE_IMAGES)).astype(int)) if n else []
    dataset = _images.meta.get("dataset")
    return reference(
        (picture(_images, int(i)) for i in indices),
        DATASET_TITLES.get(dataset, dataset or "the test set"),
        coloured=int(_images.meta["input_size"][0]) == 3,
    )


def reference_for(images: ModelImages) -> Reference | None:
    """The familiarity reference of the chosen test images (None when they cannot be read)."""
    try:
        return test_set_reference(images, images.fingerprint, _meta_key(images.meta))
    except (ValueError, OSError):
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def original_picture(data: bytes, most: int = 320) -> tuple[np.ndarray, tuple[int, int], float] | None:
    """An uploaded picture as the user sees it: a copy at most ``most`` pixels wide (RGB), its size and its
    colourfulness; None when it cannot be decoded (``image_report`` says why)."""
    try:
        img = open_image(data)
    except ImageError:
        return None
    size = img.size
    colour = colourfulness(img)
    small = img.convert("RGB")
    small.thumbnail((most, most))
    return np.asarray(small), size, colour


def image_names(images: ModelImages) -> list[str] | None:
    """Each image's file, for the tables of an uploaded zip (its member names) or of a folder on the server (paths
    under it); None for the data sets stored as arrays."""
    data = images.data
    if isinstance(data, ArchiveImages):
        return [name for name, _ in data.archive.items]
    if isinstance(data, ImageFolderImages):
        paths = [path for path, _ in data.samples]
        common = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
        return [str(path.relative_to(common)) for path in paths]
    return None


def sample_pictures(
    choice: SetChoice, images: ModelImages, per_class: int = 2, most: int = 40, unlabelled: int = 8
) -> dict:
    """A few images of each class of the chosen test set (the first ``unlabelled`` when it has no labels), as
    ``{name: () -> PNG bytes}``: only the images picked are decoded."""
    labels = [images.label_of(int(label)) for label in getattr(images.data, "labels", [])]
    picked: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        if label != UNLABELLED and len(picked.setdefault(label, [])) < per_class:
            picked[label].append(i)
    indices = sorted(i for group in picked.values() for i in group)[:most]
    if not indices:
        indices = list(range(min(len(images), unlabelled)))
    return dict(test_image(choice, images, i) for i in indices)


def test_image(choice: SetChoice, images: ModelImages, index: int) -> tuple[str, Callable[[], bytes]]:
    """Image ``index`` of the chosen test set as an Inspect sample: its name (``SET #INDEX (CLASS)``) and a reader
    of its PNG bytes (decoded when read)."""
    labels = getattr(images.data, "labels", None)
    label = images.label_of(int(labels[index])) if labels is not None and index < len(labels) else UNLABELLED
    name = f"{choice.upload or choice.key} #{index}" + (
        f" ({images.meta['classes'][label]})" if label != UNLABELLED else ""
    )
    return name, functools.partial(_picture_png, images, images.fingerprint, _meta_key(images.meta), index)


def test_image_index(name: str) -> int | None:
    """The index in a ``test_image`` name (None for a bundled sample or an upload)."""
    match = re.search(r" #(\d+)(?: \(.*\))?$", name)
    return int(match.group(1)) if match else None


def open_linked_image(choice: SetChoice, images: ModelImages, extra: dict, key: str = "inspect") -> None:
    """``?index=N`` (a link from a Compare gallery): image N of the chosen test set joins the samples and becomes
    Inspect's picked image, once per link; an index the test set does not have is a message."""
    wanted = st.query_params.get("index")
    if wanted is None:
        return
    if not wanted.isdigit() or int(wanted) >= len(images):
        st.warning(f"The link names image #{wanted}; {choice.label} has images #0 to #{len(images) - 1}.")
        return
    name, reader = test_image(choice, images, int(wanted))
    extra[name] = reader
    if st.session_state.get(f"{key}-linked") != (choice.key, wanted):  # a new link: it picks the image
        st.session_state[f"{key}-linked"] = (choice.key, wanted)
        st.session_state[f"{key}-samples"], st.session_state[f"{key}-samples-restored"] = [name], True
        st.session_state[f"{key}-mode"] = "Images"


# --- tables, sweeps and static points of a test set, computed once ------------------------------------------------


@st.cache_resource(max_entries=1)
def _table_store() -> dict:
    """Dataset tables shared by all sessions, keyed by (model, test set); bounded by ``_bounded_store``. Under
    it, the Parquet store of ``table_store`` keeps them across restarts."""
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


FIRST_ROWS = 20  # rows shown under the progress bar while a table is traced


def tracing_text(progress: Progress) -> str:
    """``Tracing N images… x% (about S s left)``: the progress bar's words."""
    eta = progress.eta_s
    left = "" if eta is None else f" (about {eta:,.0f} s left)" if eta < 120 else f" (about {eta / 60:,.0f} min left)"
    return f"Tracing {progress.total:,} images… {progress.done / max(progress.total, 1):.0%}{left}"


def cached_table(model: torch.nn.Module, images: ModelImages) -> pd.DataFrame:
    """The per-image table of ``model`` on ``images``: from memory, else from the Parquet store (traced once per
    model and test set, across sessions and restarts), else traced in batches streamed from disk with a progress
    bar and an ETA. Each caller gets its own copy (a page may add columns)."""

    def make() -> pd.DataFrame:
        shown: list = []  # the progress bar, the first rows' table and those rows, once tracing has started
        first: list[dict] = []

        def show(progress: Progress) -> None:
            if not shown:
                shown.extend([st.progress(0.0), st.empty()])
            shown[0].progress(min(1.0, progress.done / max(progress.total, 1)), text=tracing_text(progress))
            if len(first) < FIRST_ROWS and progress.rows:  # the first rows, while the rest are traced
                first.extend(progress.rows[: FIRST_ROWS - len(first)])
                preview = as_table(first, model.meta["classes"])
                show_table(preview[["class", "predicted", "confidence", "macs"]], container=shown[1], most=4)

        out = stored_table(model, images, progress=show)
        for element in shown:
            element.empty()
        return out

    return _bounded_store(_table_store(), ("table", model.cache_key, images.fingerprint), make, limit=64)


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
    """Knob sweeps and static points shared by all sessions, keyed by (model, test set, what)."""
    return {}


@st.cache_data(show_spinner="Timing one value of the sweep on a few images…", max_entries=64)
def sweep_seconds(_model: torch.nn.Module, model_key: str, _images: ModelImages, fingerprint: str, knob: str) -> float:
    """``sweeps.seconds_per_value``: about how long one knob value takes on the test set, once per (model, set)."""
    return seconds_per_value(_model, knob, _images)


def cached_adaptive_sweep(
    model: torch.nn.Module, images: ModelImages, knob: str, budget: int, low: float, high: float, done=None
) -> pd.DataFrame:
    """``adaptive_sweep`` over a test set (each value's table stored), reused per (model, test set, knob, budget,
    range) once complete; ``done(row)`` after each value traced (the page's progress). A sweep stopped before the end
    is not kept here: its values' tables are, so running it again reads them instead of tracing."""
    key = (model.cache_key, images.fingerprint, knob, "adaptive", budget, low, high)

    def make() -> pd.DataFrame:
        return adaptive_sweep(model, knob, images, budget, low, high, done=done)

    return _bounded_store(_sweep_store(), key, make)


def cached_static_points(model: torch.nn.Module, images: ModelImages) -> pd.DataFrame:
    """The model's static variants (``evaluation_variants()``) on a test set, once per (model, test set)."""

    def make() -> pd.DataFrame:
        bar = st.progress(0.0, text="Evaluating the static variants…")
        out = static_points(model, images, progress=lambda f: bar.progress(f, text=f"Static variants… {f:.0%}"))
        bar.empty()
        return out

    return _bounded_store(_sweep_store(), (model.cache_key, images.fingerprint, "static"), make)
