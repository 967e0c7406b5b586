"""Model registry in the style of timm / torchvision: ``@register_model`` on a builder function."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``create_model(fn.__name__, **cfg)`` calls it."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **cfg) -> nn.Module:
    """Build a registered model; ``cfg`` are the builder's keyword arguments (num_classes, in_chans, ...)."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    model = builder(**cfg)
    model.arch = name
    model.arch_config = dict(cfg)
    return model


# --- training recipes: one per method, a list of stages -------------------------------------------------

_RECIPES: dict[str, Callable] = {}


def register_recipe(method: str):
    """Register ``fn(args) -> list[Stage]`` as the training recipe of models whose ``method`` is ``method``."""

    def wrap(fn: Callable) -> Callable:
        _RECIPES[method] = fn
        return fn

    return wrap


def get_recipe(method: str) -> Callable:
    try:
        return _RECIPES[method]
    except KeyError:
        raise KeyError(f"no training recipe for method {method!r}; known: {', '.join(sorted(_RECIPES))}") from None
