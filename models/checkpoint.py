"""RouteScope checkpoints: plain tensors and builtins only (``torch.load(weights_only=True)``), atomic writes.

Layout of the saved dict::

    {"format": "routescope", "version": 1, "arch": "resnet20", "config": {...builder kwargs...},
     "state_dict": {...}, "meta": {...}, "train_state": {...} (only in resumable files)}

``meta`` describes the run: ``models.train`` writes the ``META_KEYS`` (name, method, dataset, classes, input
size, normalization, metrics, recipe) and the training ``history``; hand-made checkpoints may carry fewer.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from .config_schema import MAX_CHANNELS, MAX_CLASSES, builder_schema, config_errors
from .errors import UsageError
from .inference import FORMS, fast_form
from .registry import _MODELS, build_model

FORMAT, VERSION = "routescope", 1
META_KEYS = ("name", "method", "dataset", "classes", "input_size", "mean", "std", "metrics", "recipe")


# limits on what a checkpoint may ask for, checked before any weight is allocated (README, "Reliability")
MAX_BYTES = 256 * 2**20  # file size (a converted ImageNet ResNet-101 SkipNet: 172 MB); bounds torch.load memory
MAX_PARAMS = 50_000_000
MAX_ACTIVATION_BYTES = 2**30  # estimated activation memory of one image's forward pass
MAX_SIDE = 1024  # input_size height and width in meta (config bounds: models.config_schema)


class CheckpointError(UsageError):
    """The file is not a RouteScope checkpoint, or does not fit its architecture."""


def check_config(arch, config) -> None:
    """A ``UsageError`` unless ``config`` uses only ``arch``'s builder keywords, each with a value of its type and
    within the bounds of ``models.config_schema``."""
    if not isinstance(arch, str) or arch not in _MODELS:
        raise UsageError(f"unknown model {arch!r}")
    errors = config_errors(builder_schema(_MODELS[arch]), config)
    if errors:
        raise UsageError(errors[0].replace("unknown config key(s)", f"unknown config key(s) for {arch}"))


def activation_bytes(model: nn.Module, input_size) -> int:
    """Estimated activation memory of one image's forward pass (float32): a ``meta``-device forward summing
    every leaf module's outputs where the model allows it; models whose forward reads values (gates, exits)
    get an upper bound instead: every leaf's output channels at the full input resolution."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device="meta"))
        return total
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
        pixels = input_size[1] * input_size[2]
        return sum(
            4 * pixels * int(getattr(m, "out_channels", getattr(m, "num_features", getattr(m, "out_features", 0))))
            for m in leaves
        )
    finally:
        for h in handles:
            h.remove()


def _input_size(meta, config, required: bool = False) -> tuple[int, int, int]:
    size = meta.get("input_size") if isinstance(meta, dict) else None
    if size is None and not required:  # a hand-made checkpoint without it: the CIFAR size, for the estimate
        return (config.get("in_chans", 3), 32, 32)
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        or not 1 <= size[0] <= MAX_CHANNELS
        or not all(1 <= v <= MAX_SIDE for v in size[1:])
    ):
        raise CheckpointError(
            f"meta input_size {str(size)[:60]} is not [channels <= {MAX_CHANNELS}, height, width <= {MAX_SIDE}]"
        )
    return tuple(size)


def build_meta_model(payload: dict, source: str = "checkpoint") -> nn.Module:
    """The architecture on the ``meta`` device (no weight allocated), after the config and size checks."""
    try:
        check_config(payload["arch"], payload["config"])
    except UsageError as e:
        raise CheckpointError(f"{source}: cannot build architecture {payload['arch']!r}: {e}") from None
    try:
        with torch.device("meta"):
            model = build_model(payload["arch"], **payload["config"])
    except (KeyError, TypeError, ValueError, IndexError, AssertionError) as e:
        raise CheckpointError(f"{source}: cannot build architecture {payload['arch']!r}: {str(e)[:200]}") from None
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise CheckpointError(
            f"{source}: {payload['arch']} with this config has {params:,} parameters, over the limit of {MAX_PARAMS:,}"
        )
    size = _input_size(payload["meta"], payload["config"])
    activations = activation_bytes(model, size)
    if activations > MAX_ACTIVATION_BYTES:
        raise CheckpointError(
            f"{source}: one {'x'.join(map(str, size))} image needs about {activations / 2**30:.1f} GiB "
            f"of activations, over the limit of {MAX_ACTIVATION_BYTES / 2**30:.0f} GiB"
        )
    return model


