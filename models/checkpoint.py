"""RouteScope checkpoints: plain tensors and builtins only (``torch.load(weights_only=True)``), atomic writes.

Layout of the saved dict::

    {"format": "routescope", "version": 1, "arch": "resnet20", "config": {...builder kwargs...},
     "state_dict": {...}, "meta": {...}, "train_state": {...} (only in resumable files)}

``meta`` describes the run: ``models.train`` writes the ``META_KEYS`` (name, method, dataset, classes, input
size, normalization, metrics, recipe) and the training ``history``; hand-made checkpoints may carry fewer.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from .inference import FORMS, fast_form
from .registry import create_model

FORMAT, VERSION = "routescope", 1
META_KEYS = ("name", "method", "dataset", "classes", "input_size", "mean", "std", "metrics", "recipe")


class CheckpointError(ValueError):
    """The file is not a RouteScope checkpoint, or does not fit its architecture."""


def training_args(meta: dict) -> dict:
    """The ``models.train`` arguments a run was made with (empty for hand-made checkpoints)."""
    return dict((meta.get("recipe") or {}).get("args") or {})


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict, train_state: dict | None = None) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    if getattr(model, "inference_only", False):
        raise ValueError("this is the fast inference form (BatchNorm folded): save the training form "
                         "(load_checkpoint(..., form='train'))")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "config": dict(model.arch_config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    if train_state is not None:
        payload["train_state"] = train_state
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate the raw dict; every failure is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable RouteScope checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a RouteScope checkpoint (a plain state_dict or another tool's file?)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: RouteScope checkpoint version {payload.get('version')} is not supported (want {VERSION})")
    missing = [k for k in ("arch", "config", "state_dict", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: RouteScope checkpoint lacks {', '.join(missing)}")
    return payload


def build_from_payload(payload: dict, source: str = "checkpoint") -> nn.Module:
    """Instantiate the architecture and load the weights strictly."""
    try:
        model = create_model(payload["arch"], **payload["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot build architecture {payload['arch']!r}: {e}") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"{source}: weights do not fit architecture {payload['arch']!r}: {detail[:300]}") from None
    model.meta = dict(payload["meta"])
    return model


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", form: str = "fast") -> nn.Module:
    """The model in eval mode with ``.meta``, ready for true dynamic inference.

    ``form="fast"`` (the default) is the inference form of ``models.inference`` (BatchNorm folded, gates
    pre-arranged, exported grouped convs); ``form="train"`` is the module as trained (for fine-tuning, or
    anything that needs its BatchNorm layers). Both compute the same logits and decisions.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    model = build_from_payload(read_checkpoint(path), str(path)).to(map_location).eval()
    return fast_form(inference_form(model)) if form == "fast" else model


def inference_form(model: nn.Module) -> nn.Module:
    """What inference runs: ``model.for_inference()`` where the model declares one (DGConv exports its masked
    convs to grouped convs; a new model), else the model itself."""
    prepare = getattr(model, "for_inference", None)
    return prepare() if callable(prepare) else model
