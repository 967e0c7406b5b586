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
- ``model.inference_form()`` returns a new model where every DGConv2d is a ``GroupedConv2d`` (static
  permutation buffers + ``nn.Conv2d(C, C, k, groups=G)`` with only the block-diagonal weights), so the
  parameter count shrinks too. ``models.checkpoint.load_checkpoint`` calls it: checkpoints load exported.

The layers and their gate algebra are in ``models.layers.dgconv``. Design decisions and deviations from the
paper / reference code (d-li14/dgconv.pytorch):

- ``theta`` is seeded by torch's RNG (the reference uses Python's ``random``): ``theta_k ~ U(gate_init -
  gate_noise, gate_init + gate_noise)``, by default U(0, 1): every layer starts dense, and the spread makes
  the budget turn gates off one at a time instead of all at once (equal thetas flip together and collapse
  the net to depthwise). ``gate_init=0, gate_noise=1e-8`` gives the reference's random signs.
- Straight-through estimator: forward hard ``1[theta > 0]``, backward through ``sigmoid(theta)`` (our default,
  ``ste="sigmoid"``) or through the identity clipped to [-1, 1] as in BinaryConnect (``ste="identity"``, also our
  choice). The reference passes the gradient straight through unclipped; neither option is exactly that (the
  clipped identity gives no gradient once |theta| > 1).
- Only convs with ``C_in == C_out`` (a power of two) are DGConv: conv2 of every block and conv1 of
  non-downsampling blocks. The first conv of a downsampling block (C_in != C_out), the stem, the 1x1
  shortcuts and the head stay plain. DGConv2d supports stride all the same.
- Complexity: ``sum_l nnz(U_l) * k^2 * area_l`` (MAC-weighted; ``area_l`` = the layer's output area relative
  to the stem's, static from the strides, exact for even input sizes), or the paper's plain ``sum_l
  nnz(U_l)`` (``complexity="nnz"``). The budget is a fraction of the dense complexity.
- Training (budget loss, plain SGD for the gates): ``models.recipes.dgconv``.
- Permutations are explicit ``index_select`` on channels (skipped when a layer's groups are already
  contiguous); they are not folded into neighbouring BN layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .errors import UsageError
from .layers.dgconv import DGConv2d, GroupedConv2d
from .registry import register_model
from .resnet import ResNet
from .decisions import DecisionKind, register_kind

COMPLEXITY_KINDS = ("macs", "nnz")


GROUPS = register_kind(
    DecisionKind(
        "groups",
        "dgconv",
        "model",
        {
            "groups": ("integer", "number of channel groups"),
            "group_of_channel": ("array", "group index of each channel"),
            "channels": ("integer", "channels of the layer"),
            "gates": ("array", "the learned binary gates"),
            "nnz": ("integer", "non-zero entries of the connectivity mask"),
            "mask": ("array", "the connectivity mask"),
        },
        "the learned group structure of a DGConv layer",
        optional=("channels", "gates", "nnz", "mask"),
    )
)


# --- G-ResNet -----------------------------------------------------------------------------------------------

DG_LAYERS = (DGConv2d, GroupedConv2d)


class DGConvResNet(ResNet):
    """CIFAR ResNet whose ``C_in == C_out`` 3x3 convs are DGConv2d (names as in ``models.resnet``)."""

    method = "dgconv"

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        gate_init: float = 0.5,
        gate_noise: float = 0.5,
        ste: str = "sigmoid",
    ) -> None:
        super().__init__(depth, num_classes, in_chans, tuple(widths))
        scale = 1  # downsampling so far, relative to the stem's resolution
        for stage in self.stages():
            for block in stage:
                for name in ("conv1", "conv2"):
                    conv: nn.Conv2d = getattr(block, name)
                    scale *= conv.stride[0]
                    if conv.in_channels != conv.out_channels:
                        continue  # the first conv of a downsampling block: C_in != C_out, stays a plain conv
                    layer = DGConv2d(
                        conv.out_channels,
                        conv.kernel_size[0],
                        conv.stride[0],
                        conv.padding[0],
                        conv.bias is not None,
                        gate_init,
                        gate_noise,
                        ste,
                    )
                    with torch.no_grad():
                        layer.weight.copy_(conv.weight)  # keep init_weights' kaiming init
                    layer.area = 1.0 / scale**2
                    setattr(block, name, layer)

    def dg_layers(self) -> list[tuple[str, nn.Module]]:
        """``[("layer1.0.conv1", layer), ...]``: the DGConv2d (or exported GroupedConv2d) layers in order."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, DG_LAYERS)]

    def structure(self, mask: bool = False) -> list[dict]:
        """The learned group structure of every DGConv layer: the trace's ``structure`` entries (kind ``groups``)."""
        out = []
        for name, layer in self.dg_layers():
            groups = layer.group_of_channel()
            entry = {
                "layer": name,
                "kind": GROUPS.name,
                "groups": layer.groups(),
                "group_of_channel": groups,
                "channels": len(groups),
                "gates": layer.hard_gates().int().tolist(),
                "nnz": layer.nnz(),
            }
            if mask:
                entry["mask"] = layer.mask().int().tolist()
            out.append(entry)
        return out

    def masks(self) -> dict[str, torch.Tensor]:
        """Layer name -> binary C x C mask U (for the Structure page)."""
        return {name: layer.mask() for name, layer in self.dg_layers()}

    def complexity(self, kind: str = "macs") -> torch.Tensor:
        """``sum_l nnz(U_l) * k^2 * area_l`` (``"macs"``) or ``sum_l nnz(U_l)`` (``"nnz"``), differentiable via the
        STE."""
        if kind not in COMPLEXITY_KINDS:
            raise UsageError(f"complexity must be one of {', '.join(COMPLEXITY_KINDS)}, not {kind!r}")
        terms = [
            layer.nnz_ste() * self._weight(layer, kind) for _, layer in self.dg_layers() if isinstance(layer, DGConv2d)
        ]
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

    def inference_form(self) -> "DGConvResNet":
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
        dense_weights = {f"{name}.weight": layer.dense_weight() for name, layer in self.dg_layers()}
        return self.plain_copy({**self.state_dict(), **dense_weights})


