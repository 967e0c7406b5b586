"""DGConv layers (GroupNet, Zhang et al., ICCV 2019): a 3x3 conv that learns its own group structure, its
exported grouped form, and the gate algebra both are built on.

``y = conv(x, W * U)`` with ``U = U_1 (x) U_2 (x) ... (x) U_K`` (Kronecker), ``K = log2 C`` and
``U_k = g_k * ones(2, 2) + (1 - g_k) * eye(2)``: only K real gate parameters ``theta`` per layer,
binarized as ``g_k = 1[theta_k > 0]``. Channels ``i`` and ``j`` are connected iff their binary digits
agree wherever ``g_k = 0`` (U_1 is the most significant digit), so U is block-diagonal up to a channel
permutation with ``2^(K - sum g)`` groups of ``2^(sum g)`` channels, and ``nnz(U) = C * prod(1 + g_k)``.

``DGConv2d`` runs the masked form in train mode (the only one with gradients to ``theta``) and a real
grouped conv in eval mode; ``GroupedConv2d`` is the exported, static form (``groups=G`` conv plus the
channel permutations). The straight-through estimator of the binary gates is ``sigmoid`` by default or
the identity clipped to [-1, 1] (BinaryConnect's form); both are this project's choices, the reference
implementation (d-li14/dgconv.pytorch) passes the gradient through unclipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .batchnorm_fold import bn_scale_shift
from .derived import DerivedWeight
from .layout import layout_of
from .plans import MeasuredPlans, Plans

STE_KINDS = ("sigmoid", "identity")


# --- the gate algebra: pure functions of a (K,) gate vector -----------------------------------------------


def binary_gates(theta: torch.Tensor, ste: str = "sigmoid") -> torch.Tensor:
    """Hard ``1[theta > 0]`` forward; gradient of ``sigmoid(theta)`` (or clipped identity) backward."""
    hard = (theta > 0).to(theta.dtype)
    if ste == "sigmoid":
        soft = torch.sigmoid(theta)
    elif ste == "identity":
        soft = theta.clamp(-1.0, 1.0)
    else:
        raise UsageError(f"ste must be one of {', '.join(STE_KINDS)}, not {ste!r}")
    return hard + (soft - soft.detach())  # exactly hard forward: the bracket is exactly 0


def kron_mask(gates: torch.Tensor) -> torch.Tensor:
    """``U = U_1 (x) ... (x) U_K`` (C x C, C = 2^K); differentiable in ``gates``; U_1 is the most significant digit."""
    eye = torch.eye(2, dtype=gates.dtype, device=gates.device)
    ones = torch.ones(2, 2, dtype=gates.dtype, device=gates.device)
    mask = torch.ones(1, 1, dtype=gates.dtype, device=gates.device)
    for g in gates:
        mask = torch.kron(mask, g * ones + (1 - g) * eye)
    return mask


def group_index(gates: torch.Tensor) -> torch.Tensor:
    """Group of each channel, (C,) long: the channel's binary digits at the gates that are off.

    These are exactly the connected components of U (two channels are connected iff they agree on every
    digit whose gate is 0); groups are numbered in order of their first channel.
    """
    hard = gates.detach() > 0.5
    k = hard.numel()
    channels = torch.arange(2**k, device=gates.device)
    digits = (channels[:, None] >> torch.arange(k - 1, -1, -1, device=gates.device)) & 1  # (C, K), digit 0 = U_1
    free = (~hard).long()
    place = free.flip(0).cumsum(0).flip(0) - free  # number of free digits less significant than each digit
    return (digits * free * (1 << place)).sum(1)


def group_permutation(gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(perm, inverse)``: ``x[:, perm]`` puts group 0's channels first (in channel order), then group 1's, ..."""
    gid = group_index(gates)
    c = gid.numel()
    perm = torch.argsort(gid * c + torch.arange(c, device=gid.device))
    return perm, torch.argsort(perm)


