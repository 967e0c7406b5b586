"""Where plug-in models come from, and how one is loaded: installed packages' entry points in the group
``routescope.models``, modules a command names with ``--plugin module.path``, and declarations made in Python.

An entry point (or a named module) gives a ``ModelPlugin``, a list of them, a function returning either, or a
module whose ``ModelPlugin`` attributes are its declarations. The entry point's name is the plug-in *group* the app
lists its models under. Plug-ins are code the user installed: RouteScope imports them like any package, and never
runs code that came in an upload.
"""

from __future__ import annotations

import functools
import importlib
import threading
import types
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import UsageError
from .plugin_model import PluginModel
from .plugins import ENTRY_POINT_GROUP, ModelPlugin


@dataclass(frozen=True)
class Declared:
    """A plug-in and where it came from: ``group`` (its entry point's name, or the module named on the command line)
    and ``version`` (its distribution's, what keys the app's cache)."""

    plugin: ModelPlugin
    group: str
    version: str = ""


_lock = threading.Lock()
_named: dict[str, Declared] = {}  # declared in this process (``--plugin``, ``declare``): found before installed ones


def plugins_in(obj: Any) -> list[ModelPlugin]:
    """The declarations ``obj`` holds: a ``ModelPlugin``, a list or tuple of them, a module's ``ModelPlugin``
    attributes, or what a function returns."""
    if isinstance(obj, ModelPlugin):
        return [obj]
    if isinstance(obj, types.ModuleType):
        return [value for value in vars(obj).values() if isinstance(value, ModelPlugin)]
    if isinstance(obj, (list, tuple)) and all(isinstance(p, ModelPlugin) for p in obj):
        return list(obj)
    if callable(obj):
        return plugins_in(obj())
    raise UsageError(f"{obj!r} is not a ModelPlugin, a list of them, a module or a function returning them")


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[tuple[Declared, ...], tuple[str, ...]]:
    found, errors = [], []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        version = point.dist.version if point.dist is not None else ""
        try:
            found += [Declared(p, point.name, version) for p in plugins_in(point.load())]
        except Exception as e:  # a broken plug-in is a message; it must not take the other plug-ins down
            errors.append(f"plug-in {point.name} ({point.value}): {type(e).__name__}: {str(e)[:200]}")
    return tuple(found), tuple(errors)


def installed_plugins(on_error: Callable[[str], None] | None = None) -> dict[str, Declared]:
    """``{model name: Declared}`` of the installed plug-ins (read once per process: ``refresh()`` reads them again);
    a plug-in that fails to import goes to ``on_error`` (else it is left out silently)."""
    found, errors = _installed()
    for error in errors:
        if on_error is not None:
            on_error(error)
    return {d.plugin.name: d for d in found}


def refresh() -> None:
    """Forget the installed plug-ins read so far (a package was installed while the process runs)."""
    _installed.cache_clear()


def declare(plugin: ModelPlugin, group: str = "python") -> ModelPlugin:
    """Make ``plugin`` loadable by name in this process (``load_plugin(plugin.name)``)."""
    with _lock:
        _named[plugin.name] = Declared(plugin, group)
    return plugin


def declare_module(path: str) -> list[ModelPlugin]:
    """Import the module ``path`` (``--plugin``) and declare every plug-in it holds; a ``UsageError`` if it cannot be
    imported or holds none."""
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise UsageError(f"--plugin {path}: cannot import it ({e})") from None
    plugins = plugins_in(module)
    if not plugins:
        raise UsageError(f"--plugin {path}: the module declares no ModelPlugin")
    return [declare(p, path) for p in plugins]


def plugin_names() -> list[str]:
    """Every plug-in model name this process can load: declared ones first, then the installed ones."""
    return list(dict.fromkeys([*_named, *installed_plugins()]))


def is_declared(name: str) -> bool:
    """Whether ``name`` was declared in this process (``--plugin``, ``declare``): it wins over a bundled model."""
    return name in _named


def find_plugin(name: str) -> Declared | None:
    return _named.get(name) or installed_plugins().get(name)


def load_plugin(
    plugin: ModelPlugin | str, weights: str | Path | None = None, map_location: str | torch.device = "cpu"
) -> PluginModel:
    """A plug-in model (a declaration, or a declared or installed one's name) built with its weights (``weights``,
    else the declared path) and wrapped in the adapter, in eval mode on ``map_location``."""
    if isinstance(plugin, str):
        found = find_plugin(plugin)
        if found is None:
            known = ", ".join(plugin_names()) or "none installed"
            raise UsageError(f"no plug-in model {plugin!r}; plug-in models: {known}")
        plugin, group = found.plugin, found.group
    else:
        group = _named[plugin.name].group if plugin.name in _named else "python"
    model = plugin.build(weights if weights is not None else plugin.weights)
    if not isinstance(model, nn.Module):
        raise UsageError(f"plug-in {plugin.name!r}: build() returned {type(model).__name__}, not an nn.Module")
    return PluginModel(plugin, model, group).to(map_location).eval()
