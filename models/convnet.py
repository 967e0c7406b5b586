"""The small plain ConvNet of the RePr paper (Prakash et al., CVPR 2019, Table 1 / Figure 1): "n layers,
each with X filters", here three 3x3 conv layers of 32 filters, then a linear classifier.

Each layer is conv3x3 (padding 1, no bias) -> BatchNorm -> ReLU -> 2x2 max-pool; the classifier reads
the flattened 32 x 4 x 4 map. The last pool is an adaptive max-pool to 4 x 4, which is exactly a 2x2
max-pool for 32 x 32 inputs (CIFAR, the paper's setting: 32 -> 16 -> 8 -> 4) and lets the same net read
28 x 28 Fashion-MNIST (28 -> 14 -> 7 -> 4) without a size argument. The paper does not say whether its
ConvNet has BatchNorm; we use it (it stabilizes SGD at the backbone's learning rates, and RePr zeroes a
dropped filter's BN affine along with its weights). Layers are named ``conv1``..``conv3`` (``bn1``..),
the names traces and RePr records show.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .protocol import RouteScopeModel
from .registry import register_model
from .resnet import conv3x3, init_weights


class ConvNet(RouteScopeModel):
    """``len(widths)`` conv-BN-ReLU-maxpool layers and a linear head; a plain (static) network."""

    method = "baseline"

    def __init__(
        self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 32, 32), pool: int = 4
    ) -> None:
        super().__init__()
        self.widths, self.pool = tuple(widths), pool
        in_ch = in_chans
        for i, width in enumerate(self.widths, 1):
            self.add_module(f"conv{i}", conv3x3(in_ch, width))
            self.add_module(f"bn{i}", nn.BatchNorm2d(width))
            in_ch = width
        self.fc = nn.Linear(in_ch * pool * pool, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.widths)
        for i in range(1, last + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            x = F.adaptive_max_pool2d(x, self.pool) if i == last else F.max_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


@register_model
def convnet3(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 32, 32)) -> ConvNet:
    """The RePr paper's 3-layer, 32-filter ConvNet, trained the standard way."""
    return ConvNet(num_classes, in_chans, tuple(widths))
