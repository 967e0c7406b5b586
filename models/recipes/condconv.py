"""CondConv training: one supervised stage with the baseline's budget; the expert kernels may get their own
weight decay (``--expert-weight-decay``). ``--init-from`` a plain ResNet upcycles it (``CondConvResNet.upcycle``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers.condconv import CondConv2d
from ..options import option, options_of
from ..registry import register_recipe
from ..stages import Stage, param_groups


class CondConvStage(Stage):
    """Supervised cross-entropy (as the baseline); the expert kernels may get their own weight decay."""

    def __init__(
        self, epochs: int, lr: float, weight_decay: float = 5e-4, expert_weight_decay: float | None = None
    ) -> None:
        super().__init__("supervised", epochs, lr, weight_decay)
        self.expert_weight_decay = weight_decay if expert_weight_decay is None else expert_weight_decay

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        experts = {id(m.weight) for m in model.modules() if isinstance(m, CondConv2d)}
        params = self.parameters(model)
        groups = [
            {"params": [p for p in params if id(p) in experts], "weight_decay": self.expert_weight_decay},
            *param_groups([p for p in params if id(p) not in experts], self.weight_decay),
        ]
        return torch.optim.SGD(
            [g for g in groups if g["params"]], lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0
        )


@dataclass
class CondConvOptions:
    expert_weight_decay: float | None = option(
        None, "weight decay of the CondConv expert kernels (default: --weight-decay)"
    )


@register_recipe(
    "condconv",
    name="CondConv",
    options=CondConvOptions,
    title='CondConv (builder options via --model-args \'{"num_experts": 8, "condconv_stages": [2, 3]}\')',
)
def condconv_recipe(args: argparse.Namespace) -> list[Stage]:
    """One supervised stage with the baseline's epochs, lr and weight decay."""
    return [
        CondConvStage(args.epochs, args.lr, args.weight_decay, options_of(CondConvOptions, args).expert_weight_decay)
    ]
