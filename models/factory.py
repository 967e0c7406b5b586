"""Pretrained models by name, as timm's ``create_model(name, pretrained=True)``: above the registry (a leaf that knows
nothing of files), beside checkpoint loading. The bundled checkpoints live in ``$ROUTESCOPE_MODELS`` or
``models/pretrained`` with their ``manifest.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn as nn

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .data import REPO_ROOT
from .registry import build_model, registered_models

PRETRAINED = REPO_ROOT / "models" / "pretrained"


def create_model(name: str, pretrained: bool = False, **cfg) -> nn.Module:
    """Build a registered model; ``cfg`` are the builder's keyword arguments (num_classes, in_chans, ...).

    ``pretrained=True`` (timm's convention): ``name`` is a bundled checkpoint (``list_models(pretrained=True)``),
    loaded with ``load_checkpoint``, or an architecture, whose most accurate bundled checkpoint is loaded.
    """
    if not pretrained:
        return build_model(name, **cfg)
    if cfg:
        raise ValueError(
            f"create_model({name!r}, pretrained=True) takes no builder arguments (the checkpoint "
            f"fixes them), not {', '.join(sorted(cfg))}"
        )
    return load_pretrained(name)


def list_models(pretrained: bool = False) -> list[str]:
    """Registered architectures, or (``pretrained=True``) the names of the bundled checkpoints."""
    return bundled_names() if pretrained else registered_models()


def models_folder() -> Path:
    """Where the bundled checkpoints, their ``manifest.json`` and ``bench.json`` live: ``$ROUTESCOPE_MODELS`` or
    ``models/pretrained``."""
    return Path(os.environ.get("ROUTESCOPE_MODELS") or PRETRAINED)


def bundled_names(folder: Path | None = None) -> list[str]:
    """Names of the finished checkpoints in ``folder`` (default ``models_folder()``); ``*.last.pt`` left out."""
    folder = Path(folder or models_folder())
    return sorted(p.stem for p in folder.glob("*.pt") if not p.name.endswith(".last.pt"))


def read_manifest(folder: Path | None = None) -> dict:
    path = Path(folder or models_folder()) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def flagship(arch: str, folder: Path | None = None) -> str | None:
    """The most accurate bundled checkpoint of architecture ``arch`` (``None`` if there is none)."""
    folder = Path(folder or models_folder())
    best: tuple[float, str] | None = None
    for name in bundled_names(folder):
        try:
            payload = read_checkpoint(folder / f"{name}.pt")
        except CheckpointError:
            continue
        if payload.get("arch") != arch:
            continue
        acc = float((payload.get("meta") or {}).get("metrics", {}).get("test_acc", -1.0))
        if best is None or acc > best[0]:
            best = (acc, name)
    return None if best is None else best[1]


def load_pretrained(name: str, **kwargs):
    """A bundled checkpoint by name, or the flagship checkpoint of an architecture (``load_checkpoint`` kwargs)."""
    folder = models_folder()
    names = bundled_names(folder)
    if name not in names:
        if name in registered_models():
            best = flagship(name, folder)
            if best is None:
                raise KeyError(
                    f"no bundled checkpoint of architecture {name!r} in {folder}; "
                    f"create_model({name!r}) builds it untrained; bundled: {', '.join(names)}"
                )
            name = best
        else:
            raise KeyError(f"no bundled checkpoint or architecture {name!r} in {folder}; bundled: {', '.join(names)}")
    return load_checkpoint(folder / f"{name}.pt", **kwargs)
