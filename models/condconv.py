"""CondConv (Yang et al., NeurIPS 2019): each example convolves with its own mixture of expert kernels.

``y = (a_1 W_1 + ... + a_E W_E) * x`` with routing ``a = sigmoid(FC(GlobalAvgPool(x)))``. The kernels are
combined per example (``(B, E) @ (E, P)``) and ONE grouped convolution runs over the whole batch (input
as ``(1, B*C, H, W)``, ``groups = B * groups``; timm's ``CondConv2d``), so inference costs one conv plus
the small routing and combination work, never E convolutions. Both are counted by ``models.trace``.

Design choices and deviations from the paper (and its TF code):

- One router per residual block (global pool of the block input -> Linear -> sigmoid), shared by the
  block's two convs, as in METHODS.md; the paper gives every CondConv layer its own routing function.
  Sigmoid, not softmax (the paper's ablation). No dropout on the routing weights.
- Only the later stage(s) are CondConv (``condconv_stages``, default ``(3,)``); 4 (default) or 8
  experts. The shortcut (1x1 projection) stays a plain conv, BatchNorm is shared by all experts.
- Expert weights are stored flat, ``(E, out * in/groups * k * k)``, like timm, not ``(E, out, in/groups,
  k, k)``: ``Module.to(memory_format=torch.channels_last)`` (used by ``models.train`` on CPU) rejects 5-D
  parameters. ``CondConv2d.experts`` is the ``(E, out, in/groups, k, k)`` view.
- Initialization: each expert is Kaiming-normal (fan_out, ReLU) scaled by ``2 / sqrt(E)``, and the
  router bias is zero, so at the neutral routing ``a = 0.5`` the mixture has exactly the variance of a
  Kaiming-initialized conv for any E (for E = 4 each expert is plain Kaiming, as in the paper).
  The block's last BN starts at zero, as in the baseline ResNet.
- Training: one supervised stage, the baseline's budget. ``--init-from`` a plain ResNet upcycles it
  (``CondConvResNet.upcycle``: every expert starts from the dense kernel), which the bundled model uses to
  fit the CPU budget; it is then compared with the plain ResNet fine-tuned for the same epochs. ``--expert-weight-decay`` optionally sets a
  different weight decay for the expert kernels (default: the same as ``--weight-decay``).
- The batched conv is exact (equal to a per-example loop and to ``sum_e a_e conv(x, W_e)``), works at
  batch 1 and on channels_last inputs (``reshape``, never ``view``, on activations).

``model(x)`` returns logits; ``model(x, return_routing=True)`` returns ``CondConvOutput(logits, routing)``
with routing ``(B, L, E)`` in the order of ``routing_layers()``. Under an active ``models.trace.Trace``
each CondConv block records ``{"layer": "layer3.0", "kind": "routing", "weights": [E floats]}``.
"""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model, register_recipe
from .resnet import BasicBlock, ResNet, init_weights
from .stages import Stage
from .trace import current_trace
from .decisions import DecisionKind, register_kind


ROUTING = register_kind(DecisionKind(
    "routing", "condconv", "image",
    {"weights": ("array", "the router's sigmoid weight of each expert kernel")},
    "the expert mixture of a CondConv block",
    signature=lambda d: max(range(len(d["weights"])), key=d["weights"].__getitem__)))


