"""Where a model runs: ``--device`` on every command line, ``ROUTESCOPE_DEVICE`` for the app.

The default is CUDA when PyTorch sees a GPU, else the CPU. Results (decisions, MACs, predictions) do not depend
on the device beyond float rounding at a threshold; the compiled batch-1 kernels (``models.layers.fused``) are a
CPU optimisation that every other device goes around.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn

from .errors import UsageError

ENV = "ROUTESCOPE_DEVICE"


def default_device() -> torch.device:
    """``$ROUTESCOPE_DEVICE`` if set, else ``cuda`` when available, else ``cpu``."""
    return resolve_device(os.environ.get(ENV) or None)


def resolve_device(name: str | torch.device | None) -> torch.device:
    """A usable ``torch.device`` from a name (``cpu``, ``cuda``, ``cuda:1``, ``mps``; None: the default); a
    ``UsageError`` that says what is available when the device does not exist here."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device {name!r} is not a device name (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r}: PyTorch sees no CUDA GPU here (this build: {torch.__version__}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"device {name!r}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device {name!r}: RouteScope runs on cpu, cuda or mps")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's weights (the CPU for a model without any)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` with the project's default and help text, for every command that runs a model."""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help=f"cpu, cuda, cuda:N or mps (default: ${ENV}, else cuda when available, else cpu)",
    )
