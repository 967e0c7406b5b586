"""CondConv layers (Yang et al., NeurIPS 2019): a conv whose kernel is a per-example mixture of expert kernels,
and the router that gives the mixture weights.

``y = (a_1 W_1 + ... + a_E W_E) * x``. The kernels are combined per example (``(B, E) @ (E, P)``) and ONE
grouped convolution runs over the whole batch (input as ``(1, B*C, H, W)``, ``groups = B * groups``; timm's
``CondConv2d``), so inference costs one conv plus the small routing and combination work, never E convolutions.
Expert weights are stored flat, ``(E, out * in/groups * k * k)``, like timm: ``Module.to(memory_format=
torch.channels_last)`` rejects 5-D parameters. ``CondConv2d.experts`` is the ``(E, out, in/groups, k, k)`` view.

In inference the batch may instead run in chunks of ``CHUNKS`` examples, each chunk its own mixture and grouped
conv (the same per-example arithmetic): on a CPU the per-example kernels of a whole batch of 256 (38 MB for a
64-channel 3x3 layer) and a grouped conv of 256 groups fall out of cache, and chunks of 16-64 ran the flagship's
layers about 3x faster. Which plan runs is measured per device and shape (``layers.plans``); training, autograd and
counting run the whole batch at once.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .batchnorm_fold import bn_scale_shift
from .derived import DerivedWeight
from .layout import channels_last
from .plans import MeasuredPlans
from .row_groups import group_rows, inverse_permutation

CHUNKS = (64, 32, 16)  # the chunk sizes a batched CondConv2d may run in (see the module's docstring)


class CondConv2d(nn.Module):
    """A conv whose kernel is a per-example mixture of ``num_experts`` expert kernels (one grouped conv per batch)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        num_experts: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if in_ch % groups or out_ch % groups:
            raise UsageError(f"channels ({in_ch} in, {out_ch} out) must be divisible by groups={groups}")
        if num_experts < 1:
            raise UsageError(f"num_experts must be >= 1, got {num_experts}")
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        self.num_experts = num_experts
        self.weight_shape = (out_ch, in_ch // groups, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        self.bias = nn.Parameter(torch.empty(num_experts, out_ch)) if bias else None
        self.register_buffer("shift", None)  # a per-channel constant added after the mixture (a folded BatchNorm)
        self.plans = MeasuredPlans()
        self._channels_last = DerivedWeight()  # the experts in (out, k, k, in) order, for channels-last inputs
        self.reset_parameters()

    @property
    def experts(self) -> torch.Tensor:
        """The expert kernels as ``(E, out, in/groups, k, k)`` (a view of the flat parameter)."""
        return self.weight.view(self.num_experts, *self.weight_shape)

    def reset_parameters(self) -> None:
        """Kaiming-normal experts scaled so the mixture at routing 0.5 has a Kaiming conv's variance."""
        fan_out = self.weight_shape[0] * self.kernel_size**2  # as nn.init's fan_out of one expert kernel
        std = math.sqrt(2.0 / fan_out) * 2.0 / math.sqrt(self.num_experts)
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(math.prod(self.weight_shape[1:]))
            nn.init.uniform_(self.bias, -bound, bound)

    def kernels_channels_last(self, x: torch.Tensor) -> bool:
        """Whether kernels for input ``x`` are made channels-last: ``x`` is, in inference (autograd needs the
        parameter itself), so that the convolution does not reorder a mixed kernel on every call."""
        return channels_last(x) and not self.training and not torch.is_grad_enabled()

    def flat_experts(self, channels_last: bool) -> torch.Tensor:
        """The experts as ``(E, P)``: ``(out, in, k, k)`` order, or ``(out, k, k, in)`` for channels-last kernels (a
        copy, made again when the weight changes)."""
        if not channels_last:
            return self.weight
        shape = (self.num_experts, *self.weight_shape)
        return self._channels_last.get(self.weight, lambda w: w.view(shape).permute(0, 1, 3, 4, 2).flatten(1))

    def kernel(self, mixed: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """Rows in ``flat_experts(channels_last)``'s order (mixtures or experts) as conv weights ``(rows * out,
        in/groups, k, k)``: views, channels-last where the rows are."""
        _, cin, k, _ = self.weight_shape
        if not channels_last:
            return mixed.reshape(-1, cin, k, k)
        return mixed.reshape(-1, k, k, cin).permute(0, 3, 1, 2)

    def combined_kernel(self, routing: torch.Tensor) -> torch.Tensor:
        """Each example's kernel, ``(B, out, in/groups, k, k)``, from routing ``(B, E)``."""
        return (routing @ self.weight).reshape(routing.shape[0], *self.weight_shape)

    def forward(self, x: torch.Tensor, routing: torch.Tensor | int) -> torch.Tensor:
        """``routing`` (B, E) mixes each example's kernel; an ``int`` is the one expert every example runs (a routing
        forced to weight 1 on one expert, 0 on the others): its kernel as it is, no mixture, one plain conv; an
        integer tensor (B,) one expert per example, each expert's examples together."""
        if isinstance(routing, int):
            return self.expert_forward(x, routing)
        if not routing.is_floating_point():
            return self._per_expert(x, routing)
        b = x.shape[0]
        if routing.shape != (b, self.num_experts):
            raise ValueError(f"routing must be ({b}, {self.num_experts}), got {tuple(routing.shape)}")
        plans = {"whole batch": lambda: self._mixed(x, routing)}
        plans |= {f"chunks of {n}": functools.partial(self._chunked, x, routing, n) for n in CHUNKS if b > n}
        return self.plans.run(self, x, plans, reference="whole batch") if len(plans) > 1 else self._mixed(x, routing)

    def _per_expert(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Example ``i`` through expert ``experts[i]`` alone: the examples sorted by expert on the device, one read of
        how many each expert has, one plain conv per expert, the outputs back in the batch's order."""
        order, sizes = group_rows(experts, self.num_experts)
        groups = x.index_select(0, order).split(sizes)
        y = torch.cat([self.expert_forward(g, e) for e, g in enumerate(groups) if len(g)])
        return y.index_select(0, inverse_permutation(order))

    def _chunked(self, x: torch.Tensor, routing: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([self._mixed(xc, rc) for xc, rc in zip(x.split(n), routing.split(n))])

    def _mixed(self, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        """Each example's mixed kernel, then one grouped conv over the examples of ``x``."""
        b, c, h, w = x.shape
        x = x.reshape(1, b * c, h, w)  # a view at batch 1, else a contiguous copy: the kernels follow its layout
        layout = self.kernels_channels_last(x)
        kernel = self.kernel(routing @ self.flat_experts(layout), layout)
        bias = None
        if self.bias is not None:
            bias = routing @ self.bias if self.shift is None else torch.addmm(self.shift, routing, self.bias)
        elif self.shift is not None:
            bias = self.shift.expand(b, self.out_channels)
        bias = bias.reshape(b * self.out_channels) if bias is not None else None
        y = F.conv2d(x, kernel, bias, self.stride, self.padding, groups=b * self.groups)
        return y.reshape(b, self.out_channels, *y.shape[-2:])

    def expert_forward(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """Expert ``expert`` alone on the whole batch: exactly the mixture with weight 1 on it and 0 on the others
        (``1 * w + 0 * v == w``), without reading the other experts' kernels."""
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"expert must be in 0..{self.num_experts - 1}, got {expert}")
        bias = self.bias[expert] if self.bias is not None else None
        if self.shift is not None:
            bias = self.shift if bias is None else bias + self.shift
        layout = self.kernels_channels_last(x)
        kernel = self.kernel(self.flat_experts(layout)[expert], layout)
        return F.conv2d(x, kernel, bias, self.stride, self.padding, groups=self.groups)

    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> "CondConv2d":
        """This layer with the eval-mode ``bn`` after it folded in: BN is affine per output channel, so it scales
        every expert kernel (and routed bias) and adds one constant that the routing does not mix."""
        s, t = bn_scale_shift(bn)
        self.weight.copy_((self.weight.view(self.num_experts, self.out_channels, -1) * s.view(1, -1, 1)).flatten(1))
        if self.bias is not None:
            self.bias.mul_(s)
        self.shift = t.clone()
        self.plans.forget()
        return self

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, num_experts={self.num_experts}, "
            f"bias={self.bias is not None}"
        )


class Router(nn.Module):
    """``sigmoid(Linear(GlobalAvgPool(x)))``: independent (not normalized) weights in (0, 1), one per expert."""

    def __init__(self, in_ch: int, num_experts: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_ch, num_experts)
        nn.init.zeros_(self.fc.bias)  # mean routing starts near 0.5, where the expert init is calibrated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
