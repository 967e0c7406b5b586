"""DS-Net training (Li et al., CVPR 2021): an In-place Ensemble Bootstrapping supernet, BN recalibration, then
Sandwich Gate Sparsification of the width gates (the model is ``models.dsnet.DSResNet``).

1. ``SupernetStage``, In-place Ensemble Bootstrapping: each step the widest, two random and the narrowest
   subnets (sandwich rule). The widest learns from labels; the random ones from the EMA teacher's widest
   softmax; the narrowest from the mean of the EMA teacher's softmaxes at the widest and the two random
   configurations. The teacher is an EMA of the supernet (``--ema-decay`` 0.997 per step: parameters
   averaged, buffers copied) and is part of the stage's state_dict, so ``--resume`` continues it. After
   the last epoch every width's BN statistics are recalibrated (cumulative average over
   ``--recalibration-batches`` un-augmented training batches, for a set of configurations that covers
   every (previous width, width) pair).
2. ``GateStage``, Sandwich Gate Sparsification: the supernet is frozen (parameters and BN statistics);
   only the gates (shared reduce conv, SE head, width head) train, with Adam (``--gate-lr``). Per sample,
   the narrowest subnet's prediction labels it easy (target: narrowest width) or hard (target: widest),
   as the reference. Loss = CE(dynamic logits, labels) + mean over gates of CE(width logits, target)
   + ``--complexity-weight`` * mean over gates and samples of E_p[w^2] (the expected relative MACs of a
   stage at width w under the softmax of the width head).

What the gradients see (deviations from the paper, by design): routing is hard argmax in training as in
inference, with no Gumbel noise and no straight-through estimator. The task loss therefore trains the SE
heads and the shared reduce conv (the attention scales the features of the path actually taken), while
the width head learns from the SGS targets and the complexity penalty only; a straight-through term
through the chosen width would need the unchosen widths' features, which slicing never computes. The
reference (Gumbel straight-through, noise left on in eval) masks a full-width tensor, so it saves
nothing; here an image routed narrow really multiplies fewer numbers. Other differences: the random
subnets draw a width per dynamic stage independently (the reference's "uniform" mode draws one ratio for
the whole net), since the gates later combine widths freely; the EMA teacher normalizes with batch
statistics (the reference runs timm's EMA model in eval mode; running statistics of rarely drawn width
pairs lag behind, batch statistics do not); the complexity penalty is the expected relative width cost
rather than the reference's squared absolute GMACs; an untrained width head starts at the widest width
(bias), so stage 1 reports full-width accuracy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ..errors import UsageError
from ..dsnet import Config, DSResNet
from ..layers.slimmable import SlimBatchNorm2d
from ..options import option, options_of
from ..registry import register_recipe
from ..stages import FrozenCopy, Stage, StepOutput, unwrap


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (SlimBatchNorm2d, nn.modules.batchnorm._BatchNorm))]


def sample_sandwich(model: DSResNet, num_random: int = 2, generator: torch.Generator | None = None) -> list[Config]:
    """Widest, ``num_random`` random (a width per dynamic stage, independently) and narrowest configurations."""
    d, n = len(model.dynamic_stages), model.num_choices
    randoms = [tuple(torch.randint(n, (d,), generator=generator).tolist()) for _ in range(num_random)]
    return [model.widest_config, *randoms, model.narrowest_config]


def ieb_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """In-place Ensemble Bootstrapping over the sandwich ``[widest, random..., narrowest]``.

    ``student``: (K, N, classes) logits of the K configurations; ``teacher``: (K - 1, N, classes) EMA
    logits of all but the narrowest. Widest <- labels; random <- EMA widest; narrowest <- mean of the EMA
    softmaxes (widest and random).
    """
    probs = teacher.softmax(-1)
    loss = F.cross_entropy(student[0], labels)
    for logits in student[1:-1]:
        loss = loss + F.cross_entropy(logits, probs[0])  # probabilities as targets: the soft cross-entropy
    return loss + F.cross_entropy(student[-1], probs.mean(0))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for parameters (``AveragedModel``'s own EMA function,
    ``get_ema_multi_avg_fn``); buffers are copied. The ``AveragedModel`` wrapper itself is not used: its first update
    copies instead of averaging, and the teacher must stay a plain ``DSResNet`` that resumes from a state dict."""
    get_ema_multi_avg_fn(decay)(list(teacher.parameters()), list(student.parameters()), None)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


