"""SkipNet (Wang et al., ECCV 2018): a gate before each residual block decides, per image, whether it runs.

``x_{i+1} = g_i * F_i(x_i) + (1 - g_i) * shortcut_i(x_i)``; the gate of block ``i`` reads block ``i``'s
input (the previous block's output). The first block always runs; downsampling blocks are gated too and,
when skipped, run only their projection shortcut.

Forward modes (``model(x, gate_mode=...)``):

- ``"infer"`` (the default in eval mode): hard gates ``p > 0.5``, deterministic, TRUE skipping: a block
  runs only on the samples whose gate is on (index, compute, scatter back), so batch 1 does not compute
  a skipped block at all. Decisions and executed MACs go to the active ``models.trace.Trace``.
- ``"st"`` (the default in train mode): stage 1, supervised pre-training. Hard gates forward,
  straight-through sigmoid gradient backward; every block is computed and mixed with the gate, because
  the gate needs the gradient of both paths.
- ``"sample"``: stage 2, hybrid RL. Bernoulli actions drawn from ``p``; masked like ``"st"``.
- ``"greedy"``: hard ``p > 0.5`` gates with the masked computation (a reference for true skipping).

``model(x)`` returns logits; with an explicit ``gate_mode`` it returns ``GateOutput`` (logits, probs,
actions, gate_logits), which passes through DistributedDataParallel, so the RL loss keeps its gradient
sync. No mode mutates the model, so one model can serve many requests at once.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_checkpoint
from .registry import register_model, register_recipe
from .resnet import ResNet
from .skipnet_gates import GATE_KINDS, GateBank, build_gates
from .stages import FrozenCopy, Stage, StepOutput, distillation_loss
from .trace import current_trace
from .decisions import DecisionKind, register_kind

GATE_MODES = ("infer", "st", "sample", "greedy")


SKIP = register_kind(DecisionKind(
    "skip", "skipnet", "image",
    {"executed": ("boolean", "the block ran (its gate probability exceeded the threshold)"),
     "probability": ("number", "the gate's probability that the block runs")},
    "a gated residual block, run or skipped",
    signature=lambda d: int(d["executed"])))


class GateOutput(NamedTuple):
    """What a SkipNet forward decided; G = number of gated blocks (all blocks but the first)."""

    logits: torch.Tensor        # (N, classes)
    probs: torch.Tensor         # (N, G) probability that each gated block runs
    actions: torch.Tensor       # (N, G) float, 1 = block ran, 0 = skipped
    gate_logits: torch.Tensor   # (N, G) probs = sigmoid(gate_logits); exact log-probabilities for RL


class SkipNet(ResNet):
    """CIFAR-style ResNet (``models.resnet`` layout and names) with a gate before every block but the first."""

    method = "skipnet"

    def __init__(self, depth: int = 38, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn") -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        named = self.named_blocks()
        self.gate_kind = gate
        self.gate_names: tuple[str, ...] = tuple(name for name, _ in named[1:])
        self.gates: GateBank = build_gates(gate, [block.conv1.in_channels for _, block in named[1:]])

    @property
    def num_gates(self) -> int:
        return len(self.gate_names)

    def forward(self, x: torch.Tensor, gate_mode: str | None = None) -> torch.Tensor | GateOutput:
        """Logits by default (``"infer"`` in eval, ``"st"`` in train); ``GateOutput`` when ``gate_mode`` is given."""
        mode = gate_mode or ("st" if self.training else "infer")
        if mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {', '.join(GATE_MODES)}, not {mode!r}")
        out = self._forward_skipping(x) if mode == "infer" else self._forward_masked(x, mode)
        return out.logits if gate_mode is None else out

    def _forward_skipping(self, x: torch.Tensor) -> GateOutput:
        """Hard gates, true skipping on the subset of samples whose gate is on; records to the active trace."""
        trace = current_trace()
        blocks = [block for _, block in self.named_blocks()]
        x = blocks[0](self.stem(x))
        state = self.gates.initial_state(x)
        probs, actions, gate_logits = [], [], []
        for index, (name, block) in enumerate(zip(self.gate_names, blocks[1:])):
            z, state = self.gates.step(index, x, state)
            p = torch.sigmoid(z)
            on = p > 0.5
            if trace is not None:
                trace.record(name, "skip", executed=on, probability=p)
            shortcut = block.shortcut(x)  # a skipped identity block returns x itself; a skipped downsampler its projection
            if bool(on.all()):
                x = F.relu(block.residual(x) + shortcut)
            elif bool(on.any()):
                rows = on.nonzero().squeeze(1)
                with trace.subset(rows) if trace is not None else nullcontext():
                    ran = F.relu(block.residual(x.index_select(0, rows)) + shortcut.index_select(0, rows))
                x = shortcut.index_copy(0, rows, ran)  # a new tensor: the skipped rows keep their shortcut
            else:
                x = shortcut
            probs.append(p)
            actions.append(on.to(p.dtype))
            gate_logits.append(z)
        return GateOutput(self.head(x), torch.stack(probs, 1), torch.stack(actions, 1), torch.stack(gate_logits, 1))

    def _forward_masked(self, x: torch.Tensor, mode: str) -> GateOutput:
        """Every block on every sample, mixed with the gate: the training forms, which need both paths."""
        blocks = [block for _, block in self.named_blocks()]
        x = blocks[0](self.stem(x))
        state = self.gates.initial_state(x)
        probs, actions, gate_logits = [], [], []
        for index, block in enumerate(blocks[1:]):
            z, state = self.gates.step(index, x, state)
            p = torch.sigmoid(z)
            if mode == "sample":
                action = torch.bernoulli(p.detach())
                g = action  # REINFORCE trains the gate; CE flows through the sampled path only
            else:
                action = (p.detach() > 0.5).to(p.dtype)
                g = action - p.detach() + p if mode == "st" else action
            g = g.view(-1, 1, 1, 1)
            shortcut = block.shortcut(x)  # computed once: a BN called twice would update its statistics twice
            x = g * F.relu(block.residual(x) + shortcut) + (1 - g) * shortcut
            probs.append(p)
            actions.append(action)
            gate_logits.append(z)
        return GateOutput(self.head(x), torch.stack(probs, 1), torch.stack(actions, 1), torch.stack(gate_logits, 1))

    def benchmark_references(self) -> dict:
        """For ``analysis.bench``: the same model and decisions, computing every block and masking (the reference code's way)."""
        return {"same gates, masked (all blocks)": lambda x: self(x, gate_mode="greedy").logits}

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet with this backbone's weights: every block executed, no gates (``cost.full_macs``)."""
        dense = ResNet(self.depth, self.fc.out_features, self.stem[0].in_channels, self.widths)
        dense.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("gates.")})
        return dense.to(self.fc.weight.device).train(self.training)


