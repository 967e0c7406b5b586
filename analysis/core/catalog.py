"""What ships with the repo: bundled checkpoints and sample images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from routescope.models.checkpoint import CheckpointError, read_checkpoint
from routescope.models.data import SAMPLE_IMAGES
from routescope.models.factory import PRETRAINED, models_folder  # noqa: F401 (PRETRAINED re-exported); the path logic lives in models.factory

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def bundled_checkpoints(folder: Path | None = None) -> dict[str, Path]:
    """``{name: path}`` of the finished checkpoints in ``folder`` (default ``models_folder()``).

    Resumable ``*.last.pt`` files are left out.
    """
    folder = Path(folder or models_folder())
    return {p.stem: p for p in sorted(folder.glob("*.pt")) if not p.name.endswith(".last.pt")}


def featured(folder: Path | None = None) -> dict[str, dict]:
    """``{method: {"flagship": name, "controls": [names]}}`` from ``featured.json`` beside the bundled checkpoints:
    what the app lists first and the README's results show; names without a checkpoint are left out."""
    folder = Path(folder or models_folder())
    path = folder / "featured.json"
    if not path.is_file():
        return {}
    present = bundled_checkpoints(folder)
    out = {}
    for method, entry in json.loads(path.read_text()).items():
        if entry.get("flagship") in present:
            out[method] = {**entry, "controls": [c for c in entry.get("controls", []) if c in present]}
    return out


def featured_names(folder: Path | None = None) -> list[str]:
    """The featured checkpoints in display order: SkipNet's flagship first, then each method's flagship and controls."""
    names: list[str] = []
    for entry in featured(folder).values():
        for name in (entry["flagship"], *entry["controls"]):
            if name not in names:
                names.append(name)
    return names


def read_checkpoints(
    paths: Iterable[Path], on_error: Callable[[str], None] | None = None
) -> Iterator[tuple[Path, dict]]:
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
