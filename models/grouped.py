"""ResNet with hand-set uniform group convolutions: the control DGConv's claim needs.

DGConv (Zhang et al. 2019) claims that group structures learned per layer beat hand-set uniform groups at equal
complexity. This backbone is the hand-set side: the same 3x3 convs DGConv makes learnable (those with C_in == C_out
inside the blocks; the first conv of a downsampling block stays dense, as in ``models.dgconv``) become
``nn.Conv2d(groups=g)`` with one ``g`` per stage, chosen so the MACs match a DGConv model's. A static network:
no per-image decisions; its "dense" reference for MAC ratios is the plain ResNet of the same depth and widths.

Started from a dense checkpoint (``models.train --init-from``), each grouped conv takes the block-diagonal part of
the dense kernel (``upcycle``): the nearest uniform-group network to the dense one, as DGConv starts from the dense
network with every gate on.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .errors import UsageError
from .registry import register_model
from .resnet import ResNet, init_weights


class GroupedResNet(ResNet):
    """CIFAR ResNet whose in-block C_in == C_out 3x3 convs use ``groups[s]`` groups in stage ``s + 1``."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        groups: Sequence[int] = (2, 4, 1),
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        self.groups = tuple(int(g) for g in groups)
        if len(self.groups) != len(self.widths) or any(g < 1 or w % g for g, w in zip(self.groups, self.widths)):
            raise UsageError(f"groups must give one divisor of each stage width {self.widths}, got {tuple(groups)}")
        for stage, g in zip(self.stages(), self.groups):
            for block in stage:
                for name in ("conv1", "conv2"):
                    conv = getattr(block, name)
                    if g > 1 and conv.in_channels == conv.out_channels:
                        setattr(
                            block,
                            name,
                            nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1, groups=g, bias=False),
                        )
        init_weights(self)

    def grouped_convs(self) -> list[tuple[str, nn.Conv2d]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]

    @torch.no_grad()
    def upcycle(self, dense_state: dict[str, torch.Tensor]) -> list[str]:
        """Each grouped conv from the block-diagonal part of the dense kernel of the same name; returns the names
        used."""
        used = []
        for name, conv in self.grouped_convs():
            dense = dense_state.get(f"{name}.weight")
            if dense is None or dense.shape[:2] != (conv.out_channels, conv.in_channels):
                continue
            per_out, per_in = conv.out_channels // conv.groups, conv.in_channels // conv.groups
            conv.weight.copy_(
                torch.cat(
                    [dense[j * per_out : (j + 1) * per_out, j * per_in : (j + 1) * per_in] for j in range(conv.groups)]
                )
            )
            used.append(f"{name}.weight")
        return used

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet of this depth and widths (``cost.full_macs``); grouped convs keep a fresh init."""
        return self.plain_copy(shared_only=True)


@register_model
def grouped_resnet20(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    groups: tuple[int, int, int] = (2, 4, 1),
) -> GroupedResNet:
    """ResNet-20 with uniform group convs, ``groups`` per stage; (2, 4, 1) has the MACs of
    ``dgconv_resnet20_fmnist_b0.6_e8`` (18.83 M at 28 x 28): its hand-set control."""
    return GroupedResNet(20, num_classes, in_chans, tuple(widths), tuple(groups))
