"""``python -m models.X`` from a checkout imports this folder as ``models``; RouteScope's name for it is
``routescope.models``. So that a process never holds two copies (two registries, two trace context variables, two
``ModelPlugin`` classes), ``models`` and every ``models.*`` module are made the very objects of ``routescope.models``:
``sys.modules["models"]`` is replaced and a finder hands out the ``routescope.models.*`` modules under the short names
(``runpy`` gets the code of the command's module from it, so ``-m`` still runs it as ``__main__``)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    def __init__(self, short: str, full: str) -> None:
        self.short, self.full = short, full

    def _full(self, name: str) -> str:
        return self.full + name[len(self.short) :]

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.short + "."):
            return None
        real = importlib.util.find_spec(self._full(fullname))
        if real is None:
            return None
        # the real file as origin: ``__file__`` of ``-m``'s ``__main__`` is the command's file, as without the alias
        locations = real.submodule_search_locations
        return importlib.util.spec_from_file_location(
            fullname, real.origin, loader=self, submodule_search_locations=locations
        )

    def create_module(self, spec):
        return importlib.import_module(self._full(spec.name))  # the one module object, under a second key

    def exec_module(self, module) -> None:
        pass  # already executed under its full name

    def get_code(self, fullname):  # runpy: run the command's module as __main__
        return importlib.util.find_spec(self._full(fullname)).loader.get_code(self._full(fullname))

    def get_source(self, fullname):
        return importlib.util.find_spec(self._full(fullname)).loader.get_source(self._full(fullname))

    def is_package(self, fullname) -> bool:
        return importlib.util.find_spec(self._full(fullname)).submodule_search_locations is not None


def become(short: str, full: str) -> None:
    """Make ``short`` (this package, imported under the checkout's name) the package ``full``."""
    sys.meta_path.insert(0, _Alias(short, full))
    sys.modules[short] = importlib.import_module(full)
