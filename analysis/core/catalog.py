"""What ships with the repo: bundled checkpoints and sample images."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from routescope.models.checkpoint import CheckpointError, read_checkpoint
from routescope.models.data import SAMPLE_IMAGES
from routescope.models.registry import method_name
from routescope.models.factory import PRETRAINED, models_folder, read_manifest  # noqa: F401 (PRETRAINED re-exported); the path logic lives in models.factory
from routescope.analysis.core.units import percent

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


FLAGSHIP = "★"  # marks a method's flagship in the model picker (its controls are not starred)


def roles(folder: Path | None = None) -> dict[str, tuple[str, str]]:
    """``{name: (role, method)}`` of the featured checkpoints: ``("flagship", method)`` or ``("control", method of
    the first flagship it is a control of)``."""
    out: dict[str, tuple[str, str]] = {}
    for method, entry in featured(folder).items():
        out[entry["flagship"]] = ("flagship", method)
        for name in entry["controls"]:
            out.setdefault(name, ("control", method))
    return out


def _arch_title(arch: str) -> str:
    """``resnet20`` -> ``ResNet-20``, ``grouped_resnet20`` -> ``Grouped ResNet-20``, ``convnet3`` -> ``ConvNet-3``;
    a method's model is its method's name (``skipnet_resnet20`` -> ``SkipNet``)."""
    prefix, _, base = arch.rpartition("_")
    if prefix and prefix != "grouped" and method_name(prefix) != prefix:  # a method's model: its method's name
        return method_name(prefix)
    match = re.fullmatch(r"(resnet|convnet)(\d+)", base)
    title = f"{'ResNet' if match.group(1) == 'resnet' else 'ConvNet'}-{match.group(2)}" if match else base
    return f"Grouped {title}" if prefix == "grouped" else (title if not prefix else f"{prefix} {title}")


@functools.lru_cache(maxsize=256)
def _checkpoint_facts(path: str, mtime: float) -> dict:
    """What a checkpoint without a manifest entry says of itself (its meta), read once per file version."""
    try:
        payload = read_checkpoint(path)
    except CheckpointError:
        return {}
    meta = payload.get("meta", {})
    metrics = meta.get("metrics", {})
    return {"arch": payload.get("arch"), "method": meta.get("method"), **metrics}


def model_facts(folder: Path | None = None) -> dict[str, dict]:
    """``{name: {"arch", "test_acc", "mac_ratio", "epochs"}}`` of every bundled checkpoint, from ``manifest.json``
    (its command names the architecture), else from the checkpoint's own meta."""
    folder = Path(folder or models_folder())
    manifest = read_manifest(folder)
    out = {}
    for name, path in bundled_checkpoints(folder).items():
        entry = manifest.get(name)
        if entry is not None:
            arch = re.search(r"--model (\S+)", entry.get("command", ""))
            facts = {**entry.get("metrics", {}), "arch": arch.group(1) if arch else None}
            facts["epochs"] = entry.get("cumulative_epochs")
        else:
            facts = _checkpoint_facts(str(path), path.stat().st_mtime)
        out[name] = facts
    return out


def model_label(name: str, facts: dict, role: tuple[str, str] | None = None) -> str:
    """A readable line for the model picker: what it is, its role, test accuracy and share of the dense MACs, e.g.
    ``★ SkipNet · flagship · 94.0% · 64% MACs`` or ``ResNet-20 · control, 30 epochs · 94.4% · 100% MACs``; a model
    outside the featured list ends with its name (the sweeps differ by it); the name alone when nothing is known."""
    accuracy, ratio, arch = facts.get("test_acc"), facts.get("mac_ratio"), facts.get("arch")
    if accuracy is None and ratio is None:
        return name
    numbers = [percent(accuracy) if accuracy is not None else None, f"{ratio:.0%} MACs" if ratio is not None else None]
    numbers = [n for n in numbers if n]
    if role is not None and role[0] == "flagship":
        return " · ".join([f"{FLAGSHIP} {method_name(role[1])}", "flagship", *numbers])
    what = _arch_title(arch) if arch else method_name(facts["method"]) if facts.get("method") else name
    if role is not None:
        epochs = facts.get("epochs")
        return " · ".join([what, "control" + (f", {epochs} epochs" if epochs else ""), *numbers])
    return " · ".join([what, *numbers, name])


def model_labels(folder: Path | None = None) -> dict[str, str]:
    """``{name: model_label}`` of every bundled checkpoint: the featured flagships starred, their controls not."""
    known = roles(folder)
    return {name: model_label(name, facts, known.get(name)) for name, facts in model_facts(folder).items()}


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
