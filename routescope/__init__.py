"""RouteScope's one namespace for outside code, and its commands.

Outside code imports ``routescope`` only: ``routescope.load``, ``routescope.trace`` and ``routescope.table``
(``routescope.api``), and the plug-in contract (``ModelPlugin``, ``DecisionPoint``, ``Site``, ``DecisionKind``,
``register_kind``, ``declare``, ``plugin_names``). The names are imported on first use, so ``import routescope`` (and
the ``routescope`` command) stays cheap and never imports torch or Streamlit until a name is asked for.

``routescope COMMAND ...`` (or ``python -m routescope COMMAND ...``): the table in ``routescope.commands`` names every
entry point and the module that holds it; each such module is a thin command line over the library (``models`` below
``analysis`` below ``app``), and no library module imports one (the import contract in pyproject.toml).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from routescope.models.decisions import DecisionKind, register_kind
    from routescope.models.plugin_model import PluginModel
    from routescope.models.plugin_registry import declare, plugin_names
    from routescope.models.plugins import DecisionPoint, ModelPlugin, Site
    from routescope.models.trace import traced_forward
    from routescope.api import load, table, trace

_EXPORTS = {
    "load": "routescope.api",
    "trace": "routescope.api",
    "table": "routescope.api",
    "ModelPlugin": "routescope.models.plugins",
    "DecisionPoint": "routescope.models.plugins",
    "Site": "routescope.models.plugins",
    "PluginModel": "routescope.models.plugin_model",
    "declare": "routescope.models.plugin_registry",
    "plugin_names": "routescope.models.plugin_registry",
    "DecisionKind": "routescope.models.decisions",
    "register_kind": "routescope.models.decisions",
    "traced_forward": "routescope.models.trace",
}

__all__ = [
    "load",
    "trace",
    "table",
    "ModelPlugin",
    "DecisionPoint",
    "Site",
    "PluginModel",
    "declare",
    "plugin_names",
    "DecisionKind",
    "register_kind",
    "traced_forward",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'routescope' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
