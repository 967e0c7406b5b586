"""Slice-able layers of DS-Net (Li et al., CVPR 2021): a conv that runs its first k filters, a BN with
running statistics per width, and the double-headed width gate.

Slicing, not masking: ``SlimConv2d`` calls ``F.conv2d`` on ``weight[:k, :k_in]``, so a narrow layer really
multiplies fewer numbers (and ``FlopCounterMode`` / the trace's MAC counter see exactly that). ``k_in`` is
read from the input, so a layer follows whatever width the previous layer ran at.

``SlimBatchNorm2d`` keeps one affine (``weight``, ``bias``, sliced to the first ``c`` channels) and
``num_keys`` rows of running statistics. The caller picks the row (``key``): a narrow subnet's features
have other statistics than the wide one's, so sharing one set would mis-normalize every width but one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SlimConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs only its first ``out_channels`` filters on the channels ``x`` has."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError("SlimConv2d slices dense convolutions only (groups=1)")

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        k = self.out_channels if out_channels is None else out_channels
        k_in = x.shape[1]
        if not (0 < k <= self.out_channels and 0 < k_in <= self.in_channels):
            raise ValueError(f"cannot slice a {self.in_channels}->{self.out_channels} conv to {k_in}->{k}")
        weight = self.weight[:k, :k_in]
        bias = self.bias[:k] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, 1)


class SlimBatchNorm2d(nn.Module):
    """BatchNorm over the first ``x.shape[1]`` channels, one shared affine, running statistics per ``key``.

    ``momentum=None`` gives a cumulative average per key (as ``nn.BatchNorm2d``), which is what BN
    recalibration uses.
    """

    def __init__(self, num_features: int, num_keys: int = 1, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features, self.num_keys, self.eps, self.momentum = num_features, num_keys, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_keys, num_features))
        self.register_buffer("running_var", torch.ones(num_keys, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(num_keys, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor, key: int = 0) -> torch.Tensor:
        c = x.shape[1]
        if not (0 <= key < self.num_keys and 0 < c <= self.num_features):
            raise ValueError(f"SlimBatchNorm2d({self.num_features}, keys={self.num_keys}) got {c} channels, key {key}")
        momentum = 0.0
        if self.training:
            self.num_batches_tracked[key] += 1
            momentum = 1.0 / float(self.num_batches_tracked[key]) if self.momentum is None else self.momentum
        # rows of the 2-D buffers are contiguous views: batch_norm updates them in place
        return F.batch_norm(
            x,
            self.running_mean[key, :c],
            self.running_var[key, :c],
            self.weight[:c],
            self.bias[:c],
            self.training,
            momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, keys={self.num_keys}, eps={self.eps}, momentum={self.momentum}"


class WidthGate(nn.Module):
    """DS-Net's double-headed gate: global pool -> 1x1 conv -> ReLU, then an SE head and a width head.

    ``grid`` > 1 (not in the paper) pools to a ``grid`` x ``grid`` map instead and reads it with a
    ``grid`` x ``grid`` conv (the same slicing over input channels): where in the image the features are,
    not only their mean. A global pool of the 16 channels after layer1 of a CIFAR ResNet says little about
    how hard an image is (see the README's DS-Net section); ``grid=1`` is the paper's gate exactly.

    ``hidden(x)`` reads the stage input (at whatever width the previous stage ran); ``width_logits(h)``
    scores the width choices (argmax at inference); ``attention(h, k)`` is the sigmoid channel attention
    for the first ``k`` channels of the stage, computed with the first ``k`` filters only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_choices: int,
        hidden: int | None = None,
        attention: bool = True,
        widest_bias: float = 2.0,
        grid: int = 1,
    ) -> None:
        super().__init__()
        hidden = hidden or max(16, in_channels // 4)
        self.grid = grid
        self.reduce = SlimConv2d(in_channels, hidden, grid, bias=True)
        self.se = SlimConv2d(hidden, out_channels, 1, bias=True) if attention else None
        self.width = nn.Conv2d(hidden, num_choices, 1, bias=True)
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.reduce.bias)
        if self.se is not None:
            nn.init.normal_(self.se.weight, 0.0, 0.01)
            nn.init.zeros_(self.se.bias)
        # An untrained gate picks the widest width, so a supernet (stage 1) reports its full-width accuracy.
        nn.init.normal_(self.width.weight, 0.0, 0.01)
        nn.init.zeros_(self.width.bias)
        self.width.bias.data[-1] = widest_bias

    linear: dict | None = None  # the fast inference form's weights as matrices (``prepare_fast_form``)

    @torch.no_grad()
    def prepare_fast_form(self) -> None:
        """The fast form: the gate's convs all read a ``grid`` x ``grid`` map with a ``grid`` x ``grid`` (or 1x1)
        kernel, so each is one matrix product on the flattened map (the same multiply-adds; at batch 1 PyTorch runs
        such tiny convs through oneDNN at about 100 us each). Reduce weights are cut per input width on first use."""
        self.linear = {"width": (self.width.weight.flatten(1).contiguous(), self.width.bias.clone())}
        if self.se is not None:
            self.linear["se"] = (self.se.weight.flatten(1).contiguous(), self.se.bias.clone())

    def _reduce_weight(self, k_in: int) -> torch.Tensor:
        key = ("reduce", k_in)
        if key not in self.linear:
            self.linear[key] = self.reduce.weight[:, :k_in].flatten(1).contiguous()
        return self.linear[key]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's hidden features: (N, hidden, 1, 1), or (N, hidden) in the fast form."""
        pooled = F.adaptive_avg_pool2d(x, self.grid)
        if self.linear is not None:
            return F.relu(F.linear(pooled.flatten(1), self._reduce_weight(x.shape[1]), self.reduce.bias))
        return F.relu(self.reduce(pooled))

    def spread_global_reduce(self, weight: torch.Tensor) -> bool:
        """Start a grid gate from a global-pool gate's (hidden, in, 1, 1) reduce weight: each grid cell gets
        ``weight / grid**2``, so the gate starts out reading the mean of the cells, close to the global mean."""
        if self.grid == 1 or weight.shape != self.reduce.weight.shape[:2] + (1, 1):
            return False
        with torch.no_grad():
            self.reduce.weight.copy_(weight.expand_as(self.reduce.weight) / self.grid**2)
        return True

    def width_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.linear is not None:
            return F.linear(h, *self.linear["width"])
        return torch.flatten(self.width(h), 1)

    def attention(self, h: torch.Tensor, channels: int) -> torch.Tensor | None:
        """(N, channels, 1, 1) in (0, 1), or None when the gate has no SE head."""
        if self.se is None:
            return None
        if self.linear is not None:
            weight, bias = self.linear["se"]
            return torch.sigmoid(F.linear(h, weight[:channels], bias[:channels]))[:, :, None, None]
        return torch.sigmoid(self.se(h, channels))
