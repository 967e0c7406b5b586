"""Model registry in the style of timm's ``_registry``: ``@register_model`` on a builder function, and the training
recipe of each method. A leaf: it knows nothing of files, checkpoints or pretrained weights (``models.factory``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``create_model(fn.__name__, **cfg)`` calls it."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def registered_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_MODELS)


def build_model(name: str, **cfg) -> nn.Module:
    """Build a registered model (untrained); ``cfg`` are the builder's keyword arguments (num_classes, in_chans,
    ...)."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(registered_models())}") from None
    model = builder(**cfg)
    model.arch = name
    model.arch_config = dict(cfg)
    return model


# --- training recipes: one per method, a list of stages and the command-line options they own -------------


@dataclass(frozen=True)
class Recipe:
    """How ``models.train`` trains models of one method.

    ``stages(args)`` builds the list of ``stages.Stage``; ``options`` is the dataclass of the options only this
    method reads (``models.options``: ``models.train`` adds them when ``--model`` is of this method, so another
    method's option is an error); ``model_args(args)`` turns some of them into builder arguments (e.g. SkipNet's
    ``--gate``); ``title`` heads the options in ``--help``; ``name`` is how pages and figures call the method
    (``DS-Net``; default: ``method``).
    """

    method: str
    stages: Callable
    options: type | None = None
    model_args: Callable | None = None
    title: str | None = None
    name: str | None = None


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    method: str,
    options: type | None = None,
    model_args: Callable | None = None,
    title: str | None = None,
    name: str | None = None,
):
    """Register ``fn(args) -> list[Stage]`` as the training recipe of models whose ``method`` is ``method``."""

    def wrap(fn: Callable) -> Callable:
        _RECIPES[method] = Recipe(method, fn, options, model_args, title, name)
        return fn

    return wrap


def method_name(method: str) -> str:
    """How pages and figures call a method: its recipe's ``name``, else the method itself (a plug-in's)."""
    recipe = _RECIPES.get(method)
    return recipe.name if recipe is not None and recipe.name else method


def recipe_of(method: str) -> Recipe:
    try:
        return _RECIPES[method]
    except KeyError:
        raise KeyError(f"no training recipe for method {method!r}; known: {', '.join(sorted(_RECIPES))}") from None


def get_recipe(method: str) -> Callable:
    """The stages function of ``method``'s recipe."""
    return recipe_of(method).stages


def method_of(name: str) -> str:
    """The ``method`` of a registered model, read from a build on the ``meta`` device (no weight allocated)."""
    with torch.device("meta"):
        return build_model(name).method
