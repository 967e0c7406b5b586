"""The converter contract: a ``Layout`` per published format, strict key accounting, provenance, safe reading."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import pkgutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ..checkpoint import CheckpointError, check_meta, save_checkpoint

# published ImageNet checkpoints are larger than the app's upload limit (ResNet-101 SkipNet: about 180 MB)
CONVERT_MAX_BYTES = 1 << 30
State = Mapping[str, torch.Tensor]


class ConversionError(CheckpointError):
    """The source file is not in the layout asked for (or any known one); the message names the keys."""


@dataclass(frozen=True)
class Layout:
    """One published checkpoint layout.

    ``matches(state)`` recognises it from the source's tensor names and shapes (no weights are used);
    ``convert(state, extras)`` returns the RouteScope model in its training form with the weights loaded, and the
    meta to save (classes, input size, normalisation, ...). ``extras`` are the source file's non-tensor entries
    (``arch``, ``epoch``, ...). ``version`` goes into the provenance; raise it when a conversion's output changes.
    """

    name: str
    summary: str
    matches: Callable[[State], bool]
    convert: Callable[[State, dict], tuple[nn.Module, dict]]
    version: int = 1


def layouts() -> dict[str, Layout]:
    """Every layout declared by a module of this package (its ``LAYOUTS`` list), by name."""
    found: dict[str, Layout] = {}
    for info in sorted(pkgutil.iter_modules(_package_path()), key=lambda m: m.name):
        if info.name in ("base", "__main__"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for layout in getattr(module, "LAYOUTS", ()):
            found[layout.name] = layout
    return found


def _package_path() -> list[str]:
    return [str(Path(__file__).parent)]


def _legacy_globals() -> list:
    """What a file saved by PyTorch 0.2-0.4 refers to besides tensors: the old tensor rebuild function and the
    typed storages and ``OrderedDict`` of a state dict. Allow-listed for ``weights_only=True``; nothing else runs."""
    from collections import OrderedDict

    return [torch._utils._rebuild_tensor, OrderedDict]


def read_source(path: str | os.PathLike, max_bytes: int = CONVERT_MAX_BYTES) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a published file (``module.`` prefixes of DataParallel removed) and its other entries.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)`` (zip or
    legacy format), unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"state_dict_ema": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if path.stat().st_size > max_bytes:
        raise ConversionError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is over {max_bytes / 2**20:.0f} MB")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{" and not head.startswith(b"PK")):
        try:
            from safetensors.torch import load_file

            return _strip_prefix(load_file(str(path), device="cpu")), {}
        except Exception as e:  # safetensors raises its own SafetensorError, or OSError
            raise ConversionError(f"{path}: not a readable safetensors file ({str(e)[:120]})") from None
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as e:
        detail = " ".join(str(e).split())[:160]
        raise ConversionError(
            f"{path}: not a PyTorch weights file that loads without running code ({detail})"
        ) from None
    if not isinstance(payload, Mapping):
        raise ConversionError(f"{path}: holds a {type(payload).__name__}, not a mapping of tensors")
    extras: dict = {}
    for key in ("state_dict", "state_dict_ema", "model"):
        if isinstance(payload.get(key), Mapping):
            extras = {k: v for k, v in payload.items() if not isinstance(v, (Mapping, torch.Tensor))}
            payload = payload[key]
            break
    state = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not state or len(state) != len(payload) or not all(isinstance(k, str) for k in state):
        raise ConversionError(f"{path}: not a mapping of tensor names to tensors")
    return _strip_prefix(state), extras


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.`` (DataParallel) removed from every key that has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def describe_keys(state: State, limit: int = 6) -> str:
    """What a state dict looks like, for error messages: tensor count, parameters, the commonest top-level names."""
    tops = Counter(k.split(".")[0] for k in state)
    params = sum(v.numel() for v in state.values())
    common = ", ".join(f"{name}.* ({n})" for name, n in tops.most_common(limit))
    more = f", ... {len(tops) - limit} more" if len(tops) > limit else ""
    return f"{len(state)} tensors, {params:,} values; top-level names {common}{more}"


def take_state(
    state: State,
    mapping: Mapping[str, str],
    expected: Mapping[str, torch.Tensor],
    dropped: Iterable[str] = (),
    source: str = "source",
) -> dict[str, torch.Tensor]:
    """The target state dict ``{target: state[source_key]}`` for ``mapping`` (target -> source key), strictly:
    every target key of ``expected`` mapped, every source key used or listed in ``dropped``, shapes equal (a
    source tensor may be reshaped only when its element count matches, e.g. a 1x1 conv into a linear)."""
    missing = sorted({src for src in mapping.values() if src not in state})
    unused = sorted(set(state) - set(mapping.values()) - set(dropped))
    unmapped = sorted(set(expected) - set(mapping))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")
    if unused:
        problems.append(f"unexpected {len(unused)} keys ({', '.join(unused[:4])}{' ...' if len(unused) > 4 else ''})")
    if unmapped:
        problems.append(f"nothing for {', '.join(unmapped[:4])}{' ...' if len(unmapped) > 4 else ''}")
    out: dict[str, torch.Tensor] = {}
    for target, src in mapping.items():
        if src not in state or target not in expected:
            continue
        tensor, want = state[src], expected[target]
        if tuple(tensor.shape) != tuple(want.shape):
            if tensor.numel() != want.numel():
                problems.append(f"{src} has shape {tuple(tensor.shape)}, {target} wants {tuple(want.shape)}")
                continue
            tensor = tensor.reshape(want.shape)
        out[target] = tensor.to(want.dtype).contiguous()
    if problems:
        raise ConversionError(f"{source}: does not fit: {'; '.join(problems)}. It has {describe_keys(state)}")
    return out


def detect_layout(state: State) -> Layout | None:
    """The one layout that recognises ``state``, or None."""
    hits = [layout for layout in layouts().values() if layout.matches(state)]
    return hits[0] if len(hits) == 1 else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_source(path: str | os.PathLike, layout: str | None = None) -> tuple[nn.Module, dict]:
    """The converted model (training form, eval mode) and its meta, with ``meta["provenance"]``: the source file's
    name and SHA-256, the layout and the converter's version."""
    path = Path(path)
    state, extras = read_source(path)
    known = layouts()
    if layout is None:
        chosen = detect_layout(state)
        if chosen is None:
            raise ConversionError(
                f"{path.name}: not a layout RouteScope converts ({', '.join(known)}); it has {describe_keys(state)}"
            )
    elif layout not in known:
        raise ConversionError(f"no layout {layout!r}; known: {', '.join(known)}")
    else:
        chosen = known[layout]
    model, meta = chosen.convert(state, extras)
    meta = dict(meta)
    meta["provenance"] = {
        "source": path.name,
        "sha256": sha256_of(path),
        "layout": chosen.name,
        "converter_version": chosen.version,
        **({"source_arch": str(extras["arch"])} if "arch" in extras else {}),
    }
    check_meta(meta)
    model.meta = meta
    return model.eval(), meta


def convert_file(source: str | os.PathLike, out: str | os.PathLike, layout: str | None = None) -> Path:
    """Convert ``source`` and write the RouteScope checkpoint ``out`` (atomically)."""
    model, meta = convert_source(source, layout)
    save_checkpoint(out, model, meta)
    return Path(out)