@register_model
def dgconv_resnet8(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    gate_init: float = 0.5,
    gate_noise: float = 0.5,
    ste: str = "sigmoid",
) -> DGConvResNet:
    """G-ResNet-8: ResNet-8 whose C_in == C_out 3x3 convs learn their group structure (DGConv)."""
    return DGConvResNet(8, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)


@register_model
def dgconv_resnet20(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    gate_init: float = 0.5,
    gate_noise: float = 0.5,
    ste: str = "sigmoid",
) -> DGConvResNet:
    """G-ResNet-20: ResNet-20 whose C_in == C_out 3x3 convs learn their group structure (DGConv)."""
    return DGConvResNet(20, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)


@register_model
def dgconv_resnet32(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    gate_init: float = 0.5,
    gate_noise: float = 0.5,
    ste: str = "sigmoid",
) -> DGConvResNet:
    """G-ResNet-32: ResNet-32 whose C_in == C_out 3x3 convs learn their group structure (DGConv)."""
    return DGConvResNet(32, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)


@register_model
def dgconv_resnet56(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    gate_init: float = 0.5,
    gate_noise: float = 0.5,
    ste: str = "sigmoid",
) -> DGConvResNet:
    """G-ResNet-56: ResNet-56 whose C_in == C_out 3x3 convs learn their group structure (DGConv)."""
    return DGConvResNet(56, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)


@register_model
def dgconv_resnet110(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    gate_init: float = 0.5,
    gate_noise: float = 0.5,
    ste: str = "sigmoid",
) -> DGConvResNet:
    """G-ResNet-110: ResNet-110 whose C_in == C_out 3x3 convs learn their group structure (DGConv)."""
    return DGConvResNet(110, num_classes, in_chans, tuple(widths), gate_init, gate_noise, ste)
