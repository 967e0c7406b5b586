"""The 3x3 convolution every backbone and gate is built of (no bias: a BatchNorm follows)."""

from __future__ import annotations

import torch.nn as nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
