"""BatchNorm folded into the layer before it (eval mode): one fold for every layer that takes one in.

The fold is PyTorch's own ``torch.nn.utils.fusion.fuse_conv_bn_weights``, taken in float64 and returned in the
weight's dtype. float64 matters: folding in float32 moves logits by ~1e-6 relative, enough to flip a gate whose
probability sits on its threshold, and the fast form must give the training form's decisions (and logits within
1e-5) for every bundled model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def fold_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b)`` of the conv computing ``bn(conv(x))``; ``weight`` has the output channels first."""
    as64 = [None if t is None else t.detach().double() for t in (weight, bias, mean, var, gamma, beta)]
    w, b = fuse_conv_bn_weights(as64[0], as64[1], as64[2], as64[3], eps, as64[4], as64[5])
    return w.detach().to(weight.dtype), b.detach().to(weight.dtype)


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(y) == y * s + t`` per channel in eval mode: the fold of a unit kernel."""
    s, t = fold_weights(
        bn.running_mean.new_ones(bn.num_features, 1), None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return s.flatten().to(bn.weight.dtype), t.to(bn.weight.dtype)
