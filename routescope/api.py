"""The Python API for outside code: load a model, trace images, build a per-image table.

Thin functions over the library (``models.loading``, ``analysis.core.trace``, ``analysis.core.table_store``), so a
script or a notebook needs one import::

    import routescope
    model = routescope.load("skipnet_resnet20_fmnist_a0.75_fta6kd")      # a file, a bundled name or a plug-in
    records = routescope.trace(model, ["shoe.png"])                      # decisions, cost, prediction per image
    table = routescope.table(model)                                      # one row per test image (pandas)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import pandas as pd
import torch
import torch.nn as nn
from PIL import Image

from routescope.analysis.core.images import load_model_input, to_model_input
from routescope.analysis.core.table import as_table, table_rows
from routescope.analysis.core.table_store import stored_table
from routescope.analysis.core.testsets import TestSet, default_test_set, open_test_set
from routescope.analysis.core.trace import trace_batch
from routescope.models.data import normalize
from routescope.models.loading import load_model
from routescope.models.plugins import ModelPlugin

ImageLike = Union[str, os.PathLike, bytes, Image.Image, torch.Tensor]


def load(
    source: str | os.PathLike | ModelPlugin,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike | None = None,
    form: str = "fast",
) -> nn.Module:
    """A model in eval mode: a RouteScope checkpoint file, a bundled model's name, a plug-in model's name
    (``plugin:NAME``) or a ``ModelPlugin`` (built with ``weights`` if given)."""
    return load_model(source, map_location=device, form=form, weights=weights)


def _inputs(model: nn.Module, images: ImageLike | Sequence[ImageLike]) -> tuple[torch.Tensor, list[str], list]:
    """The normalized batch, a name and the preprocessing notes per image."""
    meta = model.meta
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    tensors, names, notes = [], [], []
    for i, image in enumerate(images):
        if isinstance(image, torch.Tensor):  # uint8: pixels; float: already normalized like the model's data
            x = normalize(image[None], meta["mean"], meta["std"]) if image.dtype == torch.uint8 else image[None]
            tensors.append(x.float())
            names.append(f"image{i}")
            notes.append([])
            continue
        if isinstance(image, Image.Image):
            model_input, name = to_model_input(image, meta), f"image{i}"
        else:
            name = f"image{i}" if isinstance(image, bytes) else str(image)
            model_input = load_model_input(image, meta, name)
        tensors.append(model_input.tensor)
        names.append(name)
        notes.append(model_input.notes)
    return torch.cat(tensors), names, notes


def trace(
    model: nn.Module,
    images: ImageLike | Sequence[ImageLike],
    overrides: dict[str, dict[str, Any]] | None = None,
    knobs: dict[str, float] | None = None,
    structure: bool = False,
) -> list[dict]:
    """One routing trace per image (the JSON of docs/trace.md: prediction, cost, decisions), in one batch.

    ``images``: file paths, encoded bytes or PIL images (converted as the app converts uploads), uint8 tensors
    (C, H, W pixels at the model's size) or float tensors already normalized like the model's data, or an
    (N, C, H, W) tensor. ``overrides`` force decisions and ``knobs`` move inference settings, as in
    ``traced_forward``. An unreadable image raises ``analysis.core.images.ImageError`` (a ``ValueError``).
    """
    x, names, notes = _inputs(model, images)
    records = trace_batch(model, x, names, structure=structure, overrides=overrides, knobs=knobs)
    for record, note in zip(records, notes):
        if note:
            record["preprocessing"] = note
    return records


def table(
    model: nn.Module,
    test_set: str | None = None,
    data_dir: str | os.PathLike | None = None,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    knobs: dict[str, float] | None = None,
    store: str | os.PathLike | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """The per-image table of ``model`` (one row per image: class, prediction, cost, each decision, routing
    pattern; see ``analysis.core.table``).

    Either a test set by name (``analysis.core.testsets``: ``fashion-mnist-subset``, ``cifar10``, ``imagefolder``,
    ``folder``, ...; default: the model's own, else the bundled subset), streamed from disk and stored once
    (``analysis.core.table_store``, under ``store`` or ``$ROUTESCOPE_CACHE``), or ``images`` in memory (uint8
    N x C x H x W at the model's size, ``labels`` in its classes, -1 or None: unlabelled), traced and not stored.
    """
    meta = model.meta
    if images is not None:
        labels = torch.full((len(images),), -1) if labels is None else torch.as_tensor(labels)
        rows = []
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            rows += table_rows(model, images[start:stop], labels[start:stop], range(start, stop), knobs)
        return as_table(rows, meta["classes"])
    data_dir = None if data_dir is None else os.fspath(data_dir)
    chosen = TestSet(test_set, data_dir) if test_set else default_test_set(meta, data_dir)
    return stored_table(
        model, open_test_set(chosen, meta), knobs, Path(store) if store else None, batch_size=batch_size
    )
