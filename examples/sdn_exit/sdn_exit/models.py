"""A Shallow-Deep Network (Kaya, Hong & Dumitras, "Shallow-Deep Networks: Understanding and Mitigating Network
Overthinking", ICML 2019), in plain PyTorch: nothing here knows RouteScope.

A small ResNet with an internal classifier (IC) after each block but the last. An IC pools the block's features to
2x2 with SDN's mixed max/average pooling (a learned mix) and classifies them with one linear layer. ``forward``
returns every classifier's logits, internal ones first (the training form: SDN's weighted sum of their losses); the
exit policy (leave at the first IC whose max softmax reaches a threshold) is the inference procedure, which the
RouteScope declaration expresses, so this code computes every exit.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """A basic residual block (two 3x3 convs), with a projection shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        project = stride != 1 or cin != cout
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if project
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class InternalClassifier(nn.Module):
    """SDN's IC: mixed max/average pooling to ``size`` x ``size`` (a learned mix), then one linear layer."""

    def __init__(self, channels: int, num_classes: int, size: int = 2) -> None:
        super().__init__()
        self.size = size
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.linear = nn.Linear(channels * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.alpha * F.adaptive_max_pool2d(x, self.size) + (1 - self.alpha) * F.adaptive_avg_pool2d(
            x, self.size
        )
        return self.linear(pooled.flatten(1))


class SDN(nn.Module):
    """A ResNet-14 (three stages of two blocks, CIFAR layout) with an internal classifier after every block but the
    last, and the final classifier ``fc``."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(2):
                blocks.append(Block(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(InternalClassifier(block.conv2.out_channels, num_classes) for block in blocks[:-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor, exits: bool = True) -> list[torch.Tensor]:
        """Every classifier's logits, internal ones first; ``exits=False``: the final classifier's only (the plain
        ResNet, no IC computed)."""
        x = self.stem(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if exits and i < len(self.exits):
                outputs.append(self.exits[i](x))
        return outputs + [self.fc(torch.flatten(self.pool(x), 1))]