def _skipnet(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64),
                gate: str = "rnn") -> SkipNet:
        return SkipNet(depth, num_classes, in_chans, tuple(widths), gate)

    builder.__name__ = f"skipnet_resnet{depth}"
    builder.__doc__ = f"SkipNet on ResNet-{depth}; gate 'rnn' (default), 'ff1' or 'ff2'."
    return register_model(builder)


(skipnet_resnet8, skipnet_resnet20, skipnet_resnet32, skipnet_resnet38, skipnet_resnet56, skipnet_resnet74,
 skipnet_resnet110) = (_skipnet(d) for d in (8, 20, 32, 38, 56, 74, 110))


# --- training recipe: supervised pre-training, then hybrid reinforcement learning ---------------------

def _unwrap(model: nn.Module) -> nn.Module:
    """The SkipNet inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def freeze_batchnorm(model: nn.Module) -> None:
    """BN layers to eval mode: sampled paths must not rewrite the running statistics (METHODS.md failure #9)."""
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

    def __init__(self, epochs: int, lr: float, weight_decay: float = 5e-4, alpha: float = 0.05, beta: float = 1.0,
                 rl_weight: float = 1.0, backbone_lr: float | None = None) -> None:
        super().__init__("hybrid-rl", epochs, lr, weight_decay)
        self.alpha, self.beta, self.rl_weight = alpha, beta, rl_weight
        self.backbone_lr = lr if backbone_lr is None else backbone_lr

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam; the gates at ``lr``, the backbone (which only has to adapt to the skipping) at ``backbone_lr``."""
        gates = {id(p) for p in _unwrap(model).gates.parameters()}
        groups = []
        for part_lr, in_part in ((self.lr, lambda p: id(p) in gates), (self.backbone_lr, lambda p: id(p) not in gates)):
            params = [p for p in self.parameters(model) if in_part(p)]
            groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.weight_decay, "lr": part_lr},
                       {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": part_lr}]
        return torch.optim.Adam([g for g in groups if g["params"]], lr=self.lr)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        net = _unwrap(model)
        freeze_batchnorm(net)  # the trainer calls .train() every epoch; re-freeze every step (cheap, resume-safe)
        with torch.no_grad():  # self-critical baseline: the greedy policy, the one used at inference
            greedy = net(x, gate_mode="infer")
            baseline = gate_returns(greedy.actions, F.cross_entropy(greedy.logits, y, reduction="none"), self.alpha, self.beta)
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

    def __init__(self, epochs: int, lr: float, weight_decay: float = 5e-4, anchor_weight: float = 0.0,
                 teacher: nn.Module | None = None, distill_weight: float = 0.5) -> None:
        super().__init__("policy-finetune", epochs, lr, weight_decay)
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"--ft-distill must be in [0, 1], not {distill_weight}")
        self.anchor_weight = anchor_weight
        self.anchor = FrozenCopy()
        self.teacher = None if teacher is None else teacher.eval().requires_grad_(False)
        self.distill_weight = distill_weight

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.anchor_weight > 0:
            return super().parameters(model)
        gates = {id(p) for p in _unwrap(model).gates.parameters()}
        return [p for p in model.parameters() if p.requires_grad and id(p) not in gates]

    def on_stage_start(self, trainer) -> None:
        self.anchor.reset()
        if self.anchor_weight > 0:
            self.anchor.of(trainer.model)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        _unwrap(model).gates.eval()  # gate BatchNorm statistics stay fixed (the trainer calls .train())
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


SKIPNET_DEFAULTS = {"alpha": 0.05, "beta": 1.0, "rl_epochs": 3, "rl_lr": 1e-3, "rl_weight": 1.0, "rl_backbone_lr": None,
                    "ft_epochs": 0, "ft_lr": 0.01, "ft_anchor": 0.0, "ft_teacher": None, "ft_distill": 0.5}


def add_skipnet_arguments(parser: argparse.ArgumentParser) -> None:
    """SkipNet options for ``models.train``'s parser (other methods ignore them)."""
    g = parser.add_argument_group("SkipNet")
    g.add_argument("--alpha", type=float, default=SKIPNET_DEFAULTS["alpha"],
                   help="reward for skipping, shared over the gates (alpha / G each); more alpha, more skipping")
    g.add_argument("--beta", type=float, default=SKIPNET_DEFAULTS["beta"], help="weight of -CE in the terminal reward")
    g.add_argument("--rl-epochs", type=int, default=SKIPNET_DEFAULTS["rl_epochs"], help="epochs of the hybrid RL stage")
    g.add_argument("--rl-lr", type=float, default=SKIPNET_DEFAULTS["rl_lr"], help="Adam learning rate of the RL stage")
    g.add_argument("--rl-backbone-lr", type=float, default=None,
                   help="Adam learning rate of the backbone in the RL stage (default: --rl-lr, as the gates)")
    g.add_argument("--rl-weight", type=float, default=SKIPNET_DEFAULTS["rl_weight"],
                   help="weight of the REINFORCE term against the cross-entropy")
    g.add_argument("--ft-epochs", type=int, default=SKIPNET_DEFAULTS["ft_epochs"],
                   help="epochs of backbone fine-tuning under the frozen greedy policy after RL (not in the paper)")
    g.add_argument("--ft-lr", type=float, default=SKIPNET_DEFAULTS["ft_lr"], help="SGD learning rate of that fine-tuning")
    g.add_argument("--ft-anchor", type=float, default=SKIPNET_DEFAULTS["ft_anchor"],
                   help="weight of a loss that keeps the gates' decisions as they were when fine-tuning started (0: gates frozen)")
    g.add_argument("--ft-teacher", default=None, metavar="CHECKPOINT",
                   help="distil that fine-tuning from this model's outputs (e.g. the dense ResNet it started from)")
    g.add_argument("--ft-distill", type=float, default=SKIPNET_DEFAULTS["ft_distill"],
                   help="weight of the distillation term against the cross-entropy, in [0, 1]")
    g.add_argument("--gate", choices=GATE_KINDS, default=None, help="SkipNet gate (default: the builder's, rnn)")


def skipnet_model_args(args: argparse.Namespace) -> dict:
    """``--gate`` chooses the builder's gate."""
    return {"gate": args.gate} if args.gate else {}


@register_recipe("skipnet", arguments=add_skipnet_arguments, model_args=skipnet_model_args)
def skipnet_recipe(args: argparse.Namespace) -> list[Stage]:
    """Supervised pre-training (``--epochs``, ``--lr``), hybrid RL (``--rl-epochs``, ``--rl-lr``), then optionally
    fine-tuning under the frozen policy (``--ft-epochs``, ``--ft-lr``)."""
    opt = {k: getattr(args, k, v) for k, v in SKIPNET_DEFAULTS.items()}
    weight_decay = getattr(args, "weight_decay", 5e-4)
    return [
        SupervisedPretrainStage(args.epochs, args.lr, weight_decay),
        HybridRLStage(opt["rl_epochs"], opt["rl_lr"], weight_decay, opt["alpha"], opt["beta"], opt["rl_weight"],
                      opt["rl_backbone_lr"]),
        PolicyFinetuneStage(opt["ft_epochs"], opt["ft_lr"], weight_decay, opt["ft_anchor"],
                            load_teacher(opt["ft_teacher"], getattr(args, "dataset", None), getattr(args, "device", "cpu")),
                            opt["ft_distill"]),
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
