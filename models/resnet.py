"""ResNets (He et al. 2016): the CIFAR family (section 4.2: 6n+2 layers of BasicBlocks in three stages, 3x3 stem)
that every bundled model uses, and the ImageNet ResNet-50 (Table 1: 7x7 stem and max pool, bottleneck blocks
(3, 4, 6, 3) in four stages) that ``tools.bench --scale paper`` times the methods on; ResNet-101 (blocks
(3, 4, 23, 3)) is the backbone of the SkipNet authors' published ImageNet checkpoint (``models.convert.skipnet``).

Every method in RouteScope builds on this backbone, so block and stage names (``layer2.1``) are the
names that appear in routing traces. Downsampling blocks use a projection shortcut (1x1 conv + BN,
"option B"), which SkipNet needs: a skipped downsampling block still runs its shortcut. The bottleneck puts
its stride in the 3x3 conv (torchvision's "ResNet v1.5").
"""

from __future__ import annotations

from typing import Mapping, Sequence, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UsageError
from .layers.conv import conv3x3
from .protocol import RouteScopeModel
from .registry import register_model

Plain = TypeVar("Plain", bound=nn.Module)


def projection_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """The identity, or a 1x1 projection + BN where the block changes resolution or width ("option B")."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; ``residual(x)`` is F(x), ``shortcut(x)`` the skip path."""

    expansion = 1  # output channels per unit of stage width

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand to ``4 * width``, BN after each; the same ``residual`` /
    ``shortcut`` interface as ``BasicBlock``, so the methods gate, exit after or slim either."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        nn.Module.__init__(self)
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)

    @property
    def out_channels(self) -> int:
        return self.conv3.out_channels

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(self.conv3(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))))


STEMS = ("cifar", "imagenet")
RESNET50 = {"block": Bottleneck, "layers": (3, 4, 6, 3), "stem": "imagenet"}  # backbone options of ResNet-50
RESNET50_WIDTHS = (64, 128, 256, 512)
RESNET101 = {"block": Bottleneck, "layers": (3, 4, 23, 3), "stem": "imagenet"}  # ResNet-101: same widths as ResNet-50


