"""CondConv (Yang et al., NeurIPS 2019): each example convolves with its own mixture of expert kernels.

``y = (a_1 W_1 + ... + a_E W_E) * x`` with routing ``a = sigmoid(FC(GlobalAvgPool(x)))``. The kernels are
combined per example (``(B, E) @ (E, P)``) and ONE grouped convolution runs over the whole batch (input
as ``(1, B*C, H, W)``, ``groups = B * groups``; timm's ``CondConv2d``), so inference costs one conv plus
the small routing and combination work, never E convolutions. Both are counted by ``models.trace``.
The layers (``CondConv2d``, ``Router``) are in ``models.layers.condconv``, the recipe in ``models.recipes.condconv``.

Design choices and deviations from the paper (and its TF code):

- One router per residual block (global pool of the block input -> Linear -> sigmoid), shared by the
  block's two convs (a design choice of this project); the paper gives every CondConv layer its own
  routing function.
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
- Training (``models.recipes.condconv``): one supervised stage, the baseline's budget. ``--init-from`` a plain ResNet
  upcycles it (``CondConvResNet.upcycle``: every expert starts from the dense kernel), which the bundled model uses to
  fit the CPU budget; it is then compared with the plain ResNet fine-tuned for the same epochs.
  ``--expert-weight-decay`` optionally sets a different weight decay for the expert kernels (default: the same as
  ``--weight-decay``).
- A routing forced (an intervention) runs without the router; one forced all onto one expert (weight 1, the others
  0) runs that expert's kernel alone, no mixture (``CondConv2d.expert_forward``: exactly the one-hot mixture).
- The batched conv is exact (equal to a per-example loop and to ``sum_e a_e conv(x, W_e)``), works at
  batch 1 and on channels_last inputs (``reshape``, never ``view``, on activations).

``model(x)`` returns logits; ``model(x, return_routing=True)`` returns ``CondConvOutput(logits, routing)``
with routing ``(B, L, E)`` in the order of ``routing_layers()``. Under an active ``models.trace.Trace``
each CondConv block records ``{"layer": "layer3.0", "kind": "routing", "weights": [E floats]}``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .errors import UsageError
from .layers.condconv import CondConv2d, Router
from .layers.fused import fused_ops, runs_compiled
from .registry import register_model
from .resnet import BasicBlock, ResNet, init_weights
from .trace import PerRow, current_trace
from .decisions import DecisionKind, register_kind


ROUTING = register_kind(
    DecisionKind(
        "routing",
        "condconv",
        "image",
        {"weights": ("array", "the router's sigmoid weight of each expert kernel")},
        "the expert mixture of a CondConv block",
        signature=lambda d: max(range(len(d["weights"])), key=d["weights"].__getitem__),
        forcible=("weights",),
    )
)


class CondConvBlock(BasicBlock):
    """BasicBlock whose two 3x3 convs are CondConv2d, routed by one router that reads the block input."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, num_experts: int = 4) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.conv1 = CondConv2d(in_ch, out_ch, 3, stride, 1, num_experts=num_experts)
        self.conv2 = CondConv2d(out_ch, out_ch, 3, 1, 1, num_experts=num_experts)
        self.router = Router(in_ch, num_experts)
        self.layer_name = ""  # the trace name ("layer3.0"), set by CondConvResNet

    def residual(self, x: torch.Tensor, routing: torch.Tensor | int | None = None) -> torch.Tensor:
        if routing is None:
            routing = self.router(x)
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x, routing))), routing))

    compiled = False  # batch-1 routing and kernel mixing run the compiled kernel (``models.layers.fused``)

    def prepare_fast_form(self) -> None:
        """The fast form: at batch 1, the router and both kernel mixtures in one compiled call (where built)."""
        self.compiled = (
            fused_ops()
            and self.conv1.bias is None
            and self.conv2.bias is None
            and self.conv1.weight.dtype == torch.float32
        )

    def _routed_one(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``routed`` at batch 1, unforced, nothing to record: the compiled router and mixtures, two plain convs."""
        c1, c2 = self.conv1, self.conv2
        layout = c1.kernels_channels_last(x)  # h, the second conv's input, is laid out as x
        routing, k1, k2 = torch.ops.routescope.condconv_mix(
            x, self.router.fc.weight, self.router.fc.bias, c1.flat_experts(layout), c2.flat_experts(layout)
        )
        h = F.relu(F.conv2d(x, c1.kernel(k1, layout), c1.shift, c1.stride, c1.padding, 1, c1.groups))
        h = F.conv2d(h, c2.kernel(k2, layout), c2.shift, c2.stride, c2.padding, 1, c2.groups)
        return F.relu(h + self.shortcut(x)), routing

    def routed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, routing (B, E))``; records the routing to the active trace."""
        trace = current_trace()
        forced = trace.forced(self.layer_name, ROUTING) if trace is not None else None
        # the compiled kernel routes and mixes; a forced routing needs neither (``decide_routing``)
        if self.compiled and runs_compiled(x) and x.shape[0] == 1 and forced is None and not (trace and trace.observe):
            return self._routed_one(x)
        routing, runs = decide_routing(self.router, x, self.layer_name)
        return F.relu(self.residual(x, runs) + self.shortcut(x)), routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.routed(x)[0]


def decide_routing(router: Router, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor | int]:
    """The routing a CondConv block named ``layer`` runs with, as ``(weights (B, E), what the convs take)``: its
    router's on ``x``, or the one an override of the active trace forces (the router then does not run); recorded
    to the trace (``"forced": true`` when forced). A forced routing that is all on one expert is handed to the
    convs as that expert's index (``CondConv2d.expert_forward``: its kernel alone, no mixture), a per-row one with
    one expert per image as their indices (each expert's images together). Shared by every
    model whose blocks route their CondConv layers with one router (``models.efficientnet`` too)."""
    trace = current_trace()
    forced = trace.forced(layer, ROUTING) if trace is not None else None
    if forced is None:
        routing = router(x)
    else:
        routing = forced_routing(forced, x.new_zeros(x.shape[0], router.fc.out_features))
    if trace is not None:
        trace.record(layer, ROUTING, weights=routing, **({"forced": True} if forced is not None else {}))
    if isinstance(forced, PerRow):  # one expert per image where every image is forced onto one
        experts = [one_expert(weights) for weights in forced]
        return routing, routing if None in experts else torch.tensor(experts, device=x.device)
    expert = one_expert(forced) if forced is not None else None
    return routing, (routing if expert is None else expert)


def one_expert(weights) -> int | None:
    """The expert a routing override puts all its weight on (1 on it, 0 on every other), else None."""
    values = [float(w) for w in torch.as_tensor(weights).flatten().tolist()]
    ones = [e for e, w in enumerate(values) if w == 1.0]
    return ones[0] if len(ones) == 1 and all(w == 0.0 for e, w in enumerate(values) if e != ones[0]) else None


def forced_routing(weights, routing: torch.Tensor) -> torch.Tensor:
    """An override's expert weights (or a ``PerRow`` of them) as the (B, E) routing the block then runs with."""
    rows = weights if isinstance(weights, PerRow) else [weights]
    forced = torch.as_tensor(rows, dtype=routing.dtype, device=routing.device).flatten(1)
    if forced.shape[1] != routing.shape[1]:
        raise ValueError(f"routing override needs {routing.shape[1]} expert weights, got {forced.shape[1]}")
    return forced.expand_as(routing)


class CondConvOutput(NamedTuple):
    logits: torch.Tensor  # (B, classes)
    routing: torch.Tensor  # (B, L, E), blocks in the order of routing_layers()


class CondConvResNet(ResNet):
    """CIFAR-style ResNet (``models.resnet`` names) whose blocks in ``condconv_stages`` are CondConv blocks."""

    method = "condconv"
    benchmark_batch = 64  # tools.bench measures throughput where the paper compares: batch 64

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        num_experts: int = 4,
        condconv_stages: tuple[int, ...] = (3,),
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        stages = tuple(sorted({int(s) for s in condconv_stages}))
        if not stages or any(s not in (1, 2, 3) for s in stages):
            raise UsageError(f"condconv_stages must be a non-empty subset of (1, 2, 3), got {condconv_stages!r}")
        if int(num_experts) < 1:
            raise UsageError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts, self.condconv_stages = int(num_experts), stages
        for s in stages:
            stage = self.stages()[s - 1]
            for j, old in enumerate(stage):
                block = CondConvBlock(
                    old.conv1.in_channels, old.conv1.out_channels, old.conv1.stride[0], self.num_experts
                )
                init_weights(block)  # shortcut conv, BN, zero last BN; CondConv2d and Router init themselves
                block.layer_name = f"layer{s}.{j}"
                stage[j] = block

    def routing_blocks(self) -> list[tuple[str, CondConvBlock]]:
        return [
            (f"layer{s}.{j}", b)
            for s, stage in enumerate(self.stages(), 1)
            for j, b in enumerate(stage)
            if isinstance(b, CondConvBlock)
        ]

    def routing_layers(self) -> list[str]:
        """Names of the CondConv blocks in execution order (the ``layer`` of their trace decisions)."""
        return [name for name, _ in self.routing_blocks()]

    def decision_layers(self) -> dict[str, str]:
        return {name: ROUTING.name for name in self.routing_layers()}

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
            if (
                isinstance(module, CondConv2d)
                and key in dense_state
                and tuple(dense_state[key].shape) == module.weight_shape
            ):
                module.weight.copy_(
                    dense_state[key].reshape(1, -1).expand_as(module.weight) * (2.0 / module.num_experts)
                )
                used.append(key)
        return used

    def dense_counterpart(self) -> ResNet:
        """The plain ResNet of the same depth/widths (for ``cost.full_macs``), with every weight both share.

        CondConv convs keep a fresh Kaiming init: no single dense kernel stands for a per-example mixture.
        """
        return self.plain_copy(shared_only=True)


@register_model
def condconv_resnet8(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    num_experts: int = 4,
    condconv_stages: tuple[int, ...] | list[int] = (3,),
) -> CondConvResNet:
    """CondConv ResNet-8: the blocks of condconv_stages (default: the last stage) mix num_experts kernels per image."""
    return CondConvResNet(8, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))


