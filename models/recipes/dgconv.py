"""DGConv training (GroupNet, Zhang et al., ICCV 2019): supervised cross-entropy plus a complexity budget on the
straight-through gates.

- Budget loss: a hinge ``CE + w * relu(r / budget - 1)`` on the complexity ratio ``r`` from the STE gates
  (default), or the paper's multiplicative ``CE * max(r / budget, 1)^w`` (= ``L * (o / zeta)^a`` with
  ``a = -w`` over budget).
- The gates train with plain SGD (no momentum, no weight decay, lr times ``--gate-lr-scale``): with
  momentum, the velocity built while over budget keeps flipping gates off long after the budget is met
  (a short run went 1.0 -> 0.13 for a 0.5 budget); without it the complexity settles around the budget.
  The one-sided term means the final complexity can sit a little above or below the target.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..dgconv import COMPLEXITY_KINDS
from ..options import option, options_of
from ..registry import register_recipe
from ..stages import Stage, StepOutput, param_groups, unwrap

BUDGET_LOSSES = ("hinge", "power")


def budget_loss(
    task_loss: torch.Tensor, ratio: torch.Tensor, budget: float, weight: float, form: str = "hinge"
) -> torch.Tensor:
    """Task loss plus the budget term; zero extra loss (and no gate gradient from it) under budget.

    ``"hinge"``: ``L + weight * relu(ratio / budget - 1)``. ``"power"``: the paper's ``L * (o / zeta)^a``,
    written ``L * max(ratio / budget, 1)^weight``.
    """
    over = ratio / budget
    if form == "hinge":
        return task_loss + weight * F.relu(over - 1)
    if form == "power":
        return task_loss * over.clamp(min=1.0) ** weight
    raise UsageError(f"budget loss must be one of {', '.join(BUDGET_LOSSES)}, not {form!r}")


class BudgetedStage(Stage):
    """Supervised cross-entropy through the masked convs, plus a complexity budget on the STE gates."""

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        budget: float = 0.5,
        budget_weight: float = 1.0,
        budget_loss: str = "hinge",
        complexity: str = "macs",
        gate_lr_scale: float = 1.0,
    ) -> None:
        super().__init__("budgeted", epochs, lr, weight_decay)
        self.gate_lr_scale = gate_lr_scale
        if not 0 < budget <= 1:
            raise UsageError(f"--budget is a fraction of the dense complexity in (0, 1], got {budget}")
        if budget_loss not in BUDGET_LOSSES or complexity not in COMPLEXITY_KINDS:
            raise UsageError(f"budget loss {budget_loss!r} / complexity {complexity!r} unknown")
        self.budget, self.budget_weight = budget, budget_weight
        self.budget_loss, self.complexity = budget_loss, complexity

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Weights as in ``Stage`` (SGD, Nesterov momentum); gates ``theta`` with plain SGD (see the module
        docstring)."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        gates = [p for n, p in named if n.endswith(".theta")]
        weights = [p for n, p in named if not n.endswith(".theta")]
        groups = param_groups(weights, self.weight_decay) + [
            {
                "params": gates,
                "weight_decay": 0.0,
                "momentum": 0.0,
                "nesterov": False,
                "lr": self.lr * self.gate_lr_scale,
            }
        ]
        return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        logits = model(x)
        ratio = unwrap(model).complexity_ratio(self.complexity)
        loss = budget_loss(F.cross_entropy(logits, y), ratio, self.budget, self.budget_weight, self.budget_loss)
        return StepOutput(loss, logits)

    def on_epoch_end(self, trainer, epoch: int) -> None:
        net = unwrap(trainer.model)
        if getattr(trainer, "rank", 0) == 0:
            with torch.no_grad():
                ratio = float(net.complexity_ratio(self.complexity))
            groups = [layer.groups() for _, layer in net.dg_layers()]
            print(
                f"[dgconv] complexity {ratio:.3f} of dense (budget {self.budget}); groups per layer {groups}",
                file=sys.stderr,
                flush=True,
            )


@dataclass
class DGConvOptions:
    budget: float = option(0.5, "target complexity as a fraction of the dense DGConv layers (e.g. 0.5)")
    budget_weight: float = option(1.0, "weight of the hinge term (or the exponent |a| of the power form)")
    budget_loss: str = option(
        "hinge", "hinge: CE + w*relu(r/budget - 1); power: the paper's CE * max(r/budget, 1)^w", choices=BUDGET_LOSSES
    )
    budget_complexity: str = option(
        "macs", "macs: nnz(U) * k^2 * H*W per layer; nnz: the paper's sum of nnz(U)", choices=COMPLEXITY_KINDS
    )
    gate_lr_scale: float = option(
        1.0, "learning rate of the gate parameters theta, as a multiple of --lr (plain SGD, no momentum)"
    )


@register_recipe("dgconv", name="DGConv", options=DGConvOptions, title="DGConv")
def dgconv_recipe(args: argparse.Namespace) -> list[Stage]:
    """One supervised stage (``--epochs``, ``--lr``) with the budget term on the gates."""
    opt = options_of(DGConvOptions, args)
    return [
        BudgetedStage(
            args.epochs,
            args.lr,
            args.weight_decay,
            opt.budget,
            opt.budget_weight,
            opt.budget_loss,
            opt.budget_complexity,
            opt.gate_lr_scale,
        )
    ]
