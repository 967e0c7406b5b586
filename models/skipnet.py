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

import math
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .layers.skip_gates import GateBank, build_gates
from .registry import register_model
from .resnet import RESNET50, RESNET50_WIDTHS, RESNET101, ResNet
from .trace import PerRow, Trace, current_trace
from .decisions import DecisionKind, register_kind

GATE_MODES = ("infer", "st", "sample", "greedy")


SKIP = register_kind(
    DecisionKind(
        "skip",
        "skipnet",
        "image",
        {
            "executed": ("boolean", "the block ran (its gate probability exceeded the threshold)"),
            "probability": ("number", "the gate's probability that the block runs"),
        },
        "a gated residual block, run or skipped",
        signature=lambda d: int(d["executed"]),
        forcible=("executed",),
    )
)


class GateOutput(NamedTuple):
    """What a SkipNet forward decided; G = number of gated blocks (all blocks but the first)."""

    logits: torch.Tensor  # (N, classes)
    probs: torch.Tensor  # (N, G) probability that each gated block runs
    actions: torch.Tensor  # (N, G) float, 1 = block ran, 0 = skipped
    gate_logits: torch.Tensor  # (N, G) probs = sigmoid(gate_logits); exact log-probabilities for RL


class SkipNet(ResNet):
    """ResNet (``models.resnet`` layout and names) with a gate before every block but the first."""

    method = "skipnet"

    def __init__(
        self,
        depth: int = 38,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        gate: str = "rnn",
        **backbone,
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths), **backbone)
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
        if x.device.type == "meta":
            # a size estimate (``checkpoint.activation_bytes``) has no values to decide on: every block runs, the
            # upper bound of the real forward, instead of failing and falling back to a far larger guess
            mode = "greedy" if mode == "infer" else mode
        trace = current_trace()
        if mode == "infer" and gate_mode is None and x.shape[0] == 1 and (trace is None or not trace.observe):
            return self._forward_one(x, trace)
        out = self._forward_skipping(x) if mode == "infer" else self._forward_masked(x, mode)
        return out.logits if gate_mode is None else out

    def _forward_one(self, x: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
        """Batch 1 with nothing to record (plain inference, or a forced path being timed): the same decisions as
        ``_forward_skipping`` taken with Python control flow and no per-gate bookkeeping."""
        threshold = trace.knob("threshold", 0.5) if trace is not None else 0.5
        blocks = [block for _, block in self.named_blocks()]
        x = blocks[0](self.stem(x))
        state = self.gates.initial_state_one(x)
        for index, (name, block) in enumerate(zip(self.gate_names, blocks[1:])):
            z, state = self.gates.step_one(index, x, state)
            forced = trace.forced(name, SKIP) if trace is not None else None
            if (1.0 / (1.0 + math.exp(-z)) > threshold) if forced is None else bool(forced):
                x = F.relu(block.residual(x) + block.shortcut(x))
            else:
                x = block.shortcut(x)
        return self.head(x)

    def _forward_skipping(self, x: torch.Tensor) -> GateOutput:
        """Hard gates, true skipping on the subset of samples whose gate is on; records to the active trace."""
        trace = current_trace()
        threshold = trace.knob("threshold", 0.5) if trace is not None else 0.5
        blocks = [block for _, block in self.named_blocks()]
        x = blocks[0](self.stem(x))
        state = self.gates.initial_state(x)
        probs, actions, gate_logits = [], [], []
        for index, (name, block) in enumerate(zip(self.gate_names, blocks[1:])):
            z, state = self.gates.step(index, x, state)
            p = torch.sigmoid(z)
            on = p > threshold
            forced = trace.forced(name, SKIP) if trace is not None else None
            if isinstance(forced, PerRow):
                on = torch.tensor(forced, dtype=torch.bool, device=on.device)
            elif forced is not None:
                on = torch.full_like(on, bool(forced))
            if trace is not None:
                trace.record(name, SKIP, executed=on, probability=p, **({"forced": True} if forced is not None else {}))
            shortcut = block.shortcut(
                x
            )  # a skipped identity block returns x itself; a skipped downsampler its projection
            rows = on.nonzero().squeeze(1)  # the block's one host read: how many rows run it
            if len(rows) == len(x):
                x = F.relu(block.residual(x) + shortcut)
            elif len(rows):
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

    def decision_layers(self) -> dict[str, str]:
        return {name: SKIP.name for name in self.gate_names}

    def costliest_path(self) -> dict[str, dict]:
        return {name: {"executed": True} for name in self.gate_names}

    def knobs(self) -> dict[str, dict]:
        return {
            "threshold": {
                "low": 0.0,
                "high": 1.0,
                "default": 0.5,
                "help": "a block runs when its gate probability exceeds this (0.5: the trained policy)",
            }
        }

    def benchmark_references(self) -> dict:
        """For ``tools.bench``: the same model and decisions, computing every block and masking (the reference code's
        way)."""
        return {"same gates, masked (all blocks)": lambda x: self(x, gate_mode="greedy").logits}

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet with this backbone's weights: every block executed, no gates (``cost.full_macs``)."""
        return self.plain_copy()


@register_model
def skipnet_resnet8(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-8: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(8, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet20(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-20: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(20, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet32(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-32: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(32, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet38(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-38: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(38, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet56(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-56: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(56, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet74(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-74: a gate before every block but the first; gate 'rnn' (default), 'ff1' or 'ff2'."""
    return SkipNet(74, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet110(
    num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64), gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the CIFAR ResNet-110: a gate before every block but the first; gate 'rnn' (default), 'ff1' or
    'ff2'."""
    return SkipNet(110, num_classes, in_chans, tuple(widths), gate)


@register_model
def skipnet_resnet50(
    num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, ...] = RESNET50_WIDTHS, gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the ImageNet ResNet-50 (the paper-scale bench; the paper gates ResNet-50/101 on ImageNet the same
    way)."""
    return SkipNet(50, num_classes, in_chans, tuple(widths), gate, **RESNET50)


@register_model
def skipnet_resnet101(
    num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, ...] = RESNET50_WIDTHS, gate: str = "rnn"
) -> SkipNet:
    """SkipNet on the ImageNet ResNet-101 (bottleneck blocks (3, 4, 23, 3)): the paper's ImageNet result, and the layout
    of the authors' published ResNet-101 checkpoints (``python -m models.convert``)."""
    return SkipNet(101, num_classes, in_chans, tuple(widths), gate, **RESNET101)
