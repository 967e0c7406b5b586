"""What ships with the repo: bundled checkpoints and sample images."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from models.checkpoint import CheckpointError, read_checkpoint
from models.data import REPO_ROOT, SAMPLE_IMAGES

PRETRAINED = REPO_ROOT / "models" / "pretrained"
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


def read_checkpoints(paths: Iterable[Path], on_error: Callable[[str], None] | None = None) -> Iterator[tuple[Path, dict]]:
    """``(path, payload)`` of each checkpoint, read without building its model (meta, arch, weights); an
    unreadable file raises ``CheckpointError``, or goes to ``on_error`` and is skipped (the app lists them)."""
    for path in paths:
        try:
            yield path, read_checkpoint(path)
        except CheckpointError as e:
            if on_error is None:
                raise
            on_error(str(e))


def sample_images(folder: Path = SAMPLE_IMAGES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
