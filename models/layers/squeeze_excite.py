"""Squeeze-and-excitation (Hu et al., CVPR 2018) as EfficientNet and MobileNetV3 use it: each channel scaled by a
gate computed from the global average of all channels (reduce, activation, expand, sigmoid). The two 1x1 convs
have biases and act on a 1x1 map; ``reduced`` is the bottleneck width (EfficientNet: a quarter of the BLOCK's input
channels, not of the expanded ones)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):
    """``x * sigmoid(expand(act(reduce(mean_hw(x)))))``, one gate per channel and image."""

    def __init__(self, channels: int, reduced: int, act: Callable[[torch.Tensor], torch.Tensor] = F.silu) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.act = act

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate, ``(B, C, 1, 1)`` in (0, 1)."""
        return torch.sigmoid(self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
