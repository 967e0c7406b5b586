"""RouteScope backend: ``create_model``, ``list_models``, ``load_checkpoint``.

Importing the package imports every module of it and of ``models.recipes``, so each method's models and
recipe register themselves: a new method is ``models/<method>.py`` plus ``models/recipes/<method>.py``, with
no list to edit here. Only the command-line entry points are skipped (``python -m models.train`` must not
find its module imported already).
"""

from __future__ import annotations

import importlib
import pkgutil

if __name__ == "models":  # ``python -m models.X`` from a checkout: the package is routescope.models, once (_one_name)
    from ._one_name import become

    become(__name__, "routescope.models")

from . import recipes
from .checkpoint import CheckpointError, load_checkpoint
from .factory import create_model, list_models
from .registry import register_model

_ENTRY_POINTS = frozenset({"train", "evaluate", "zoo"})  # zoo: imported on use (python -m models.zoo)


def _import_all() -> None:
    """Import the method and backbone modules of this package, then every recipe module."""
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg and info.name not in _ENTRY_POINTS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for info in pkgutil.iter_modules(recipes.__path__):
        importlib.import_module(f"{recipes.__name__}.{info.name}")


_import_all()

__all__ = ["CheckpointError", "create_model", "list_models", "load_checkpoint", "register_model"]
