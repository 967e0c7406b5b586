"""Model registry in the style of timm / torchvision: ``@register_model`` on a builder function."""
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


def list_models(pretrained: bool = False) -> list[str]:
    """Registered architectures, or (``pretrained=True``) the names of the bundled checkpoints
    (``$ROUTESCOPE_MODELS`` or ``models/pretrained``)."""
    if pretrained:
        from .zoo import bundled_names

        return bundled_names()
    return sorted(_MODELS)


def create_model(name: str, pretrained: bool = False, **cfg) -> nn.Module:
    """Build a registered model; ``cfg`` are the builder's keyword arguments (num_classes, in_chans, ...).

    ``pretrained=True`` (timm's convention): ``name`` is a bundled checkpoint (``list_models(pretrained=True)``),
    loaded with ``load_checkpoint``, or an architecture, whose most accurate bundled checkpoint is loaded.
    """
    if pretrained:
        if cfg:
            raise ValueError(f"create_model({name!r}, pretrained=True) takes no builder arguments (the checkpoint "
                             f"fixes them), not {', '.join(sorted(cfg))}")
        from .zoo import load_pretrained

        return load_pretrained(name)
    try:
        builder = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    model = builder(**cfg)
    model.arch = name
    model.arch_config = dict(cfg)
    return model


# --- training recipes: one per method, a list of stages and the command-line options they own -------------

@dataclass(frozen=True)
class Recipe:
    """How ``models.train`` trains models of one method.

    ``stages(args)`` builds the list of ``stages.Stage``; ``arguments(parser)`` adds the options only this
    method reads (``models.train`` adds them when ``--model`` is of this method, so another method's option
    is an error); ``model_args(args)`` turns some of them into builder arguments (e.g. SkipNet's ``--gate``).
    """

    method: str
    stages: Callable
    arguments: Callable | None = None
    model_args: Callable | None = None


_RECIPES: dict[str, Recipe] = {}


def register_recipe(method: str, arguments: Callable | None = None, model_args: Callable | None = None):
    """Register ``fn(args) -> list[Stage]`` as the training recipe of models whose ``method`` is ``method``."""

    def wrap(fn: Callable) -> Callable:
        _RECIPES[method] = Recipe(method, fn, arguments, model_args)
        return fn

    return wrap


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
        return create_model(name).method
