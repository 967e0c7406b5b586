"""What ships with the repo: bundled checkpoints and sample images."""
from __future__ import annotations

import os
from pathlib import Path

from models.data import REPO_ROOT

PRETRAINED = REPO_ROOT / "models" / "pretrained"
SAMPLES = REPO_ROOT / "app" / "samples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def models_folder() -> Path:
    """Where the bundled checkpoints, their ``manifest.json`` and ``bench.json`` live: ``$ROUTESCOPE_MODELS`` or
    ``models/pretrained``."""
    return Path(os.environ.get("ROUTESCOPE_MODELS") or PRETRAINED)


def bundled_checkpoints(folder: Path | None = None) -> dict[str, Path]:
    """``{name: path}`` of the finished checkpoints in ``folder`` (default ``models_folder()``).

    Resumable ``*.last.pt`` files are left out.
    """
    folder = Path(folder or models_folder())
    return {p.stem: p for p in sorted(folder.glob("*.pt")) if not p.name.endswith(".last.pt")}


def sample_images(folder: Path = SAMPLES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