def check_state_dict(expected: dict, state: dict, source: str, arch: str) -> None:
    """Names, count, shapes and dtypes of ``state`` against the meta-built model's; then finite values."""
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{source}: its state_dict is not a mapping of names to tensors")
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    for k, want in expected.items():
        got = state.get(k)
        if got is None:
            continue
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{k} has shape {tuple(got.shape)}, want {tuple(want.shape)}")
        elif got.dtype != want.dtype:
            problems.append(
                f"{k} is {str(got.dtype).replace('torch.', '')}, want {str(want.dtype).replace('torch.', '')}"
            )
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{source}: weights do not fit architecture {arch!r}: {len(state)} tensors, want "
            f"{len(expected)}; {'; '.join(problems[:5])}{more}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{source}: weights contain NaN/inf ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})"
        )


def training_args(meta: dict) -> dict:
    """The ``models.train`` arguments a run was made with (empty for hand-made checkpoints)."""
    return dict((meta.get("recipe") or {}).get("args") or {})


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict, train_state: dict | None = None) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    if model.is_fast_form:
        raise ValueError(
            "this is the fast inference form (BatchNorm folded): save the training form "
            "(load_checkpoint(..., form='train'))"
        )
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


_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # torch.save before 1.6
_SAVE_HINT = "save the weights with models.checkpoint.save_checkpoint (python -m models.train does)"