def grouped_weight(weight: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """The ``(C, C/G, k, k)`` weight of the ``groups=G`` conv: the diagonal blocks of the permuted ``weight``."""
    c, _, kh, kw = weight.shape
    groups = 2 ** int((gates.detach() < 0.5).sum())
    size = c // groups
    perm, _ = group_permutation(gates)
    w = weight.index_select(0, perm).index_select(1, perm).reshape(groups, size, groups, size, kh, kw)
    return w.diagonal(dim1=0, dim2=2).permute(4, 0, 1, 2, 3).reshape(c, size, kh, kw)


def dense_from_grouped(weight: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Inverse of ``grouped_weight``: the ``(C, C, k, k)`` masked dense weight (zeros off the blocks)."""
    c, size, kh, kw = weight.shape
    groups = c // size
    _, inverse = group_permutation(gates)
    dense = weight.new_zeros(groups, size, groups, size, kh, kw)
    dense.diagonal(dim1=0, dim2=2).copy_(weight.reshape(groups, size, size, kh, kw).permute(1, 2, 3, 4, 0))
    return dense.reshape(c, c, kh, kw).index_select(0, inverse).index_select(1, inverse)


def _is_identity(perm: torch.Tensor) -> bool:
    return bool(torch.equal(perm, torch.arange(perm.numel(), device=perm.device)))


class _GroupStructure:
    """Read-outs shared by the trainable and the exported layer; both define ``hard_gates()``."""

    def hard_gates(self) -> torch.Tensor:
        raise NotImplementedError

    def mask(self) -> torch.Tensor:
        """The binary C x C mask U of the current gates."""
        return kron_mask(self.hard_gates())

    def groups(self) -> int:
        return 2 ** int((self.hard_gates() < 0.5).sum())

    def group_of_channel(self) -> list[int]:
        return group_index(self.hard_gates()).tolist()

    def nnz(self) -> int:
        """Non-zeros of U, ``C * prod(1 + g_k)`` (the paper's complexity of one layer)."""
        g = self.hard_gates()
        return int(2 ** g.numel() * torch.prod(1 + g).item())


class DGConv2d(nn.Module, _GroupStructure):
    """Masked ``C -> C`` conv with learned Kronecker group structure (K = log2 C gates).

    Not an ``nn.Conv2d`` subclass: its ``groups()`` is learned, and code that treats every ``nn.Conv2d`` as a
    plain dense conv should not mistake it for one. The weight has the plain conv's shape and name.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = False,
        gate_init: float = 0.5,
        gate_noise: float = 0.5,
        ste: str = "sigmoid",
    ) -> None:
        super().__init__()
        if channels < 1 or channels & (channels - 1):
            raise UsageError(f"DGConv2d needs a power-of-two channel count (C_in = C_out), got {channels}")
        if ste not in STE_KINDS:
            raise UsageError(f"ste must be one of {', '.join(STE_KINDS)}, not {ste!r}")
        self.in_channels = self.out_channels = channels
        self.kernel_size, self.stride = (kernel_size, kernel_size), (stride, stride)
        self.padding, self.dilation = (padding, padding), (1, 1)
        self.ste = ste
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.theta = nn.Parameter(torch.empty(int(math.log2(channels))))
        self.area = 1.0  # output area relative to the network's reference resolution (set by the model)
        self.reset_gates(gate_init, gate_noise)

    def reset_gates(self, gate_init: float = 0.5, gate_noise: float = 0.5) -> None:
        """``theta ~ U(gate_init - gate_noise, gate_init + gate_noise)`` from torch's RNG; the default starts dense."""
        with torch.no_grad():
            self.theta.uniform_(gate_init - gate_noise, gate_init + gate_noise)

    def gates(self) -> torch.Tensor:
        """Straight-through binary gates (hard values, gradient to ``theta``)."""
        return binary_gates(self.theta, self.ste)

    def hard_gates(self) -> torch.Tensor:
        return (self.theta.detach() > 0).float()

    def nnz_ste(self) -> torch.Tensor:
        """``C * prod(1 + g_k)`` from the straight-through gates: the differentiable complexity of this layer."""
        return self.out_channels * torch.prod(1 + self.gates())

    def forward_masked(self, x: torch.Tensor) -> torch.Tensor:
        """Training form: dense weights times U, gradients to ``weight`` and ``theta``."""
        mask = kron_mask(self.gates()).to(self.weight.dtype)
        return F.conv2d(x, self.weight * mask[:, :, None, None], self.bias, self.stride, self.padding, self.dilation)

    def forward_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """Inference form: a real ``groups=G`` conv on the permuted channels (what ``GroupedConv2d`` freezes)."""
        gates = self.hard_gates()
        perm, inverse = group_permutation(gates)
        if _is_identity(perm):  # groups already contiguous: no gather
            return F.conv2d(
                x,
                grouped_weight(self.weight, gates),
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                groups=self.groups(),
            )
        bias = None if self.bias is None else self.bias.index_select(0, perm)
        y = F.conv2d(
            x.index_select(1, perm),
            grouped_weight(self.weight, gates),
            bias,
            self.stride,
            self.padding,
            self.dilation,
            groups=self.groups(),
        )
        return y.index_select(1, inverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_masked(x) if self.training else self.forward_grouped(x)

    def dense_weight(self) -> torch.Tensor:
        """``W * U``: the weight of the equivalent plain conv."""
        return self.weight.detach() * self.mask().to(self.weight.dtype)[:, :, None, None]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, gates={self.hard_gates().int().tolist()}, "
            f"groups={self.groups()}, ste={self.ste}"
        )


class GroupedConv2d(nn.Module, _GroupStructure):
    """Exported DGConv2d: gather channels by group, ``nn.Conv2d(C, C, k, groups=G)``, scatter back.

    Buffers keep the learned gates (so ``mask()`` and ``group_of_channel()`` still work) and the two
    permutations (``None`` when the groups are already contiguous: no gather at all).

    Execution plan, chosen per device and input shape by measurement (``layers.plans``): the grouped conv with its
    gathers (``"grouped"``: the MACs of the structure) or one dense conv whose weight has the zero blocks
    (``"dense"``: no gathers, every MAC; faster where the two channel gathers cost more than the saved multiply-adds,
    e.g. batched with a permutation, and on a GPU, where a grouped conv with many groups is often slower). Both
    compute the same function (equal up to float32 summation order). Training, autograd and any counting mode (the
    trace's MAC counter, ``FlopCounterMode``) always run ``"grouped"``, so the reported MACs are the structure's.
    """

    def __init__(self, conv: nn.Conv2d, gates: torch.Tensor, area: float = 1.0) -> None:
        super().__init__()
        self.conv = conv
        self.area = area
        self.register_buffer("gates", gates.detach().float().clone())
        perm, inverse = group_permutation(self.gates)
        trivial = _is_identity(perm)
        self.register_buffer("perm", None if trivial else perm)
        self.register_buffer("inverse", None if trivial else inverse)
        self.plans = MeasuredPlans()
        self._dense = DerivedWeight()  # the dense plan's weight and bias

    @classmethod
    @torch.no_grad()
    def from_dgconv(cls, layer: DGConv2d) -> "GroupedConv2d":
        gates = layer.hard_gates()
        c = layer.out_channels
        conv = nn.Conv2d(
            c,
            c,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            groups=2 ** int((gates < 0.5).sum()),
            bias=layer.bias is not None,
        )
        conv = conv.to(device=layer.weight.device, dtype=layer.weight.dtype)
        conv.weight.copy_(grouped_weight(layer.weight, gates))
        perm, _ = group_permutation(gates)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.index_select(0, perm))
        return cls(conv, gates, layer.area).train(layer.training)

    def hard_gates(self) -> torch.Tensor:
        return self.gates

    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> "GroupedConv2d":
        """This layer with the eval-mode ``bn`` after it folded into the grouped conv: the inner conv's output
        channel ``i`` is the layer's channel ``perm[i]``, so it takes that channel's scale and shift."""
        s, t = bn_scale_shift(bn)
        if self.perm is not None:
            s, t = s.index_select(0, self.perm), t.index_select(0, self.perm)
        bias = self.conv.bias * s + t if self.conv.bias is not None else t
        self.conv.weight.mul_(s.view(-1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
        self.plans.forget()  # the timings are stale (the dense plan's weight follows the weight's version)
        return self

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        if self.perm is None:
            return self.conv(x)
        return self.conv(x.index_select(1, self.perm)).index_select(1, self.inverse)

    def _dense_weight_and_bias(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The dense plan's weight (zero blocks included, in the grouped weight's layout) and bias, channels in the
        layer's order."""
        bias = self.conv.bias
        if bias is not None and self.inverse is not None:
            bias = bias.index_select(0, self.inverse)
        dense = dense_from_grouped(weight.detach(), self.gates).contiguous(memory_format=layout_of(weight))
        return dense, None if bias is None else bias.detach()

    def _dense_conv(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        weight, bias = self._dense.get(conv.weight, self._dense_weight_and_bias)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)

    def _plans(self, x: torch.Tensor, conv: nn.Conv2d) -> Plans:
        return {"grouped": lambda: self._grouped(x), "dense": lambda: self._dense_conv(x, conv)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv  # one submodule lookup: at batch 1 each costs about as much as a small operator
        if conv.groups == 1:  # no structure learned: both plans are this one conv
            return conv(x)
        if self.plans.choose(self, x, lambda: self._plans(x, conv), reference="grouped") == "dense":
            return self._dense_conv(x, conv)
        return self._grouped(x)

    def dense_weight(self) -> torch.Tensor:
        return dense_from_grouped(self.conv.weight.detach(), self.gates)