@register_model
def condconv_resnet20(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    num_experts: int = 4,
    condconv_stages: tuple[int, ...] | list[int] = (3,),
) -> CondConvResNet:
    """CondConv ResNet-20: the blocks of condconv_stages (default: the last stage) mix num_experts kernels per image."""
    return CondConvResNet(20, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))


@register_model
def condconv_resnet32(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    num_experts: int = 4,
    condconv_stages: tuple[int, ...] | list[int] = (3,),
) -> CondConvResNet:
    """CondConv ResNet-32: the blocks of condconv_stages (default: the last stage) mix num_experts kernels per image."""
    return CondConvResNet(32, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))


@register_model
def condconv_resnet56(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    num_experts: int = 4,
    condconv_stages: tuple[int, ...] | list[int] = (3,),
) -> CondConvResNet:
    """CondConv ResNet-56: the blocks of condconv_stages (default: the last stage) mix num_experts kernels per image."""
    return CondConvResNet(56, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))


@register_model
def condconv_resnet110(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    num_experts: int = 4,
    condconv_stages: tuple[int, ...] | list[int] = (3,),
) -> CondConvResNet:
    """CondConv ResNet-110: the blocks of condconv_stages (default: the last stage) mix num_experts kernels per
    image."""
    return CondConvResNet(110, num_classes, in_chans, tuple(widths), num_experts, tuple(condconv_stages))