def _why_unloadable(path: Path, error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in RouteScope's words: never PyTorch's own text (which
    suggests ``weights_only=False``, i.e. running the file's code, and carries terminal colour codes)."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        return "the file is empty"
    # torch names the first class or function a pickle refers to: "Unsupported global: GLOBAL models.resnet.ResNet ..."
    found = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if found:
        return (
            f"it contains pickled Python code ({found.group(1)[:80]}), which RouteScope never runs; {_SAVE_HINT}, "
            "not the whole model object"
        )
    if head.startswith(b"PK\x03\x04"):
        if zipfile.is_zipfile(path):
            return f"it is a ZIP archive that is not a PyTorch file, or a damaged one; {_SAVE_HINT}"
        return "it is a damaged or incomplete ZIP/PyTorch file (cut short in the upload or copy?); copy it again"
    if head.startswith(_LEGACY_MAGIC):
        return f"it is an old-style PyTorch file that is damaged or holds objects other than tensors; {_SAVE_HINT}"
    if head[:1] == b"\x80":
        return (
            f"it is a plain Python pickle, not a PyTorch checkpoint, and RouteScope never unpickles code; {_SAVE_HINT}"
        )
    return f"it is not a PyTorch file (another format, or random bytes); {_SAVE_HINT}"


def read_checkpoint(path: str | os.PathLike, max_bytes: int | None = MAX_BYTES) -> dict:
    """Load and validate the raw dict; every failure is a one-line ``CheckpointError``. A file over ``max_bytes``
    (None: no limit) is refused before it is read, so ``torch.load`` never holds more than that in memory."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise CheckpointError(
            f"{path}: {size / 2**20:.1f} MB is over the checkpoint size limit of {max_bytes / 2**20:.0f} MB"
        )
    try:
        # not ``mmap=True``: it skips torch's record-size check, so a truncated tensor member silently reads the
        # bytes of its neighbours (found by ``python -m tools.fuzz``); ``max_bytes`` bounds the memory instead
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        AttributeError,
        KeyError,
        IndexError,
        TypeError,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        struct.error,
    ) as e:
        raise CheckpointError(f"{path}: not a loadable RouteScope checkpoint: {_why_unloadable(path, e)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a RouteScope checkpoint (a plain state_dict or another tool's file?)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: RouteScope checkpoint version {payload.get('version')} is not supported (want {VERSION})"
        )
    missing = [k for k in ("arch", "config", "state_dict", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: RouteScope checkpoint lacks {', '.join(missing)}")
    return payload


def build_from_payload(payload: dict, source: str = "checkpoint") -> nn.Module:
    """Check the config and sizes on a ``meta``-device build, the tensors against its state_dict, then build
    for real and load the weights strictly."""
    if not isinstance(payload["meta"], dict):
        raise CheckpointError(f"{source}: its meta is not a mapping")
    expected = build_meta_model(payload, source).state_dict()
    check_state_dict(expected, payload["state_dict"], source, payload["arch"])
    model = build_model(payload["arch"], **payload["config"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(
            f"{source}: weights do not fit architecture {payload['arch']!r}: {detail[:300]}"
        ) from None
    model.meta = dict(payload["meta"])
    return model


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    form: str = "fast",
    max_bytes: int | None = MAX_BYTES,
) -> nn.Module:
    """The model in eval mode with ``.meta``, ready for true dynamic inference.

    ``form="fast"`` (the default) is the inference form of ``models.inference`` (BatchNorm folded, gates
    pre-arranged, exported grouped convs); ``form="train"`` is the module as trained (for fine-tuning, or
    anything that needs its BatchNorm layers). Both compute the same logits and decisions.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    model = build_from_payload(read_checkpoint(path, max_bytes), str(path)).to(map_location).eval()
    return fast_form(inference_form(model)) if form == "fast" else model


def inference_form(model: nn.Module) -> nn.Module:
    """What inference runs: ``model.inference_form()`` (DGConv exports its masked convs to grouped convs; a new
    model), else the model itself."""
    return model.inference_form()


def check_meta(meta: dict) -> None:
    """The meta the app and the CLIs read, with values of the right type: classes (names), input_size, mean and
    std (one finite number per channel, std > 0); a ``CheckpointError`` otherwise."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"its meta lacks {', '.join(missing)}")
    channels = _input_size(meta, {}, required=True)[0]
    classes = meta["classes"]
    if (
        not isinstance(classes, (list, tuple))
        or not 1 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(c, str) for c in classes)
    ):
        raise CheckpointError("its meta classes are not a list of class names")
    for key in ("mean", "std"):
        value = meta[key]
        if (
            not isinstance(value, (list, tuple))
            or len(value) not in (1, channels)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or (key == "std" and min(value) <= 0)
        ):
            raise CheckpointError(
                f"its meta {key} is not one finite number per input channel{' (> 0)' if key == 'std' else ''}"
            )
    for key in ("name", "method", "dataset"):
        if not isinstance(meta[key], str):
            raise CheckpointError(f"its meta {key} is not a string")


def check_usable(model: nn.Module) -> nn.Module:
    """An uploaded file is untrusted: the meta the pages read must be there and valid, and one traced forward
    pass must give finite logits, one per class, or every image would fail later, deep inside a page (the app and
    ``python -m tools.fuzz`` run this after ``load_checkpoint``)."""
    from .trace import traced_forward

    check_meta(model.meta)
    try:
        logits, _ = traced_forward(model, torch.zeros(1, *model.meta["input_size"]))
    except RuntimeError as e:  # e.g. an input_size the layers cannot take (too small for the pooling)
        raise CheckpointError(
            f"a {'x'.join(map(str, model.meta['input_size']))} input does not run through it "
            f"({' '.join(str(e).split())[:160]})"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.shape != (1, len(model.meta["classes"])):
        raise CheckpointError(
            f"it gives {tuple(getattr(logits, 'shape', ()))} logits for {len(model.meta['classes'])} classes"
        )
    if not torch.isfinite(logits).all():
        raise CheckpointError("it gives NaN/inf logits")
    return model