@torch.no_grad()
def recalibrate_bn(model: DSResNet, batches: Iterable[torch.Tensor], configs: Sequence[Config] | None = None) -> int:
    """Re-estimate every width's BN statistics: reset, then a cumulative average over ``batches`` x ``configs``.

    Returns the number of batches used. ``configs`` defaults to ``model.calibration_configs()``, which
    reaches every row of every BN.
    """
    configs = list(configs or model.calibration_configs())
    norms = _norm_layers(model)
    saved, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for x in batches:
            for config in configs:
                model(x, configs=[config])
            used += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    if used == 0:
        raise UsageError("BN recalibration needs at least one batch")
    return used


def recalibrate_from_trainer(trainer, batches: int) -> int:
    """BN recalibration on the first ``batches`` un-augmented training batches of ``trainer``'s data."""
    count = max(1, min(batches, trainer.steps_per_epoch()))
    loader = trainer.loader(trainer.train_data, train=True, epoch=0)
    inputs = (trainer.to_input(images) for _, (images, _) in zip(range(count), loader))
    return recalibrate_bn(unwrap(trainer.model), inputs)


def sgs_targets(narrow_logits: torch.Tensor, labels: torch.Tensor, num_choices: int) -> torch.Tensor:
    """Sandwich Gate Sparsification: narrowest (0) where the narrowest subnet is right, else widest (n - 1)."""
    easy = narrow_logits.argmax(1) == labels
    return torch.where(easy, torch.zeros_like(labels), torch.full_like(labels, num_choices - 1))