class CondConv2d(nn.Module):
    """A conv whose kernel is a per-example mixture of ``num_experts`` expert kernels (one grouped conv per batch)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, groups: int = 1,
                 num_experts: int = 4, bias: bool = False) -> None:
        super().__init__()
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"channels ({in_ch} in, {out_ch} out) must be divisible by groups={groups}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        self.num_experts = num_experts
        self.weight_shape = (out_ch, in_ch // groups, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        self.bias = nn.Parameter(torch.empty(num_experts, out_ch)) if bias else None
        self.reset_parameters()

    @property
    def experts(self) -> torch.Tensor:
        """The expert kernels as ``(E, out, in/groups, k, k)`` (a view of the flat parameter)."""
        return self.weight.view(self.num_experts, *self.weight_shape)

    def reset_parameters(self) -> None:
        """Kaiming-normal experts scaled so the mixture at routing 0.5 has a Kaiming conv's variance."""
        fan_out = self.weight_shape[0] * self.kernel_size ** 2  # as nn.init's fan_out of one expert kernel
        std = math.sqrt(2.0 / fan_out) * 2.0 / math.sqrt(self.num_experts)
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(math.prod(self.weight_shape[1:]))
            nn.init.uniform_(self.bias, -bound, bound)

    def combined_kernel(self, routing: torch.Tensor) -> torch.Tensor:
        """Each example's kernel, ``(B, out, in/groups, k, k)``, from routing ``(B, E)``."""
        return (routing @ self.weight).reshape(routing.shape[0], *self.weight_shape)

    def forward(self, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if routing.shape != (b, self.num_experts):
            raise ValueError(f"routing must be ({b}, {self.num_experts}), got {tuple(routing.shape)}")
        kernel = (routing @ self.weight).reshape(b * self.out_channels, *self.weight_shape[1:])
        bias = (routing @ self.bias).reshape(b * self.out_channels) if self.bias is not None else None
        y = F.conv2d(x.reshape(1, b * c, h, w), kernel, bias, self.stride, self.padding, groups=b * self.groups)
        return y.reshape(b, self.out_channels, *y.shape[-2:])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, num_experts={self.num_experts}, bias={self.bias is not None}")


class Router(nn.Module):
    """``sigmoid(Linear(GlobalAvgPool(x)))``: independent (not normalized) weights in (0, 1), one per expert."""

    def __init__(self, in_ch: int, num_experts: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_ch, num_experts)
        nn.init.zeros_(self.fc.bias)  # mean routing starts near 0.5, where the expert init is calibrated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


class CondConvBlock(BasicBlock):
    """BasicBlock whose two 3x3 convs are CondConv2d, routed by one router that reads the block input."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, num_experts: int = 4) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.conv1 = CondConv2d(in_ch, out_ch, 3, stride, 1, num_experts=num_experts)
        self.conv2 = CondConv2d(out_ch, out_ch, 3, 1, 1, num_experts=num_experts)
        self.router = Router(in_ch, num_experts)
        self.layer_name = ""  # the trace name ("layer3.0"), set by CondConvResNet

    def residual(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:
        if routing is None:
            routing = self.router(x)
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x, routing))), routing))

    def routed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, routing (B, E))``; records the routing to the active trace."""
        routing = self.router(x)
        trace = current_trace()
        if trace is not None:
            trace.record(self.layer_name, "routing", weights=routing)
        return F.relu(self.residual(x, routing) + self.shortcut(x)), routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.routed(x)[0]


class CondConvOutput(NamedTuple):
    logits: torch.Tensor   # (B, classes)
    routing: torch.Tensor  # (B, L, E), blocks in the order of routing_layers()


class CondConvResNet(ResNet):
    """CIFAR-style ResNet (``models.resnet`` names) whose blocks in ``condconv_stages`` are CondConv blocks."""

    method = "condconv"
    benchmark_batch = 64  # analysis.bench measures throughput where the paper compares: batch 64

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64), num_experts: int = 4,
                 condconv_stages: tuple[int, ...] = (3,)) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        stages = tuple(sorted({int(s) for s in condconv_stages}))
        if not stages or any(s not in (1, 2, 3) for s in stages):
            raise ValueError(f"condconv_stages must be a non-empty subset of (1, 2, 3), got {condconv_stages!r}")
        if int(num_experts) < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts, self.condconv_stages = int(num_experts), stages
        for s in stages:
            stage = self.stages()[s - 1]
            for j, old in enumerate(stage):
                block = CondConvBlock(old.conv1.in_channels, old.conv1.out_channels, old.conv1.stride[0], self.num_experts)
                init_weights(block)  # shortcut conv, BN, zero last BN; CondConv2d and Router init themselves
                block.layer_name = f"layer{s}.{j}"
                stage[j] = block

    def routing_blocks(self) -> list[tuple[str, CondConvBlock]]:
        return [(f"layer{s}.{j}", b) for s, stage in enumerate(self.stages(), 1) for j, b in enumerate(stage)
                if isinstance(b, CondConvBlock)]

    def routing_layers(self) -> list[str]:
        """Names of the CondConv blocks in execution order (the ``layer`` of their trace decisions)."""
        return [name for name, _ in self.routing_blocks()]

    def forward(self, x: torch.Tensor, return_routing: bool = False) -> torch.Tensor | CondConvOutput:
        x = self.stem(x)
        routing = []
        for stage in self.stages():
            for block in stage:
                if isinstance(block, CondConvBlock):
                    x, r = block.routed(x)
                    routing.append(r)
                else:
                    x = block(x)
        logits = self.head(x)
        return CondConvOutput(logits, torch.stack(routing, 1)) if return_routing else logits

    @torch.no_grad()
    def upcycle(self, dense_state: dict[str, torch.Tensor]) -> list[str]:
        """Start every expert from the dense kernel of the same name (``models.train --init-from`` a plain ResNet).

        "Sparse upcycling" (Komatsuzaki et al. 2022), not in the CondConv paper (which trains from scratch):
        each expert is ``W * 2 / E``, so at the neutral routing ``a = 0.5`` the mixture is exactly ``W`` and the
        network starts as the dense one; the experts diverge as the routing differs between examples.
        Returns the names of the kernels it used.
        """
        used = []
        for name, module in self.named_modules():
            key = f"{name}.weight"
            if isinstance(module, CondConv2d) and key in dense_state and tuple(dense_state[key].shape) == module.weight_shape:
                module.weight.copy_(dense_state[key].reshape(1, -1).expand_as(module.weight) * (2.0 / module.num_experts))
                used.append(key)
        return used

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet of the same depth/widths (for ``cost.full_macs``), with every weight both share.

        CondConv convs keep a fresh Kaiming init: no single dense kernel stands for a per-example mixture.
        """
        dense = ResNet(self.depth, self.fc.out_features, self.stem[0].in_channels, self.widths)
        own = self.state_dict()
        shared = {k: v for k, v in dense.state_dict().items() if k in own and own[k].shape == v.shape}
        dense.load_state_dict({**dense.state_dict(), **{k: own[k] for k in shared}})
        return dense.to(self.fc.weight.device).train(self.training)


def _condconv(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64),
                num_experts: int = 4, condconv_stages: tuple[int, ...] | list[int] = (3,)) -> CondConvResNet:
        return CondConvResNet(depth, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))

    builder.__name__ = f"condconv_resnet{depth}"
    builder.__doc__ = f"CondConv ResNet-{depth}: CondConv blocks in condconv_stages (default last), num_experts 4 or 8."
    return register_model(builder)


condconv_resnet8, condconv_resnet20, condconv_resnet32, condconv_resnet56, condconv_resnet110 = (
    _condconv(d) for d in (8, 20, 32, 56, 110))


# --- training recipe: one supervised stage, the baseline's budget ------------------------------------

class CondConvStage(Stage):
    """Supervised cross-entropy (as the baseline); the expert kernels may get their own weight decay."""

    def __init__(self, epochs: int, lr: float, weight_decay: float = 5e-4, expert_weight_decay: float | None = None) -> None:
        super().__init__("supervised", epochs, lr, weight_decay)
        self.expert_weight_decay = weight_decay if expert_weight_decay is None else expert_weight_decay

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        experts = {id(m.weight) for m in model.modules() if isinstance(m, CondConv2d)}
        params = self.parameters(model)
        groups = [
            {"params": [p for p in params if id(p) in experts], "weight_decay": self.expert_weight_decay},
            {"params": [p for p in params if id(p) not in experts and p.ndim > 1], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return torch.optim.SGD([g for g in groups if g["params"]], lr=self.lr, momentum=self.momentum,
                               nesterov=self.momentum > 0)


def add_condconv_arguments(parser: argparse.ArgumentParser) -> None:
    """CondConv options for ``models.train``'s parser; experts and stages go in ``--model-args``."""
    g = parser.add_argument_group("CondConv (builder options via --model-args '{\"num_experts\": 8, \"condconv_stages\": [2, 3]}')")
    g.add_argument("--expert-weight-decay", type=float, default=None,
                   help="weight decay of the CondConv expert kernels (default: --weight-decay)")


@register_recipe("condconv", arguments=add_condconv_arguments)
def condconv_recipe(args: argparse.Namespace) -> list[Stage]:
    """One supervised stage with the baseline's epochs, lr and weight decay."""
    return [CondConvStage(args.epochs, args.lr, getattr(args, "weight_decay", 5e-4), getattr(args, "expert_weight_decay", None))]
