"""SkipNet training (Wang et al., ECCV 2018): supervised pre-training, then hybrid reinforcement learning, then
optionally fine-tuning of the backbone under the learned policy (not in the paper). The forward modes each stage
uses (``"st"``, ``"sample"``, ``"infer"``) are described in ``models.skipnet``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..checkpoint import CheckpointError, load_checkpoint
from ..layers.skip_gates import GATE_KINDS
from ..options import option, options_of
from ..registry import register_recipe
from ..stages import FrozenCopy, Stage, StepOutput, distillation_loss, param_groups, unwrap


def freeze_batchnorm(model: nn.Module) -> None:
    """BN layers to eval mode: sampled paths must not rewrite the running statistics.

    Otherwise they become the statistics of randomly sampled paths, and test accuracy drops as soon as sampling
    starts.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def gate_returns(actions: torch.Tensor, ce: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Return of every gate, (N, G): ``alpha / G`` per skipped gate from this one on, plus ``-beta * CE``."""
    rewards = (1 - actions) * (alpha / actions.shape[1])
    to_go = rewards.flip(1).cumsum(1).flip(1)
    return to_go - beta * ce.unsqueeze(1)


def gate_log_probs(gate_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a) of Bernoulli(sigmoid(z)) actions, computed stably from the logits."""
    return torch.where(actions > 0.5, F.logsigmoid(gate_logits), F.logsigmoid(-gate_logits))


class SupervisedPretrainStage(Stage):
    """Stage 1 (SP): hard gates with a straight-through gradient, plain cross-entropy, SGD."""

    def __init__(self, epochs: int, lr: float, weight_decay: float = 5e-4) -> None:
        super().__init__("supervised-pretrain", epochs, lr, weight_decay)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        out = model(x, gate_mode="st")
        return StepOutput(F.cross_entropy(out.logits, y), out.logits)


class HybridRLStage(Stage):
    """Stage 2 (HRL): Bernoulli gates, REINFORCE with a self-critical baseline, plus CE through the sampled paths.

    Loss = CE(sampled) + rl_weight * mean_n( -sum_i log pi(a_i) * (R_i - R_i^greedy) ). The baseline
    (the return of the greedy policy on the same batch, self-critical as in BlockDrop) is not in the paper;
    it cuts the variance of REINFORCE. BatchNorm is frozen (running statistics used and kept), so test
    accuracy does not drop when sampling starts. Adam (default lr 1e-3), not the paper's SGD 1e-4 for 10k
    iterations: Adam's per-parameter steps let the gate biases move within the few epochs of a small run.
    """

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        alpha: float = 0.05,
        beta: float = 1.0,
        rl_weight: float = 1.0,
        backbone_lr: float | None = None,
    ) -> None:
        super().__init__("hybrid-rl", epochs, lr, weight_decay)
        self.alpha, self.beta, self.rl_weight = alpha, beta, rl_weight
        self.backbone_lr = lr if backbone_lr is None else backbone_lr

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam; the gates at ``lr``, the backbone (which only has to adapt to the skipping) at ``backbone_lr``."""
        gates = {id(p) for p in unwrap(model).gates.parameters()}
        params = self.parameters(model)
        groups = param_groups([p for p in params if id(p) in gates], self.weight_decay, self.lr) + param_groups(
            [p for p in params if id(p) not in gates], self.weight_decay, self.backbone_lr
        )
        return torch.optim.Adam(groups, lr=self.lr)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        net = unwrap(model)
        freeze_batchnorm(net)  # the trainer calls .train() every epoch; re-freeze every step (cheap, resume-safe)
        with torch.no_grad():  # self-critical baseline: the greedy policy, the one used at inference
            greedy = net(x, gate_mode="infer")
            baseline = gate_returns(
                greedy.actions, F.cross_entropy(greedy.logits, y, reduction="none"), self.alpha, self.beta
            )
        out = model(x, gate_mode="sample")
        ce = F.cross_entropy(out.logits, y, reduction="none")
        returns = gate_returns(out.actions, ce.detach(), self.alpha, self.beta)
        advantage = returns - baseline
        policy_loss = -(gate_log_probs(out.gate_logits, out.actions) * advantage).sum(1).mean()
        return StepOutput(ce.mean() + self.rl_weight * policy_loss, out.logits)


class PolicyFinetuneStage(Stage):
    """Stage 3 (not in the paper; off unless ``--ft-epochs``): the backbone fine-tuned under the learned policy.

    The gates decide as at inference (greedy), each block runs only on the samples that execute it, and
    BatchNorm trains again: hybrid RL kept the statistics of the network that runs every block, so a policy
    that skips many blocks meets mismatched statistics. Plain cross-entropy, SGD. BlockDrop ends with a joint
    fine-tuning too. With ``anchor_weight`` 0 the gate parameters stay as RL left them, but the features they
    read change with the backbone, so decisions (and mean MACs) drift. With ``anchor_weight`` > 0 the gates
    train as well, on a binary cross-entropy towards the decisions that a frozen copy of the model (taken when
    the stage starts) makes on the same images: the policy RL chose is kept while the backbone adapts to it.
    ``models.evaluate`` measures decisions and MACs again either way.

    With a ``teacher`` (any classifier of the same data set, e.g. the dense ResNet the SkipNet was initialized
    from) the cross-entropy becomes ``(1 - w) * CE + w * distillation`` (Hinton's soft targets at temperature
    4, ``w = distill_weight``): the skipping network learns the dense one's full output distribution, not
    only the labels. Not in the paper either; off unless ``--ft-teacher``.
    """

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        anchor_weight: float = 0.0,
        teacher: nn.Module | None = None,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__("policy-finetune", epochs, lr, weight_decay)
        if not 0.0 <= distill_weight <= 1.0:
            raise UsageError(f"--ft-distill must be in [0, 1], not {distill_weight}")
        self.anchor_weight = anchor_weight
        self.anchor = FrozenCopy()
        self.teacher = None if teacher is None else teacher.eval().requires_grad_(False)
        self.distill_weight = distill_weight

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.anchor_weight > 0:
            return super().parameters(model)
        gates = {id(p) for p in unwrap(model).gates.parameters()}
        return [p for p in model.parameters() if p.requires_grad and id(p) not in gates]

    def on_stage_start(self, trainer) -> None:
        self.anchor.reset()
        if self.anchor_weight > 0:
            self.anchor.of(trainer.model)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        unwrap(model).gates.eval()  # gate BatchNorm statistics stay fixed (the trainer calls .train())
        out = model(x, gate_mode="infer")
        loss = F.cross_entropy(out.logits, y)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            w = self.distill_weight
            loss = (1 - w) * loss + w * distillation_loss(out.logits, teacher_logits)
        if self.anchor_weight > 0:
            with torch.no_grad():
                reference = self.anchor.of(model).eval()(x, gate_mode="infer").actions
            loss = loss + self.anchor_weight * F.binary_cross_entropy_with_logits(out.gate_logits, reference)
        return StepOutput(loss, out.logits)

    def state_dict(self) -> dict:
        anchor = self.anchor.state_dict()
        return {} if anchor is None else {"anchor": anchor}

    def load_state_dict(self, state: dict) -> None:
        self.anchor.load_state_dict(state.get("anchor"))


@dataclass
class SkipNetOptions:
    alpha: float = option(
        0.05, "reward for skipping, shared over the gates (alpha / G each); more alpha, more skipping"
    )
    beta: float = option(1.0, "weight of -CE in the terminal reward")
    rl_epochs: int = option(3, "epochs of the hybrid RL stage")
    rl_lr: float = option(1e-3, "Adam learning rate of the RL stage")
    rl_backbone_lr: float | None = option(
        None, "Adam learning rate of the backbone in the RL stage (default: --rl-lr, as the gates)"
    )
    rl_weight: float = option(1.0, "weight of the REINFORCE term against the cross-entropy")
    ft_epochs: int = option(
        0, "epochs of backbone fine-tuning under the frozen greedy policy after RL (not in the paper)"
    )
    ft_lr: float = option(0.01, "SGD learning rate of that fine-tuning")
    ft_anchor: float = option(
        0.0, "weight of a loss that keeps the gates' decisions as they were when fine-tuning started (0: gates frozen)"
    )
    ft_teacher: str | None = option(
        None,
        "distil that fine-tuning from this model's outputs (e.g. the dense ResNet it started from)",
        metavar="CHECKPOINT",
    )
    ft_distill: float = option(0.5, "weight of the distillation term against the cross-entropy, in [0, 1]")
    gate: str | None = option(None, "SkipNet gate (default: the builder's, rnn)", choices=GATE_KINDS)


def skipnet_model_args(args: argparse.Namespace) -> dict:
    """``--gate`` chooses the builder's gate."""
    gate = options_of(SkipNetOptions, args).gate
    return {"gate": gate} if gate else {}


