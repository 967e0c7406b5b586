"""EfficientNet-B0 (Tan & Le, ICML 2019) and its CondConv variant (Yang et al., NeurIPS 2019; CondConv-EfficientNet-B0)
as timm builds them, from RouteScope's own layers: the backbone of the converted timm checkpoints
(``models.convert.timm_condconv``: ``tf_efficientnet_cc_b0_4e`` / ``_8e``), which then run RouteScope's batched-experts
CondConv, record their routing per block in the trace, take forced routings and have a fast form.

The network (timm's ``_gen_efficientnet_condconv`` / ``_gen_efficientnet``, read from its source):

- stem: 3x3 conv, stride 2, 32 channels, BatchNorm, SiLU;
- 16 blocks in 7 stages (``B0_STAGES``): the first a depthwise-separable block (3x3 depthwise, squeeze-excite,
  1x1 projection), the others mobile inverted bottlenecks ("MBConv": 1x1 expansion to 6x the input channels,
  k x k depthwise conv with the stage's stride on its first block, squeeze-excite, 1x1 linear projection), BatchNorm
  after every conv and SiLU after all but the projection; an identity shortcut where the block keeps size and width.
  Squeeze-excite reduces to a quarter of the BLOCK's input channels (``SqueezeExcite``, SiLU inside);
- head: 1x1 conv to 1280 channels, BatchNorm, SiLU, global average pool, linear classifier (dropout and drop-path
  are training-only and left out).

The CondConv variant (``CondConvEfficientNet``) makes every block of the last three stages (``CONDCONV_STAGES``:
``blocks.4.*``, ``blocks.5.*``, ``blocks.6.*``, eight blocks) a ``CondConvMBConv``: its expansion, depthwise and
projection convs are ``CondConv2d`` layers (4 or 8 experts; the depthwise one a grouped CondConv), all three mixed
with ONE routing per image from one router (``sigmoid(Linear(GlobalAvgPool(block input)))``, timm's ``routing_fn``)
-- the design ``models.condconv`` uses for its ResNets. Each such block records ``{"layer": "blocks.5.0", "kind":
"routing", "weights": [E floats]}`` and can be forced (``overrides={"blocks.5.0": {"weights": [...]}}``).

Two numeric conventions, fixed per builder: the ``tf_`` models (weights ported from TensorFlow) use TF "SAME"
padding (asymmetric where the stride is 2: ``models.layers.padding``) and BatchNorm eps 1e-3; the others PyTorch's
symmetric padding and eps 1e-5. Module names are RouteScope's (``conv1``/``bn1`` pairs, ``stem``/``head``
Sequentials) so the fast form folds every BatchNorm with the shared machinery; block names are timm's
(``blocks.<stage>.<index>``), so traces name blocks as timm does.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .condconv import ROUTING, CondConvOutput, decide_routing
from .errors import UsageError
from .layers.condconv import CondConv2d, Router
from .layers.padding import conv_padding
from .layers.squeeze_excite import SqueezeExcite
from .protocol import RouteScopeModel
from .registry import register_model
from .resnet import load_plain


class Stage(NamedTuple):
    repeats: int  # blocks in the stage
    kernel: int  # depthwise kernel size
    stride: int  # stride of its first block
    expand: int  # expansion ratio (1: a depthwise-separable block, no expansion conv)
    out: int  # output channels


# timm's arch_def of EfficientNet-B0 (ds_r1_k3_s1_e1_c16_se0.25, ir_r2_k3_s2_e6_c24_se0.25, ...)
B0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
STEM_WIDTH, HEAD_WIDTH, SE_RATIO = 32, 1280, 0.25
CONDCONV_STAGES = (4, 5, 6)  # timm's "_cc4" stages (0-based, as in the block names)
TF_BN_EPS, BN_EPS = 1e-3, 1e-5

ConvFactory = Callable[..., nn.Module]


def plain_conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, groups: int = 1):
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite (a depthwise-separable block when ``expand == 1``).

    ``conv1``/``bn1`` expand (absent without expansion), ``pad2``/``conv2``/``bn2`` are the depthwise conv (``pad2``:
    TF "SAME" padding where it depends on the input size, else an identity), ``se``, ``conv3``/``bn3`` project.
    ``residual(x)`` is the branch, ``forward`` adds the identity shortcut where there is one.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand: int,
        tf_same: bool = False,
        bn_eps: float = BN_EPS,
        conv: ConvFactory = plain_conv,
    ) -> None:
        super().__init__()
        mid = in_ch * expand
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        self.expands = expand != 1
        if self.expands:
            self.conv1 = conv(in_ch, mid, 1)
            self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.pad2, padding = conv_padding(kernel, stride, tf_same)
        self.conv2 = conv(mid, mid, kernel, stride=stride, padding=padding, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.se = SqueezeExcite(mid, max(1, round(in_ch * SE_RATIO)))
        self.conv3 = conv(mid, out_ch, 1)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.has_skip = stride == 1 and in_ch == out_ch

    @staticmethod
    def _run(conv: nn.Module, x: torch.Tensor, routing: torch.Tensor | int | None) -> torch.Tensor:
        return conv(x) if routing is None else conv(x, routing)

    def residual(self, x: torch.Tensor, routing: torch.Tensor | int | None = None) -> torch.Tensor:
        """The block's branch; ``routing`` (B, E) mixes the experts of a CondConv block's three convs (an ``int``:
        the one expert they run)."""
        h = F.silu(self.bn1(self._run(self.conv1, x, routing))) if self.expands else x
        h = F.silu(self.bn2(self._run(self.conv2, self.pad2(h), routing)))
        return self.bn3(self._run(self.conv3, self.se(h), routing))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual(x)
        return y + x if self.has_skip else y


class CondConvMBConv(MBConv):
    """An MBConv whose expansion, depthwise and projection convs are ``CondConv2d`` with ``num_experts`` experts,
    mixed per image by one router that reads the block input (timm's ``CondConvResidual``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand: int,
        tf_same: bool = False,
        bn_eps: float = BN_EPS,
        num_experts: int = 4,
    ) -> None:
        if expand == 1:
            raise UsageError("a CondConv block needs an expansion conv (expand > 1)")
        super().__init__(
            in_ch, out_ch, kernel, stride, expand, tf_same, bn_eps, partial(CondConv2d, num_experts=num_experts)
        )
        self.router = Router(in_ch, num_experts)
        self.layer_name = ""  # its trace name ("blocks.5.0"), set by CondConvEfficientNet

    def routed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, routing (B, E))``; records the routing to the active trace, or runs a forced one."""
        routing, runs = decide_routing(self.router, x, self.layer_name)
        y = self.residual(x, runs)
        return (y + x if self.has_skip else y), routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.routed(x)[0]


BlockFactory = Callable[..., nn.Module]  # (stage index, in_ch, out_ch, kernel, stride, expand, tf_same, bn_eps)


def dense_block(stage: int, *args, **kwargs) -> MBConv:
    return MBConv(*args, **kwargs)


class EfficientNet(RouteScopeModel):
    """EfficientNet-B0: ``stem``, ``blocks.<stage>.<index>`` (``B0_STAGES``), ``head``, ``pool``, ``fc``."""

    method = "baseline"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        tf_same: bool = False,
        bn_eps: float = BN_EPS,
        block: BlockFactory = dense_block,
    ) -> None:
        super().__init__()
        self.in_chans, self.tf_same, self.bn_eps = in_chans, tf_same, bn_eps
        pad, padding = conv_padding(3, 2, tf_same)
        self.stem = nn.Sequential(
            pad,
            nn.Conv2d(in_chans, STEM_WIDTH, 3, 2, padding, bias=False),
            nn.BatchNorm2d(STEM_WIDTH, eps=bn_eps),
            nn.SiLU(),
        )
        stages, in_ch = [], STEM_WIDTH
        for s, spec in enumerate(B0_STAGES):
            blocks = []
            for j in range(spec.repeats):
                stride = spec.stride if j == 0 else 1
                blocks.append(block(s, in_ch, spec.out, spec.kernel, stride, spec.expand, tf_same, bn_eps))
                in_ch = spec.out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Conv2d(in_ch, HEAD_WIDTH, 1, bias=False), nn.BatchNorm2d(HEAD_WIDTH, eps=bn_eps), nn.SiLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, so attributions (GradCAM) can hook the last feature map
        self.fc = nn.Linear(HEAD_WIDTH, num_classes)
        init_weights(self)

    def named_blocks(self) -> list[tuple[str, nn.Module]]:
        """``[("blocks.0.0", block), ...]`` in execution order; the names that appear in traces."""
        return [(f"blocks.{s}.{j}", b) for s, stage in enumerate(self.blocks) for j, b in enumerate(stage)]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output: head conv, pool, linear."""
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.blocks(self.stem(x)))

    def plain(self) -> "EfficientNet":
        """A freshly built dense EfficientNet-B0 with this model's classes, input channels and numerics, named as
        the registry names that network (what tables and benches call it)."""
        dense = EfficientNet(self.fc.out_features, self.in_chans, self.tf_same, self.bn_eps)
        dense.arch = "tf_efficientnet_b0" if self.tf_same else "efficientnet_b0"
        return dense


