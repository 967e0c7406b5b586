"""Early exit (BranchyNet, Teerapittayanon et al. 2016; Shallow-Deep Networks, Kaya et al. ICML 2019).

A ResNet with small exit heads (``models.layers.exit_head.ExitHead``) after chosen blocks. At inference
an image leaves at the first exit whose confidence (max softmax) reaches ``threshold``; nothing after it
is computed. In a batch only the unfinished samples continue (index, compute, scatter back, as SkipNet's
blocks do), and each visited exit is recorded in the active trace as a decision of kind ``exit``::

    {"layer": "layer2.1", "kind": "exit", "confidence": 0.97, "exited": true, "threshold": 0.9}

The final classifier (``fc``) is the last exit and is always taken by the samples that reach it.
``threshold`` is an inference setting: the builder's value is the model's operating point, and
``model(x, threshold=q)`` runs one call at another point without touching the model (one cached model
serves many sessions). A threshold above 1 is never reached, so every block runs and the final exit is
taken. ``model(x, all_exits=True)`` (training) computes every exit on every sample and returns their
logits, internal exits first.

Deviations: exits go after blocks (SDN places them at about 15-90% of the cost; here by default after
every block from ``layer1.1`` on in a network of at most 9 blocks, which for ResNet-20 is 22-89%, and at
SDN's six positions in deeper ones); confidence is max softmax (SDN's), not BranchyNet's entropy.
"""

from __future__ import annotations

from contextlib import ExitStack
import functools
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .errors import UsageError
from .layers.exit_head import ExitHead
from .registry import register_model
from .resnet import RESNET50, RESNET50_WIDTHS, ResNet
from .trace import PerRow, current_trace
from .decisions import DecisionKind, register_kind

FINAL_EXIT = "fc"
SWEEP_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


EXIT = register_kind(
    DecisionKind(
        "exit",
        "early_exit",
        "image",
        {
            "confidence": ("number", "max softmax of this exit's prediction"),
            "exited": ("boolean", "the image left here (confidence reached the threshold, or the final exit)"),
            "threshold": ("number", "the confidence threshold this forward pass used"),
        },
        "an exit the image visited, taken or passed",
        signature=lambda d: d["layer"] if d["exited"] else None,
        forcible=("exited",),
    )
)


SDN_POSITIONS = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90)


def default_exits(blocks: list[str]) -> list[str]:
    """Every block but the first and last in a short network (ResNet-20: 7 exits); in a deeper one SDN's six
    positions (15-90% of the depth), so the exit heads a late image visits stay few."""
    if len(blocks) <= 9:
        return blocks[1:-1]
    return list(dict.fromkeys(blocks[min(len(blocks) - 2, max(0, round(f * len(blocks)) - 1))] for f in SDN_POSITIONS))


