"""Converters from published checkpoint layouts into RouteScope checkpoints that execute their decisions for real.

Each module of this package declares one or more ``Layout``\\s (a name for ``--from``, how to recognise a source
state dict, how to build the RouteScope model from it) in a module-level ``LAYOUTS`` list; ``layouts()`` collects
them, so adding a source means adding a file. ``convert_file`` reads the source without running its code
(``weights_only=True``, or safetensors), converts, records provenance in the meta and writes a RouteScope checkpoint.
"""

from __future__ import annotations

from .base import (
    CONVERT_MAX_BYTES,
    ConversionError,
    Layout,
    convert_file,
    convert_source,
    detect_layout,
    describe_keys,
    layouts,
    read_source,
    take_state,
)

__all__ = [
    "CONVERT_MAX_BYTES",
    "ConversionError",
    "Layout",
    "convert_file",
    "convert_source",
    "detect_layout",
    "describe_keys",
    "layouts",
    "read_source",
    "take_state",
]