class CondConvEfficientNet(EfficientNet):
    """EfficientNet-B0 whose blocks in ``condconv_stages`` are ``CondConvMBConv`` blocks with ``num_experts``."""

    method = "condconv"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        tf_same: bool = False,
        bn_eps: float = BN_EPS,
        num_experts: int = 4,
        condconv_stages: tuple[int, ...] = CONDCONV_STAGES,
    ) -> None:
        stages = tuple(sorted({int(s) for s in condconv_stages}))
        if not stages or any(not 1 <= s < len(B0_STAGES) for s in stages):
            raise UsageError(f"condconv_stages must be a non-empty subset of 1..{len(B0_STAGES) - 1}, got {stages}")
        if int(num_experts) < 1:
            raise UsageError(f"num_experts must be >= 1, got {num_experts}")

        def block(stage: int, *args) -> nn.Module:
            return CondConvMBConv(*args, num_experts=int(num_experts)) if stage in stages else MBConv(*args)

        super().__init__(num_classes, in_chans, tf_same, bn_eps, block)
        self.num_experts, self.condconv_stages = int(num_experts), stages
        for name, b in self.routing_blocks():
            b.layer_name = name

    def routing_blocks(self) -> list[tuple[str, CondConvMBConv]]:
        return [(name, b) for name, b in self.named_blocks() if isinstance(b, CondConvMBConv)]

    def routing_layers(self) -> list[str]:
        """Names of the CondConv blocks in execution order (the ``layer`` of their trace decisions)."""
        return [name for name, _ in self.routing_blocks()]

    def decision_layers(self) -> dict[str, str]:
        return {name: ROUTING.name for name in self.routing_layers()}

    def forward(self, x: torch.Tensor, return_routing: bool = False) -> torch.Tensor | CondConvOutput:
        x = self.stem(x)
        routing = []
        for stage in self.blocks:
            for block in stage:
                if isinstance(block, CondConvMBConv):
                    x, r = block.routed(x)
                    routing.append(r)
                else:
                    x = block(x)
        logits = self.classify(x)
        return CondConvOutput(logits, torch.stack(routing, 1)) if return_routing else logits

    def dense_counterpart(self) -> EfficientNet:
        """The dense EfficientNet-B0 of the same numerics (for ``cost.full_macs`` and benchmarks), with every weight
        both share; CondConv convs keep a fresh init (no single dense kernel stands for a per-image mixture)."""
        return load_plain(self.plain(), self, shared_only=True)


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """timm's EfficientNet init: convs N(0, 2 / fan_out) (fan-out per group), unit BatchNorm, a uniform classifier;
    ``CondConv2d`` and ``Router`` initialize themselves."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    bound = 1.0 / model.fc.weight.shape[0] ** 0.5
    nn.init.uniform_(model.fc.weight, -bound, bound)
    nn.init.zeros_(model.fc.bias)


@register_model
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3) -> EfficientNet:
    """EfficientNet-B0 (symmetric padding, BatchNorm eps 1e-5): the dense network of ``efficientnet_cc_b0_*``."""
    return EfficientNet(num_classes, in_chans, tf_same=False, bn_eps=BN_EPS)


@register_model
def tf_efficientnet_b0(num_classes: int = 1000, in_chans: int = 3) -> EfficientNet:
    """EfficientNet-B0 with TensorFlow's numerics ("SAME" padding, eps 1e-3): the dense network of
    ``tf_efficientnet_cc_b0_*``."""
    return EfficientNet(num_classes, in_chans, tf_same=True, bn_eps=TF_BN_EPS)


@register_model
def efficientnet_cc_b0_4e(num_classes: int = 1000, in_chans: int = 3) -> CondConvEfficientNet:
    """CondConv-EfficientNet-B0, 4 experts in the blocks of the last three stages (symmetric padding, eps 1e-5)."""
    return CondConvEfficientNet(num_classes, in_chans, tf_same=False, bn_eps=BN_EPS, num_experts=4)


@register_model
def efficientnet_cc_b0_8e(num_classes: int = 1000, in_chans: int = 3) -> CondConvEfficientNet:
    """CondConv-EfficientNet-B0, 8 experts in the blocks of the last three stages (symmetric padding, eps 1e-5)."""
    return CondConvEfficientNet(num_classes, in_chans, tf_same=False, bn_eps=BN_EPS, num_experts=8)


@register_model
def tf_efficientnet_cc_b0_4e(num_classes: int = 1000, in_chans: int = 3) -> CondConvEfficientNet:
    """CondConv-EfficientNet-B0, 4 experts, TensorFlow's numerics: timm's ``tf_efficientnet_cc_b0_4e`` weights."""
    return CondConvEfficientNet(num_classes, in_chans, tf_same=True, bn_eps=TF_BN_EPS, num_experts=4)


@register_model
def tf_efficientnet_cc_b0_8e(num_classes: int = 1000, in_chans: int = 3) -> CondConvEfficientNet:
    """CondConv-EfficientNet-B0, 8 experts, TensorFlow's numerics: timm's ``tf_efficientnet_cc_b0_8e`` weights."""
    return CondConvEfficientNet(num_classes, in_chans, tf_same=True, bn_eps=TF_BN_EPS, num_experts=8)
