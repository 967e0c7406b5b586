"""Plain supervised training (the ``baseline`` method: ResNet, ConvNet): one stage of cross-entropy, SGD, cosine."""

from __future__ import annotations

import argparse

from ..registry import register_recipe
from ..stages import Stage


@register_recipe("baseline")
def supervised_recipe(args: argparse.Namespace) -> list[Stage]:
    """Plain training: one supervised stage."""
    return [Stage("supervised", args.epochs, args.lr, args.weight_decay)]