def sgs_gate_loss(width_logits: torch.Tensor, target: torch.Tensor, hard_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the width head on the SGS targets; ``hard_weight`` > 1 (not in the paper) weighs the hard
    (widest) targets up, against the imbalance when the narrowest subnet is right on most images."""
    weight = torch.ones(width_logits.shape[-1], dtype=width_logits.dtype, device=width_logits.device)
    weight[-1] = hard_weight
    return F.cross_entropy(width_logits, target, weight=weight)


def expected_cost(width_logits: torch.Tensor, widths_choices: Sequence[float]) -> torch.Tensor:
    """Mean over samples and gates of E_p[w^2]: the expected relative MACs of a stage (a slimmed conv costs ~w^2)."""
    cost = torch.tensor(widths_choices, dtype=width_logits.dtype, device=width_logits.device) ** 2
    return (width_logits.softmax(-1) * cost).sum(-1).mean()


class SupernetStage(Stage):
    """Stage 1: the slimmable supernet with the sandwich rule and In-place Ensemble Bootstrapping."""

    def __init__(
        self,
        epochs: int,
        lr: float,
        weight_decay: float = 5e-4,
        ema_decay: float = 0.997,
        recalibration_batches: int = 20,
    ) -> None:
        super().__init__("supernet-ieb", epochs, lr, weight_decay)
        self.ema_decay, self.recalibration_batches = ema_decay, recalibration_batches
        self.snapshot = FrozenCopy()

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        model.requires_grad_(True)
        return super().optimizer(model)

    def on_stage_start(self, trainer) -> None:
        self.snapshot.reset()
        self.teacher_for(trainer.model)

    def teacher_for(self, model: nn.Module) -> DSResNet:
        """The EMA teacher, built from the model on first use (and loaded from a resumed state)."""
        return self.snapshot.of(model)

    @property
    def teacher(self) -> DSResNet | None:
        return self.snapshot.model

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        net = unwrap(model)
        teacher = self.teacher_for(net)
        configs = sample_sandwich(net)
        student = model(x, configs=configs)
        with torch.no_grad():
            teacher.train()  # batch statistics: see the module docstring
            guide = teacher(x, configs=configs[:-1])
        return StepOutput(ieb_loss(student, guide, y), student[0])

    def after_optimizer_step(self, trainer) -> None:
        ema_update(self.teacher_for(trainer.model), unwrap(trainer.model), self.ema_decay)

    def on_epoch_end(self, trainer, epoch: int) -> None:
        if epoch == self.epochs - 1 and self.recalibration_batches > 0:
            recalibrate_from_trainer(trainer, self.recalibration_batches)

    def state_dict(self) -> dict:
        ema = self.snapshot.state_dict()
        return {} if ema is None else {"ema": ema}

    def load_state_dict(self, state: dict) -> None:
        self.snapshot.load_state_dict(state.get("ema"))


class GateStage(Stage):
    """Stage 2: frozen supernet, gates trained with Sandwich Gate Sparsification + task loss + complexity (Adam)."""

    def __init__(
        self,
        epochs: int,
        lr: float = 1e-3,
        complexity_weight: float = 0.1,
        recalibrate: bool = False,
        recalibration_batches: int = 20,
        hard_weight: float = 1.0,
    ) -> None:
        super().__init__("gate-sgs", epochs, lr, weight_decay=0.0)
        self.complexity_weight, self.recalibrate, self.recalibration_batches = (
            complexity_weight,
            recalibrate,
            recalibration_batches,
        )
        self.hard_weight = hard_weight

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        net = unwrap(model)
        net.requires_grad_(False)
        net.gates.requires_grad_(True)
        return torch.optim.Adam(net.gate_parameters(), lr=self.lr)

    def on_stage_start(self, trainer) -> None:
        if self.recalibrate and self.recalibration_batches > 0:  # no supernet stage ran in this recipe
            recalibrate_from_trainer(trainer, self.recalibration_batches)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        net = unwrap(model)
        for m in _norm_layers(net):  # the trainer calls .train() every epoch: keep the calibrated statistics
            m.eval()
        with torch.no_grad():
            narrow = net(x, configs=[net.narrowest_config])[0]
        target = sgs_targets(narrow, y, net.num_choices)
        out = model(x, return_gates=True)
        d = out.width_logits.shape[1]
        gate_loss = sgs_gate_loss(
            out.width_logits.reshape(-1, net.num_choices), target.repeat_interleave(d), self.hard_weight
        )
        loss = (
            F.cross_entropy(out.logits, y)
            + gate_loss
            + self.complexity_weight * expected_cost(out.width_logits, net.widths_choices)
        )
        return StepOutput(loss, out.logits)


@dataclass
class DSNetOptions:
    supernet_epochs: int | None = option(None, "epochs of the IEB supernet stage (default: --epochs)")
    gate_epochs: int = option(3, "epochs of the SGS gate stage")
    gate_lr: float = option(1e-3, "Adam learning rate of the gate stage")
    complexity_weight: float = option(0.1, "weight of the expected-width-cost penalty on the gates; more, narrower")
    hard_weight: float = option(
        1.0,
        "weight of the hard (widest) SGS target in the gate loss; > 1 when the narrowest "
        "subnet is right on most images (not in the paper)",
    )
    ema_decay: float = option(0.997, "per-step decay of the EMA teacher")
    recalibration_batches: int = option(
        20, "training batches used to re-estimate each width's BN statistics after the supernet stage"
    )


@register_recipe("dsnet", name="DS-Net", options=DSNetOptions, title="DS-Net")
def dsnet_recipe(args: argparse.Namespace) -> list[Stage]:
    """IEB supernet (``--supernet-epochs``, ``--lr``), BN recalibration, then SGS gate training (``--gate-epochs``)."""
    opt = options_of(DSNetOptions, args)
    supernet_epochs = args.epochs if opt.supernet_epochs is None else opt.supernet_epochs
    stages: list[Stage] = []
    if supernet_epochs > 0:
        stages.append(
            SupernetStage(supernet_epochs, args.lr, args.weight_decay, opt.ema_decay, opt.recalibration_batches)
        )
    if opt.gate_epochs > 0:
        stages.append(
            GateStage(
                opt.gate_epochs,
                opt.gate_lr,
                opt.complexity_weight,
                recalibrate=supernet_epochs <= 0,
                recalibration_batches=opt.recalibration_batches,
                hard_weight=opt.hard_weight,
            )
        )
    return stages
