"""RePr (Prakash et al., CVPR 2019): prune the most overlapping filters, train the sub-network, re-initialize
them orthogonally, repeat; a training recipe for any conv net of the backend (``method = "repr"``).

This module is the model side: which convs RePr touches, the RePr models (the plain ResNet / ConvNet plus
a dropped-filter buffer per prunable conv), their ``structure()`` and ``repr_record`` of a run's history.
The schedule and its stage are in ``models.recipes.repr``, the ranking math in ``models.layers.filter_overlap``.

- Prunable convs: every ``groups == 1`` Conv2d except the first one in module order (the stem) and except
  convs whose filters outnumber their input dimension (F > C*k*k), for the paper's own reason for
  leaving out the first layer: no orthogonal direction exists there, their overlap is high by
  construction (a global ranking would empty them first) and no orthogonal re-init exists. In the
  CIFAR ResNets this leaves out the 1x1 projection shortcuts (16 -> 32, 32 -> 64); the paper's ResNets
  have parameter-free shortcuts. A block's ``conv2`` is prunable: masking its output channel only
  removes that channel from the residual branch while training; the shortcut still carries it.
- Record: each prunable conv of a RePr model has a bool buffer ``repr_last_dropped`` (registered at
  construction, so checkpoints load with strict=True) marking the filters dropped in the last cycle, which
  ``structure()`` reports with the overlaps. Per-cycle overlap matrices are not stored (``overlap_matrix``
  of a checkpoint's weights gives the final one); the per-filter scores before the drop and after the
  re-init are, in the cycle records (``repr_record``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .convnet import ConvNet
from .layers.filter_overlap import filter_scores
from .registry import register_model
from .resnet import ResNet, load_plain
from .decisions import DecisionKind, register_kind

BUFFER = "repr_last_dropped"


# --- which convs RePr touches ------------------------------------------------------------------------------

FILTERS = register_kind(
    DecisionKind(
        "filters",
        "repr",
        "model",
        {
            "overlap": ("array", "each filter's overlap (RePr's ranking score)"),
            "dropped": ("array", "filters dropped in the last cycle"),
        },
        "RePr's filter ranking of a conv layer",
        optional=("dropped",),
    )
)


@dataclass
class FilterLayer:
    """A conv and the BatchNorm that normalizes its output channels (None if it has none)."""

    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None

    def params(self) -> list[nn.Parameter]:
        """Parameters with one row per output filter of the conv."""
        ps = [self.conv.weight, self.conv.bias]
        if self.bn is not None and self.bn.affine:
            ps += [self.bn.weight, self.bn.bias]
        return [p for p in ps if p is not None]


def filter_layers(model: nn.Module) -> list[FilterLayer]:
    """Every ``groups == 1`` Conv2d in module order, each paired with the BatchNorm2d registered right after it."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    out = []
    for i, (name, m) in enumerate(leaves):
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels else None
            out.append(FilterLayer(name, m, bn))
    return out


def is_overcomplete(conv: nn.Conv2d) -> bool:
    """More filters than input dimensions: no filter can be orthogonal to all the others."""
    return conv.out_channels > conv.weight[0].numel()


def prunable_layers(model: nn.Module) -> list[FilterLayer]:
    """The convs RePr ranks, drops and re-initializes: all but the first and the overcomplete ones."""
    return [layer for layer in filter_layers(model)[1:] if not is_overcomplete(layer.conv)]


def attach_repr_buffers(model: nn.Module) -> None:
    """Give each prunable conv a persistent bool buffer of the filters dropped in the last cycle."""
    for layer in prunable_layers(model):
        layer.conv.register_buffer(BUFFER, torch.zeros(layer.conv.out_channels, dtype=torch.bool))


def filter_structure(model: nn.Module) -> list[dict]:
    """The ``structure()`` entries (kind ``filters``) of every conv: per-filter overlap and the filters dropped last."""
    prunable = {layer.name for layer in prunable_layers(model)}
    out = []
    for layer in filter_layers(model):
        dropped = getattr(layer.conv, BUFFER, None)
        out.append(
            {
                "layer": layer.name,
                "kind": FILTERS.name,
                "overlap": [round(float(s), 6) for s in filter_scores(layer.conv.weight)],
                "dropped": [] if dropped is None else dropped.nonzero().flatten().tolist(),
                "prunable": layer.name in prunable,
            }
        )
    return out


def repr_record(history: list[dict]) -> dict:
    """From a checkpoint's ``meta["history"]``: the finished cycle records and the epochs trained pruned."""
    return {
        "cycles": [row["repr_cycle_record"] for row in history if row.get("repr_cycle_record")],
        "pruned_epochs": [
            row.get("global_epoch", i) for i, row in enumerate(history) if row.get("repr_phase") == "pruned"
        ],
    }


# --- models ------------------------------------------------------------------------------------------------


class RePrResNet(ResNet):
    """The CIFAR ResNet trained with RePr: same layers, plus a dropped-filter buffer per prunable conv."""

    method = "repr"

    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        attach_repr_buffers(self)

    def structure(self) -> list[dict]:
        return filter_structure(self)

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet with these weights (RePr changes training, not the architecture)."""
        return self.plain_copy()


class RePrConvNet(ConvNet):
    """The paper's small ConvNet trained with RePr."""

    method = "repr"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 32, 32)) -> None:
        super().__init__(num_classes, in_chans, tuple(widths))
        attach_repr_buffers(self)

    def structure(self) -> list[dict]:
        return filter_structure(self)

    def dense_counterpart(self) -> ConvNet:
        """The plain ConvNet with these weights (RePr changes training, not the architecture)."""
        return load_plain(ConvNet(self.fc.out_features, self.conv1.in_channels, self.widths, self.pool), self)


@register_model
def repr_resnet8(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> RePrResNet:
    """CIFAR ResNet-8 trained with RePr (prune / re-initialize cycles)."""
    return RePrResNet(8, num_classes, in_chans, tuple(widths))


@register_model
def repr_resnet20(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> RePrResNet:
    """CIFAR ResNet-20 trained with RePr (prune / re-initialize cycles)."""
    return RePrResNet(20, num_classes, in_chans, tuple(widths))


@register_model
def repr_resnet32(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> RePrResNet:
    """CIFAR ResNet-32 trained with RePr (prune / re-initialize cycles)."""
    return RePrResNet(32, num_classes, in_chans, tuple(widths))


@register_model
def repr_resnet56(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> RePrResNet:
    """CIFAR ResNet-56 trained with RePr (prune / re-initialize cycles)."""
    return RePrResNet(56, num_classes, in_chans, tuple(widths))


@register_model
def repr_resnet110(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> RePrResNet:
    """CIFAR ResNet-110 trained with RePr (prune / re-initialize cycles)."""
    return RePrResNet(110, num_classes, in_chans, tuple(widths))


@register_model
def repr_convnet3(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 32, 32)) -> RePrConvNet:
    """The RePr paper's 3-layer, 32-filter ConvNet, trained with RePr."""
    return RePrConvNet(num_classes, in_chans, tuple(widths))
