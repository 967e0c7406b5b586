"""TensorFlow's "SAME" padding: the output has ``ceil(size / stride)`` pixels, and the padding that takes is split
with the extra pixel AFTER (bottom/right), so at stride 2 on an even size it is asymmetric, ``(0, 1)`` for a 3x3
kernel. It depends on the input size, so it is a module that pads what it is given (``SamePad2d``) before a conv
with ``padding=0``. Where it is static (stride 1, odd kernel) it equals PyTorch's symmetric ``k // 2`` and
``conv_padding`` says so: checkpoints trained in TensorFlow (timm's ``tf_`` models) need it to give their outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def same_padding(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``(before, after)`` of TF "SAME" padding along one axis of ``size`` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def symmetric_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """PyTorch-style padding of one conv: the same number of pixels on each side (``k // 2`` for odd kernels)."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def is_static_same(kernel_size: int, stride: int = 1, dilation: int = 1) -> bool:
    """True when "SAME" padding does not depend on the input size (then it is ``symmetric_padding``)."""
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


class SamePad2d(nn.Module):
    """Pads its input with TF "SAME" padding for a conv of ``kernel_size`` and ``stride`` (computed per call)."""

    def __init__(self, kernel_size: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride, self.dilation)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride, self.dilation)
        if not (top or bottom or left or right):
            return x
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


def conv_padding(kernel_size: int, stride: int = 1, tf_same: bool = False) -> tuple[nn.Module, int]:
    """``(pad module, conv padding)`` of a conv: TF "SAME" (``tf_same``; a ``SamePad2d`` where it depends on the
    input size, else the static padding it equals) or PyTorch's symmetric padding; the module is an
    ``nn.Identity`` where the conv pads by itself."""
    if tf_same and not is_static_same(kernel_size, stride):
        return SamePad2d(kernel_size, stride), 0
    return nn.Identity(), symmetric_padding(kernel_size, stride)
