"""One way to name a model for every command, the app and the Python API: a RouteScope checkpoint file, a bundled
model's name, or a plug-in model's name (``plugin:NAME`` says so explicitly). The commands that load a model share
``add_model_arguments`` and ``model_from_arguments`` (``--checkpoint`` and ``--plugin MODULE``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import load_checkpoint
from .errors import UsageError
from .factory import bundled_names, load_pretrained
from .plugin_registry import declare_module, find_plugin, is_declared, load_plugin
from .plugins import ModelPlugin

PLUGIN_PREFIX = "plugin:"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")


def _is_path(text: str) -> bool:
    """A file name rather than a model's name (names have dots too: ``..._a0.75_fta6kd``)."""
    return Path(text).exists() or text.lower().endswith(CHECKPOINT_SUFFIXES) or any(s and s in text for s in SEPARATORS)


SEPARATORS = (os.sep, os.altsep)


def load_model(
    source: str | os.PathLike | ModelPlugin,
    map_location: str | torch.device = "cpu",
    form: str = "fast",
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """The model ``source`` names, in eval mode: a checkpoint file (``load_checkpoint``, in ``form``), a declaration
    or ``plugin:NAME`` (``load_plugin``, with ``weights`` if given), a plug-in declared in this process (``--plugin``),
    a bundled checkpoint's name, or an installed plug-in's name, looked up in that order."""
    if isinstance(source, ModelPlugin):
        return load_plugin(source, weights, map_location)
    text = os.fspath(source)
    if text.startswith(PLUGIN_PREFIX):
        return load_plugin(text[len(PLUGIN_PREFIX) :], weights, map_location)
    if _is_path(text):
        return load_checkpoint(text, map_location=map_location, form=form)
    if is_declared(text):
        return load_plugin(text, weights, map_location)
    if text in bundled_names():
        return load_pretrained(text, map_location=map_location, form=form)
    if find_plugin(text) is not None:
        return load_plugin(text, weights, map_location)
    return load_checkpoint(text, map_location=map_location, form=form)  # its one-line error: no such checkpoint


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` and ``--plugin`` of every command that loads a model."""
    parser.add_argument(
        "--checkpoint",
        metavar="MODEL",
        help="a RouteScope checkpoint file, a bundled model's name, or a plug-in model's name (plugin:NAME)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE's plug-in declarations (ModelPlugin), so --checkpoint can name their models; "
        "with one declaration and no --checkpoint, its model",
    )


def model_from_arguments(args: argparse.Namespace, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model ``--checkpoint`` names, after importing every ``--plugin`` module; a ``UsageError`` when neither
    names one model."""
    declared = [plugin for module in args.plugin for plugin in declare_module(module)]
    if args.checkpoint is not None:
        return load_model(args.checkpoint, map_location)
    if len(declared) == 1:
        return load_plugin(declared[0], map_location=map_location)
    if declared:
        names = ", ".join(p.name for p in declared)
        raise UsageError(f"--plugin declares {len(declared)} models ({names}): name one with --checkpoint")
    raise UsageError("--checkpoint is required (a checkpoint file, a bundled model or a plug-in model)")