@register_recipe("skipnet", name="SkipNet", options=SkipNetOptions, model_args=skipnet_model_args, title="SkipNet")
def skipnet_recipe(args: argparse.Namespace) -> list[Stage]:
    """Supervised pre-training (``--epochs``, ``--lr``), hybrid RL (``--rl-epochs``, ``--rl-lr``), then optionally
    fine-tuning under the frozen policy (``--ft-epochs``, ``--ft-lr``)."""
    opt = options_of(SkipNetOptions, args)
    return [
        SupervisedPretrainStage(args.epochs, args.lr, args.weight_decay),
        HybridRLStage(
            opt.rl_epochs, opt.rl_lr, args.weight_decay, opt.alpha, opt.beta, opt.rl_weight, opt.rl_backbone_lr
        ),
        PolicyFinetuneStage(
            opt.ft_epochs,
            opt.ft_lr,
            args.weight_decay,
            opt.ft_anchor,
            load_teacher(opt.ft_teacher, args.dataset, args.device or "cpu"),
            opt.ft_distill,
        ),
    ]


def load_teacher(path: str | None, dataset: str | None, device: str = "cpu") -> nn.Module | None:
    """The distillation teacher, on the training device once (not moved every step), and refused early (before
    any training) if it was trained on other data."""
    if path is None:
        return None
    teacher = load_checkpoint(path, map_location=device)
    if dataset is not None and teacher.meta.get("dataset") != dataset:
        raise CheckpointError(f"{path}: --ft-teacher was trained on {teacher.meta.get('dataset')!r}, not {dataset!r}")
    return teacher
