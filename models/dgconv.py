"""DGConv / GroupNet (Zhang et al., ICCV 2019): a 3x3 conv that learns its own group structure.

``y = conv(x, W * U)`` with ``U = U_1 (x) U_2 (x) ... (x) U_K`` (Kronecker), ``K = log2 C`` and
``U_k = g_k * ones(2, 2) + (1 - g_k) * eye(2)``: only K real gate parameters ``theta`` per layer,
binarized as ``g_k = 1[theta_k > 0]``. Channels ``i`` and ``j`` are connected iff their binary digits
agree wherever ``g_k = 0`` (U_1 is the most significant digit), so U is block-diagonal up to a channel
permutation with ``2^(K - sum g)`` groups of ``2^(sum g)`` channels, and ``nnz(U) = C * prod(1 + g_k)``.
All gates 0 is depthwise, all 1 is dense; gates like ``(1, 0)`` give interleaved groups (0,2)(1,3).

Execution:

- train mode: the masked form (dense weights times U), the only one with gradients to ``theta``.
- eval mode: a REAL grouped convolution computed from the current gates (gather each group's channels,
  ``groups=G`` conv with the block-diagonal weights, scatter back); same outputs, fewer MACs.
- ``model.for_inference()`` returns a new model where every DGConv2d is a ``GroupedConv2d`` (static
  permutation buffers + ``nn.Conv2d(C, C, k, groups=G)`` with only the block-diagonal weights), so the
  parameter count shrinks too. ``models.checkpoint.load_checkpoint`` calls it: checkpoints load exported.

Design decisions and deviations from the paper / reference code (d-li14/dgconv.pytorch):

- ``theta`` is seeded by torch's RNG (the reference uses Python's ``random``): ``theta_k ~ U(gate_init -
  gate_noise, gate_init + gate_noise)``, by default U(0, 1): every layer starts dense, and the spread makes
  the budget turn gates off one at a time instead of all at once (equal thetas flip together and collapse
  the net to depthwise). ``gate_init=0, gate_noise=1e-8`` gives the reference's random signs.
- Straight-through estimator: forward hard ``1[theta > 0]``, backward through ``sigmoid(theta)`` (default,
  ``ste="sigmoid"``) or the clipped identity of BinaryConnect (``ste="identity"``, the reference's choice).
- Only convs with ``C_in == C_out`` (a power of two) are DGConv: conv2 of every block and conv1 of
  non-downsampling blocks. The first conv of a downsampling block (C_in != C_out), the stem, the 1x1
  shortcuts and the head stay plain. DGConv2d supports stride all the same.
- Complexity: ``sum_l nnz(U_l) * k^2 * area_l`` (MAC-weighted; ``area_l`` = the layer's output area relative
  to the stem's, static from the strides, exact for even input sizes), or the paper's plain ``sum_l
  nnz(U_l)`` (``complexity="nnz"``). The budget is a fraction of the dense complexity.
- Budget loss: a hinge ``CE + w * relu(r / budget - 1)`` on the complexity ratio ``r`` from the STE gates
  (default), or the paper's multiplicative ``CE * max(r / budget, 1)^w`` (= ``L * (o / zeta)^a`` with
  ``a = -w`` over budget).
- The gates train with plain SGD (no momentum, no weight decay, lr times ``--gate-lr-scale``): with
  momentum, the velocity built while over budget keeps flipping gates off long after the budget is met
  (a short run went 1.0 -> 0.13 for a 0.5 budget); without it the complexity settles around the budget.
  The one-sided term means the final complexity can sit a little above or below the target.
- Permutations are explicit ``index_select`` on channels (skipped when a layer's groups are already
  contiguous); they are not folded into neighbouring BN layers.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model, register_recipe
from .resnet import ResNet
from .stages import Stage, StepOutput
from .decisions import DecisionKind, register_kind

STE_KINDS = ("sigmoid", "identity")
COMPLEXITY_KINDS = ("macs", "nnz")
BUDGET_LOSSES = ("hinge", "power")


# --- the gate algebra: pure functions of a (K,) gate vector -----------------------------------------------

def binary_gates(theta: torch.Tensor, ste: str = "sigmoid") -> torch.Tensor:
    """Hard ``1[theta > 0]`` forward; gradient of ``sigmoid(theta)`` (or clipped identity) backward."""
    hard = (theta > 0).to(theta.dtype)
    if ste == "sigmoid":
        soft = torch.sigmoid(theta)
    elif ste == "identity":
        soft = theta.clamp(-1.0, 1.0)
    else:
        raise ValueError(f"ste must be one of {', '.join(STE_KINDS)}, not {ste!r}")
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
    channels = torch.arange(2 ** k, device=gates.device)
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


GROUPS = register_kind(DecisionKind(
    "groups", "dgconv", "model",
    {"groups": ("integer", "number of channel groups"), "group_of_channel": ("array", "group index of each channel"),
     "channels": ("integer", "channels of the layer"), "gates": ("array", "the learned binary gates"),
     "nnz": ("integer", "non-zero entries of the connectivity mask"), "mask": ("array", "the connectivity mask")},
    "the learned group structure of a DGConv layer", optional=("channels", "gates", "nnz", "mask")))


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

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1, bias: bool = False,
                 gate_init: float = 0.5, gate_noise: float = 0.5, ste: str = "sigmoid") -> None:
        super().__init__()
        if channels < 1 or channels & (channels - 1):
            raise ValueError(f"DGConv2d needs a power-of-two channel count (C_in = C_out), got {channels}")
        if ste not in STE_KINDS:
            raise ValueError(f"ste must be one of {', '.join(STE_KINDS)}, not {ste!r}")
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
            return F.conv2d(x, grouped_weight(self.weight, gates), self.bias, self.stride, self.padding, self.dilation,
                            groups=self.groups())
        bias = None if self.bias is None else self.bias.index_select(0, perm)
        y = F.conv2d(x.index_select(1, perm), grouped_weight(self.weight, gates), bias, self.stride, self.padding,
                     self.dilation, groups=self.groups())
        return y.index_select(1, inverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_masked(x) if self.training else self.forward_grouped(x)

    def dense_weight(self) -> torch.Tensor:
        """``W * U``: the weight of the equivalent plain conv."""
        return self.weight.detach() * self.mask().to(self.weight.dtype)[:, :, None, None]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, gates={self.hard_gates().int().tolist()}, "
                f"groups={self.groups()}, ste={self.ste}")


class GroupedConv2d(nn.Module, _GroupStructure):
    """Exported DGConv2d: gather channels by group, ``nn.Conv2d(C, C, k, groups=G)``, scatter back.

    Buffers keep the learned gates (so ``mask()`` and ``group_of_channel()`` still work) and the two
    permutations (``None`` when the groups are already contiguous: no gather at all).
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

    @classmethod
    @torch.no_grad()
    def from_dgconv(cls, layer: DGConv2d) -> "GroupedConv2d":
        gates = layer.hard_gates()
        c = layer.out_channels
        conv = nn.Conv2d(c, c, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                         groups=2 ** int((gates < 0.5).sum()), bias=layer.bias is not None)
        conv = conv.to(device=layer.weight.device, dtype=layer.weight.dtype)
        conv.weight.copy_(grouped_weight(layer.weight, gates))
        perm, _ = group_permutation(gates)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.index_select(0, perm))
        return cls(conv, gates, layer.area).train(layer.training)

    def hard_gates(self) -> torch.Tensor:
        return self.gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.perm is None:
            return self.conv(x)
        return self.conv(x.index_select(1, self.perm)).index_select(1, self.inverse)

    def dense_weight(self) -> torch.Tensor:
        return dense_from_grouped(self.conv.weight.detach(), self.gates)