def make_stem(kind: str, in_chans: int, width: int) -> nn.Sequential:
    """CIFAR: 3x3 conv at full resolution; ImageNet: 7x7 stride-2 conv and a 3x3 stride-2 max pool (1/4 resolution)."""
    if kind == "cifar":
        return nn.Sequential(conv3x3(in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    raise UsageError(f"stem must be one of {', '.join(STEMS)}, not {kind!r}")


def stage_layers(depth: int, stages: int, layers: Sequence[int] | None) -> tuple[int, ...]:
    """Blocks per stage: ``layers`` as given, else the CIFAR rule (``(depth - 2) / 6`` in each stage)."""
    if layers is not None:
        if len(layers) != stages or min(layers) < 1:
            raise UsageError(
                f"layers must give at least one block for each of the {stages} stages, got {tuple(layers)}"
            )
        return tuple(int(n) for n in layers)
    if (depth - 2) % 6:
        raise UsageError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return ((depth - 2) // 6,) * stages


class ResNet(RouteScopeModel):
    """Stem, one stage of blocks per entry of ``widths`` (``layer1``, ``layer2``, ...), global average pool, linear
    head.

    The defaults are the CIFAR family (``depth`` 6n+2, BasicBlocks, 3x3 stem); ``block=Bottleneck,
    layers=(3, 4, 6, 3), stem="imagenet"`` (``RESNET50``) with widths ``(64, 128, 256, 512)`` is ResNet-50.
    """

    method = "baseline"

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        block: type[BasicBlock] = BasicBlock,
        layers: Sequence[int] | None = None,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        self.depth, self.widths = depth, tuple(widths)
        self.layers, self.block_type, self.stem_kind = stage_layers(depth, len(self.widths), layers), block, stem
        self.stem = make_stem(stem, in_chans, self.widths[0])
        in_ch = self.widths[0]
        for i, (width, n) in enumerate(zip(self.widths, self.layers)):
            blocks = [
                block(in_ch if j == 0 else width * block.expansion, width, stride=1 if i == 0 or j else 2)
                for j in range(n)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = width * block.expansion
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, so attributions (GradCAM) can hook the last feature map
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    @property
    def backbone(self) -> dict:
        """The options that rebuild this backbone's layout (``ResNet(depth, ..., **backbone)``), default ones left
        out."""
        if self.stem_kind == "cifar" and self.block_type is BasicBlock:
            return {}
        plain_block = Bottleneck if issubclass(self.block_type, Bottleneck) else BasicBlock
        return {"block": plain_block, "layers": self.layers, "stem": self.stem_kind}

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{s}") for s in range(1, len(self.widths) + 1)]

    def named_blocks(self) -> list[tuple[str, BasicBlock]]:
        """``[("layer1.0", block), ...]`` in execution order; the names that appear in traces."""
        return [(f"layer{s}.{j}", block) for s, stage in enumerate(self.stages(), 1) for j, block in enumerate(stage)]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return self.head(x)

    def plain_copy(
        self,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        widths: Sequence[int] | None = None,
        shared_only: bool = False,
    ) -> "ResNet":
        """The plain ``ResNet`` of this depth, classes, input channels and ``widths`` (default: this model's),
        with the weights of ``state_dict`` (default: this model's own); see ``load_plain``.

        Every dynamic method's ``dense_counterpart`` (``cost.full_macs``) is one; methods whose dense weights
        are derived (DGConv's ``W * U``, DS-Net's sliced subnets) pass them in ``state_dict``.
        """
        plain = ResNet(
            self.depth, self.fc.out_features, self.stem[0].in_channels, tuple(widths or self.widths), **self.backbone
        )
        plain.arch = f"resnet{self.depth}"  # as the registry names it (what tables and benches call it)
        return load_plain(plain, self, state_dict, shared_only)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, and zero-init of each block's last BN (Goyal et al.) for stable early training."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)


def load_plain(
    plain: Plain, model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None = None, shared_only: bool = False
) -> Plain:
    """``plain`` (a freshly built static network) given, for each of its own keys, the tensor of ``state_dict``
    (default: ``model.state_dict()``), on ``model``'s device and in its train/eval mode.

    Keys only the dynamic model has (gates, exit heads, routers, RePr buffers) are left out. Every key of
    ``plain`` must be there, unless ``shared_only``: then keys missing or of another shape keep ``plain``'s
    fresh init (CondConv: no single dense kernel stands for a per-example mixture of experts).
    """
    source = model.state_dict() if state_dict is None else state_dict
    fresh = plain.state_dict()
    if shared_only:
        weights = {k: source[k] if k in source and source[k].shape == v.shape else v for k, v in fresh.items()}
    else:
        weights = {k: source[k] for k in fresh}
    plain.load_state_dict(weights)
    return plain.to(model.fc.weight.device).train(model.training)


@register_model
def resnet8(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-8 (1 BasicBlocks per stage)."""
    return ResNet(8, num_classes, in_chans, tuple(widths))


@register_model
def resnet14(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-14 (2 BasicBlocks per stage)."""
    return ResNet(14, num_classes, in_chans, tuple(widths))


@register_model
def resnet20(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-20 (3 BasicBlocks per stage)."""
    return ResNet(20, num_classes, in_chans, tuple(widths))


@register_model
def resnet32(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-32 (5 BasicBlocks per stage)."""
    return ResNet(32, num_classes, in_chans, tuple(widths))


@register_model
def resnet44(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-44 (7 BasicBlocks per stage)."""
    return ResNet(44, num_classes, in_chans, tuple(widths))


@register_model
def resnet56(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-56 (9 BasicBlocks per stage)."""
    return ResNet(56, num_classes, in_chans, tuple(widths))


@register_model
def resnet110(num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> ResNet:
    """Plain CIFAR ResNet-110 (18 BasicBlocks per stage)."""
    return ResNet(110, num_classes, in_chans, tuple(widths))


@register_model
def resnet50(num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, int, int, int] = RESNET50_WIDTHS) -> ResNet:
    """ImageNet ResNet-50 (bottleneck blocks (3, 4, 6, 3), 7x7 stem and max pool); for the paper-scale bench."""
    return ResNet(50, num_classes, in_chans, tuple(widths), **RESNET50)


@register_model
def resnet101(
    num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, int, int, int] = RESNET50_WIDTHS
) -> ResNet:
    """ImageNet ResNet-101 (bottleneck blocks (3, 4, 23, 3)): the dense network of the SkipNet-101 family."""
    return ResNet(101, num_classes, in_chans, tuple(widths), **RESNET101)
