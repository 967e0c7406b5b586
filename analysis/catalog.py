"""What ships with the repo: bundled checkpoints and sample images."""
from __future__ import annotations

import os
from pathlib import Path

from models.data import REPO_ROOT

PRETRAINED = REPO_ROOT / "models" / "pretrained"
SAMPLES = REPO_ROOT / "app" / "samples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def bundled_checkpoints(folder: Path | None = None) -> dict[str, Path]:
    """``{name: path}`` of the finished checkpoints in ``$ROUTESCOPE_MODELS`` or ``models/pretrained``.

    Resumable ``*.last.pt`` files are left out.
    """
    folder = Path(folder or os.environ.get("ROUTESCOPE_MODELS") or PRETRAINED)
    return {p.stem: p for p in sorted(folder.glob("*.pt")) if not p.name.endswith(".last.pt")}


def sample_images(folder: Path = SAMPLES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