# --- G-ResNet -----------------------------------------------------------------------------------------------

DG_LAYERS = (DGConv2d, GroupedConv2d)


class DGConvResNet(ResNet):
    """CIFAR ResNet whose ``C_in == C_out`` 3x3 convs are DGConv2d (names as in ``models.resnet``)."""

    method = "dgconv"

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64), gate_init: float = 0.5, gate_noise: float = 0.5,
                 ste: str = "sigmoid") -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        scale = 1  # downsampling so far, relative to the stem's resolution
        for stage in self.stages():
            for block in stage:
                for name in ("conv1", "conv2"):
                    conv: nn.Conv2d = getattr(block, name)
                    scale *= conv.stride[0]
                    if conv.in_channels != conv.out_channels:
                        continue  # the first conv of a downsampling block: C_in != C_out, stays a plain conv
                    layer = DGConv2d(conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0],
                                     conv.bias is not None, gate_init, gate_noise, ste)
                    with torch.no_grad():
                        layer.weight.copy_(conv.weight)  # keep init_weights' kaiming init
                    layer.area = 1.0 / scale ** 2
                    setattr(block, name, layer)

    def dg_layers(self) -> list[tuple[str, nn.Module]]:
        """``[("layer1.0.conv1", layer), ...]``: the DGConv2d (or exported GroupedConv2d) layers in order."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, DG_LAYERS)]

    def structure(self, mask: bool = False) -> list[dict]:
        """The learned group structure of every DGConv layer (``analysis.routing``'s ``structure``)."""
        out = []
        for name, layer in self.dg_layers():
            groups = layer.group_of_channel()
            entry = {"layer": name, "kind": "groups", "groups": layer.groups(), "group_of_channel": groups,
                     "channels": len(groups), "gates": layer.hard_gates().int().tolist(), "nnz": layer.nnz()}
            if mask:
                entry["mask"] = layer.mask().int().tolist()
            out.append(entry)
        return out

    def masks(self) -> dict[str, torch.Tensor]:
        """Layer name -> binary C x C mask U (for the Structure page)."""
        return {name: layer.mask() for name, layer in self.dg_layers()}

    def complexity(self, kind: str = "macs") -> torch.Tensor:
        """``sum_l nnz(U_l) * k^2 * area_l`` (``"macs"``) or ``sum_l nnz(U_l)`` (``"nnz"``), differentiable via the STE."""
        if kind not in COMPLEXITY_KINDS:
            raise ValueError(f"complexity must be one of {', '.join(COMPLEXITY_KINDS)}, not {kind!r}")
        terms = [layer.nnz_ste() * self._weight(layer, kind) for _, layer in self.dg_layers() if isinstance(layer, DGConv2d)]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def dense_complexity(self, kind: str = "macs") -> float:
        """The complexity with every gate on (U = ones)."""
        return float(sum(4 ** layer.hard_gates().numel() * self._weight(layer, kind) for _, layer in self.dg_layers()))

    def complexity_ratio(self, kind: str = "macs") -> torch.Tensor:
        return self.complexity(kind) / self.dense_complexity(kind)

    @staticmethod
    def _weight(layer: nn.Module, kind: str) -> float:
        if kind == "nnz":
            return 1.0
        conv = layer.conv if isinstance(layer, GroupedConv2d) else layer
        return conv.kernel_size[0] * conv.kernel_size[1] * layer.area

    def for_inference(self) -> "DGConvResNet":
        """A NEW model in which every DGConv2d is a real grouped conv; ``self`` is left untouched.

        ``meta``, ``arch`` and ``arch_config`` travel with the copy. The exported model is for inference:
        save checkpoints from the trainable (masked) model.
        """
        exported = copy.deepcopy(self)
        for name, layer in exported.dg_layers():
            if isinstance(layer, DGConv2d):
                parent, _, attr = name.rpartition(".")
                setattr(exported.get_submodule(parent), attr, GroupedConv2d.from_dgconv(layer))
        for key in ("meta", "arch", "arch_config"):
            if hasattr(self, key):
                setattr(exported, key, copy.deepcopy(getattr(self, key)))
        return exported

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet computing the same function (dense convs with weights ``W * U``), for ``cost.full_macs``."""
        dense = ResNet(self.depth, self.fc.out_features, self.stem[0].in_channels, self.widths)
        state = self.state_dict()
        layers = dict(self.dg_layers())
        new_state = {}
        for key in dense.state_dict():
            module, _, attr = key.rpartition(".")
            new_state[key] = layers[module].dense_weight() if module in layers and attr == "weight" else state[key]
        dense.load_state_dict(new_state)
        return dense.to(self.fc.weight.device).train(self.training)


def _dgconv(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64),
                gate_init: float = 0.5, gate_noise: float = 0.5, ste: str = "sigmoid") -> DGConvResNet:
        return DGConvResNet(depth, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)

    builder.__name__ = f"dgconv_resnet{depth}"
    builder.__doc__ = f"G-ResNet-{depth}: ResNet-{depth} whose C_in == C_out 3x3 convs learn their groups (DGConv)."
    return register_model(builder)


dgconv_resnet8, dgconv_resnet20, dgconv_resnet32, dgconv_resnet56, dgconv_resnet110 = (
    _dgconv(d) for d in (8, 20, 32, 56, 110))


# --- budgeted training ----------------------------------------------------------------------------------

def budget_loss(task_loss: torch.Tensor, ratio: torch.Tensor, budget: float, weight: float,
                form: str = "hinge") -> torch.Tensor:
    """Task loss plus the budget term; zero extra loss (and no gate gradient from it) under budget.

    ``"hinge"``: ``L + weight * relu(ratio / budget - 1)``. ``"power"``: the paper's ``L * (o / zeta)^a``,
    written ``L * max(ratio / budget, 1)^weight``.
    """
    over = ratio / budget
    if form == "hinge":
        return task_loss + weight * F.relu(over - 1)
    if form == "power":
        return task_loss * over.clamp(min=1.0) ** weight
    raise ValueError(f"budget loss must be one of {', '.join(BUDGET_LOSSES)}, not {form!r}")


class BudgetedStage(Stage):
    """Supervised cross-entropy through the masked convs, plus a complexity budget on the STE gates."""

    def __init__(self, epochs: int, lr: float, weight_decay: float = 5e-4, budget: float = 0.5, budget_weight: float = 1.0,
                 budget_loss: str = "hinge", complexity: str = "macs", gate_lr_scale: float = 1.0) -> None:
        super().__init__("budgeted", epochs, lr, weight_decay)
        self.gate_lr_scale = gate_lr_scale
        if not 0 < budget <= 1:
            raise ValueError(f"--budget is a fraction of the dense complexity in (0, 1], got {budget}")
        if budget_loss not in BUDGET_LOSSES or complexity not in COMPLEXITY_KINDS:
            raise ValueError(f"budget loss {budget_loss!r} / complexity {complexity!r} unknown")
        self.budget, self.budget_weight = budget, budget_weight
        self.budget_loss, self.complexity = budget_loss, complexity

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Weights as in ``Stage`` (SGD, Nesterov momentum); gates ``theta`` with plain SGD (see the module docstring)."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        gates = [p for n, p in named if n.endswith(".theta")]
        decay = [p for n, p in named if p.ndim > 1]
        no_decay = [p for n, p in named if p.ndim <= 1 and not n.endswith(".theta")]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
                  {"params": gates, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False,
                   "lr": self.lr * self.gate_lr_scale}]
        return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        logits = model(x)
        ratio = getattr(model, "module", model).complexity_ratio(self.complexity)
        loss = budget_loss(F.cross_entropy(logits, y), ratio, self.budget, self.budget_weight, self.budget_loss)
        return StepOutput(loss, logits)

    def on_epoch_end(self, trainer, epoch: int) -> None:
        net = getattr(trainer.model, "module", trainer.model)
        if getattr(trainer, "rank", 0) == 0:
            with torch.no_grad():
                ratio = float(net.complexity_ratio(self.complexity))
            groups = [layer.groups() for _, layer in net.dg_layers()]
            print(f"[dgconv] complexity {ratio:.3f} of dense (budget {self.budget}); groups per layer {groups}",
                  file=sys.stderr, flush=True)


DGCONV_DEFAULTS = {"budget": 0.5, "budget_weight": 1.0, "budget_loss": "hinge", "budget_complexity": "macs",
                   "gate_lr_scale": 1.0}


def add_dgconv_arguments(parser: argparse.ArgumentParser) -> None:
    """DGConv options for ``models.train``'s parser (other methods ignore them)."""
    g = parser.add_argument_group("DGConv")
    g.add_argument("--budget", type=float, default=DGCONV_DEFAULTS["budget"],
                   help="target complexity as a fraction of the dense DGConv layers (e.g. 0.5)")
    g.add_argument("--budget-weight", type=float, default=DGCONV_DEFAULTS["budget_weight"],
                   help="weight of the hinge term (or the exponent |a| of the power form)")
    g.add_argument("--budget-loss", choices=BUDGET_LOSSES, default=DGCONV_DEFAULTS["budget_loss"],
                   help="hinge: CE + w*relu(r/budget - 1); power: the paper's CE * max(r/budget, 1)^w")
    g.add_argument("--budget-complexity", choices=COMPLEXITY_KINDS, default=DGCONV_DEFAULTS["budget_complexity"],
                   help="macs: nnz(U) * k^2 * H*W per layer; nnz: the paper's sum of nnz(U)")
    g.add_argument("--gate-lr-scale", type=float, default=DGCONV_DEFAULTS["gate_lr_scale"],
                   help="learning rate of the gate parameters theta, as a multiple of --lr (plain SGD, no momentum)")


@register_recipe("dgconv", arguments=add_dgconv_arguments)
def dgconv_recipe(args: argparse.Namespace) -> list[Stage]:
    """One supervised stage (``--epochs``, ``--lr``) with the budget term on the gates."""
    opt = {k: getattr(args, k, v) for k, v in DGCONV_DEFAULTS.items()}
    return [BudgetedStage(args.epochs, args.lr, getattr(args, "weight_decay", 5e-4), opt["budget"], opt["budget_weight"],
                          opt["budget_loss"], opt["budget_complexity"], opt["gate_lr_scale"])]
