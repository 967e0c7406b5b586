"""A training stage: epochs, optimizer, and the loss of one step. Recipes are lists of stages.

SkipNet (supervised, then RL), DS-Net (supernet, then gate) and RePr (prune/re-init cycles) are
multi-stage; each stage subclass overrides only what differs, and ``train.Trainer`` runs them all
with one loop, one checkpoint format and one ``--resume``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor


class Stage:
    """Supervised cross-entropy with SGD (momentum 0.9, Nesterov) and a per-step cosine schedule."""

    def __init__(self, name: str, epochs: int, lr: float, weight_decay: float = 5e-4, momentum: float = 0.9) -> None:
        self.name, self.epochs, self.lr = name, epochs, lr
        self.weight_decay, self.momentum = weight_decay, momentum

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Which parameters this stage trains (all, by default)."""
        return [p for p in model.parameters() if p.requires_grad]

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD over ``parameters(model)``, weight decay on weights only (``param_groups``)."""
        return torch.optim.SGD(
            param_groups(self.parameters(model), self.weight_decay),
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.momentum > 0,
        )

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits)

    # hooks for stateful stages (EMA teachers, pruning masks); the trainer checkpoints this state
    def on_stage_start(self, trainer) -> None: ...
    def on_epoch_end(self, trainer, epoch: int) -> None: ...
    def after_optimizer_step(self, trainer) -> None: ...
    def epoch_record(self) -> dict:
        """Extra JSON-safe keys for the history row of the epoch that just ended (read after on_epoch_end)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class FrozenCopy:
    """A frozen copy of the model being trained (an EMA teacher, a policy anchor), made on first use.

    A stage keeps one across ``--resume``: its ``state_dict`` goes into the stage's checkpointed state, and
    a loaded state is applied when the copy is next built from the (resumed) model.
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self._pending: dict | None = None

    def of(self, model: nn.Module) -> nn.Module:
        """The copy; on first use deep-copied from ``model`` (unwrapped from DDP), then given any loaded state."""
        if self.model is None:
            self.model = copy.deepcopy(unwrap(model)).requires_grad_(False)
            if self._pending is not None:
                self.model.load_state_dict(self._pending)
                self._pending = None
        return self.model

    def reset(self) -> None:
        self.model, self._pending = None, None

    def state_dict(self) -> dict | None:
        if self.model is not None:
            return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return self._pending

    def load_state_dict(self, state: dict | None) -> None:
        self.model, self._pending = None, state


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al.'s soft-target term, ``T^2 * KL(teacher_T || student_T)``; the ``T^2`` keeps its gradient
    on the scale of the cross-entropy's, whatever the temperature."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(logits / t, -1), F.log_softmax(teacher_logits / t, -1), reduction="batchmean", log_target=True
        )
        * t
        * t
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def param_groups(params: Iterable[nn.Parameter], weight_decay: float, lr: float | None = None) -> list[dict]:
    """Optimizer groups: ``weight_decay`` for weights (``ndim > 1``), none for biases and norm affines (``ndim <= 1``).

    The usual split (timm's ``param_groups_weight_decay``): biases and normalization affines set offsets and
    scales, not features, so they are not decayed. ``lr``, if given, goes into both groups (a per-part learning rate).
    Empty groups are left out, so the result can be concatenated with a caller's own groups.
    """
    params = list(params)
    extra = {} if lr is None else {"lr": lr}
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, **extra},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **extra},
    ]
    return [g for g in groups if g["params"]]