class EarlyExitResNet(ResNet):
    """ResNet (``models.resnet`` names) with an exit head after each block in ``exits``."""

    method = "early_exit"

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        exits: Sequence[str] | None = None,
        head: str = "sdn",
        threshold: float = 0.9,
        **backbone,
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths), **backbone)
        blocks = dict(self.named_blocks())
        names = list(blocks)
        exits = list(default_exits(names) if exits is None else exits)
        unknown = [e for e in exits if e not in blocks or e == names[-1]]
        if unknown:
            raise UsageError(
                f"exits must name blocks before the last ({', '.join(names[:-1])}), not {', '.join(unknown)}"
            )
        self.exit_names: tuple[str, ...] = tuple(sorted(exits, key=names.index))
        self.exits = nn.ModuleList(ExitHead(blocks[e].out_channels, num_classes, head) for e in self.exit_names)
        self.threshold = float(threshold)

    def exit_depths(self) -> list[float]:
        """Each internal exit's position as a fraction of the blocks (SDN's tau_i, the cap of its loss weight)."""
        names = [name for name, _ in self.named_blocks()]
        return [(names.index(e) + 1) / len(names) for e in self.exit_names]

    def forward(
        self, x: torch.Tensor, threshold: float | None = None, all_exits: bool = False, exit_at: str | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """Logits of each sample's exit; ``threshold`` overrides the model's for this call; ``exit_at`` names the
        one exit every sample takes (the static truncated network); ``all_exits`` is the training form."""
        if all_exits:
            return self._forward_all(x)
        if exit_at is not None and exit_at not in (*self.exit_names, FINAL_EXIT):
            raise ValueError(f"exit_at must be one of {', '.join((*self.exit_names, FINAL_EXIT))}, not {exit_at!r}")
        trace = current_trace()
        if threshold is None:
            threshold = trace.knob("threshold", self.threshold) if trace is not None else self.threshold
        if x.shape[0] == 1 and (trace is None or not trace.observe):
            return self._forward_one(x, float(threshold), exit_at, trace)
        return self._forward_exiting(x, float(threshold), exit_at)

    def _forward_one(self, x: torch.Tensor, threshold: float, exit_at: str | None, trace) -> torch.Tensor:
        """Batch 1 with nothing to record (plain inference, or a forced path being timed): the decisions of
        ``_forward_exiting`` taken with Python control flow, each head and its confidence in one call."""
        heads = dict(zip(self.exit_names, self.exits))
        x = self.stem(x)
        for name, block in self.named_blocks():
            x = block(x)
            head = heads.get(name)
            if head is None or (exit_at is not None and name != exit_at):
                continue
            z, confidence = head.decide(x)
            forced = trace.forced(name, EXIT) if trace is not None else None
            if (exit_at is not None or confidence >= threshold) if forced is None else bool(forced):
                return z
        if trace is not None and trace.forced(FINAL_EXIT, EXIT) is False:
            raise ValueError("the final exit (fc) cannot be refused: every image leaves there at the latest")
        return self.head(x)

    def _forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit on every sample (training): ``[internal exit logits ..., final logits]``."""
        heads = dict(zip(self.exit_names, self.exits))
        out = []
        x = self.stem(x)
        for name, block in self.named_blocks():
            x = block(x)
            if name in heads:
                out.append(heads[name](x))
        return out + [self.head(x)]

    def _forward_exiting(self, x: torch.Tensor, threshold: float, exit_at: str | None = None) -> torch.Tensor:
        """True early exit: a sample stops at its first confident exit, the rest continue on a smaller batch."""
        trace = current_trace()
        heads = dict(zip(self.exit_names, self.exits))
        active = torch.arange(x.shape[0], device=x.device)  # batch rows still running
        logits: torch.Tensor | None = None
        with ExitStack() as subsets:
            x = self.stem(x)
            for name, block in self.named_blocks():
                x = block(x)
                if name not in heads:
                    continue
                if exit_at is not None and name != exit_at:
                    continue
                z = heads[name](x)
                confidence = z.softmax(1).amax(1)
                done = confidence >= threshold if exit_at is None else torch.ones_like(confidence, dtype=torch.bool)
                forced = trace.forced(name, EXIT) if trace is not None else None
                if isinstance(forced, PerRow):
                    done = torch.tensor(forced, dtype=torch.bool, device=done.device)
                elif forced is not None:
                    done = torch.full_like(done, bool(forced))
                if trace is not None:
                    trace.record(
                        name,
                        EXIT,
                        confidence=confidence,
                        exited=done,
                        threshold=threshold,
                        **({"forced": True} if forced is not None else {}),
                    )
                if logits is None:
                    logits = z.new_zeros(len(active), z.shape[1])
                keep = (~done).nonzero().squeeze(1)  # the exit's one host read: how many rows go on
                if not len(keep):
                    return logits.index_copy(0, active, z)
                if len(keep) < len(x):
                    leaving = torch.where(done.unsqueeze(1), z, logits.index_select(0, active))
                    logits = logits.index_copy(0, active, leaving)
                    if trace is not None:
                        subsets.enter_context(trace.subset(keep))
                    x, active = x.index_select(0, keep), active.index_select(0, keep)
            z = self.head(x)
            if trace is not None and trace.forced(FINAL_EXIT, EXIT) is False:
                raise ValueError("the final exit (fc) cannot be refused: every image leaves there at the latest")
            if trace is not None:
                trace.record(
                    FINAL_EXIT,
                    EXIT,
                    confidence=z.softmax(1).amax(1),
                    exited=torch.ones(len(z), dtype=torch.bool),
                    threshold=threshold,
                )
        return z if logits is None else logits.index_copy(0, active, z)

    def decision_layers(self) -> dict[str, str]:
        return {name: EXIT.name for name in (*self.exit_names, FINAL_EXIT)}

    def costliest_path(self) -> dict[str, dict]:
        return {name: {"exited": False} for name in self.exit_names}

    def knobs(self) -> dict[str, dict]:
        return {
            "threshold": {
                "low": 0.0,
                "high": 1.01,
                "default": self.threshold,
                "help": "an image leaves at the first exit whose max softmax reaches this; above 1 "
                "it never leaves early",
            }
        }

    static_variants = "always exit"  # the evaluation variants that are static networks (analysis.results' frontier)

    def evaluation_variants(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """For ``models.evaluate``: the threshold sweep and the static truncated networks, on the same images."""
        sweep = {f"threshold {q:g}": functools.partial(self, threshold=q) for q in SWEEP_THRESHOLDS}
        return {
            **sweep,
            **{f"always exit {e}": functools.partial(self, exit_at=e) for e in (*self.exit_names, FINAL_EXIT)},
        }

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet with this backbone's weights: every block, no exit heads (``cost.full_macs``)."""
        return self.plain_copy()


@register_model
def early_exit_resnet8(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ResNet-8 with exit heads (SDN's head by default) at the default exits (``default_exits``)."""
    return EarlyExitResNet(8, num_classes, in_chans, tuple(widths), exits, head, threshold)


@register_model
def early_exit_resnet20(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ResNet-20 with exit heads (SDN's head by default) at the default exits (``default_exits``)."""
    return EarlyExitResNet(20, num_classes, in_chans, tuple(widths), exits, head, threshold)


@register_model
def early_exit_resnet32(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ResNet-32 with exit heads (SDN's head by default) at the default exits (``default_exits``)."""
    return EarlyExitResNet(32, num_classes, in_chans, tuple(widths), exits, head, threshold)


@register_model
def early_exit_resnet56(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ResNet-56 with exit heads (SDN's head by default) at the default exits (``default_exits``)."""
    return EarlyExitResNet(56, num_classes, in_chans, tuple(widths), exits, head, threshold)


@register_model
def early_exit_resnet110(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ResNet-110 with exit heads (SDN's head by default) at the default exits (``default_exits``)."""
    return EarlyExitResNet(110, num_classes, in_chans, tuple(widths), exits, head, threshold)


@register_model
def early_exit_resnet50(
    num_classes: int = 1000,
    in_chans: int = 3,
    widths: tuple[int, ...] = RESNET50_WIDTHS,
    exits: Sequence[str] | None = None,
    head: str = "sdn",
    threshold: float = 0.9,
) -> EarlyExitResNet:
    """ImageNet ResNet-50 with exit heads at SDN's six positions (the paper-scale bench)."""
    return EarlyExitResNet(50, num_classes, in_chans, tuple(widths), exits, head, threshold, **RESNET50)
