"""timm's CondConv EfficientNets (``tf_efficientnet_cc_b0_4e`` / ``_8e`` and the untrained ``efficientnet_cc_b0_4e``
/ ``_8e``) as RouteScope ``CondConvEfficientNet``\\s (``models.efficientnet``), read from their ``.safetensors`` or
``.pth`` files without timm.

timm's key layout (``timm/models/efficientnet.py``, ``_efficientnet_blocks.py``): ``conv_stem``/``bn1``, ``blocks.S.J``
with ``conv_pw``/``bn1``, ``conv_dw``/``bn2``, ``se.conv_reduce``/``se.conv_expand``, ``conv_pwl``/``bn3`` (the
first block, depthwise-separable: ``conv_dw``/``bn1``, ``se``, ``conv_pw``/``bn2``), ``conv_head``/``bn2``,
``classifier``. In the CondConv blocks (stages 4-6) the three convs are flat expert weights ``(E, out * in/groups *
k * k)``, the layout RouteScope's ``CondConv2d`` stores too, and ``routing_fn`` is the block's router (a Linear on the
pooled block input). Every tensor maps to exactly one RouteScope tensor (``take_state``: nothing dropped, nothing
invented); the number of experts is read from ``routing_fn.weight``.

The two layouts hold the same keys and shapes and differ in numerics only: ``timm-tf-efficientnet-cc-b0`` (the
published weights, ported from TensorFlow: "SAME" padding, BatchNorm eps 1e-3, inputs normalized with mean = std =
0.5) is recognised automatically; ``timm-efficientnet-cc-b0`` (symmetric padding, eps 1e-5, ImageNet mean/std: timm
has no weights for it, only the architecture) must be named with ``--from``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..registry import build_model
from .base import ConversionError, Layout, State, describe_keys, take_state

CLASS_FILE = Path(__file__).resolve().parent.parent / "assets" / "classes" / "imagenet.txt"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
INCEPTION_MEAN, INCEPTION_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
HF_HUB = {  # where timm's weights are published (Hugging Face hub model ids)
    "tf_efficientnet_cc_b0_4e": "timm/tf_efficientnet_cc_b0_4e.in1k",
    "tf_efficientnet_cc_b0_8e": "timm/tf_efficientnet_cc_b0_8e.in1k",
}
EXPERTS = (4, 8)  # timm's b0 builders: the "cc4" stages, times experts_multiplier 1 or 2
ROUTER_KEY = "blocks.4.0.routing_fn.weight"

# RouteScope name -> timm name inside a block (MBConv), and in the first, depthwise-separable, block
_BLOCK = {"conv1": "conv_pw", "bn1": "bn1", "conv2": "conv_dw", "bn2": "bn2", "conv3": "conv_pwl", "bn3": "bn3"}
_SEPARABLE = {"conv2": "conv_dw", "bn2": "bn1", "conv3": "conv_pw", "bn3": "bn2"}
_TOP = {"stem.1": "conv_stem", "stem.2": "bn1", "head.0": "conv_head", "head.1": "bn2", "fc": "classifier"}


def timm_name(key: str, separable_blocks: set[str]) -> str:
    """The timm key of a RouteScope ``CondConvEfficientNet`` key (``blocks.5.0.conv2.weight`` ->
    ``blocks.5.0.conv_dw.weight``); ``separable_blocks``: the blocks without an expansion conv."""
    parts = key.split(".")
    if parts[0] != "blocks":
        module = ".".join(parts[:-1])
        return f"{_TOP.get(module, module)}.{parts[-1]}"
    block, rest = ".".join(parts[:3]), parts[3:]
    if rest[0] == "router":  # router.fc.weight -> routing_fn.weight
        return f"{block}.routing_fn.{rest[-1]}"
    names = _SEPARABLE if block in separable_blocks else _BLOCK
    return ".".join([block, names.get(rest[0], rest[0]), *rest[1:]])


def arch_of(experts: int, tf: bool) -> str:
    return f"{'tf_' if tf else ''}efficientnet_cc_b0_{experts}e"


def _experts(state: State) -> int | None:
    weight = state.get(ROUTER_KEY)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def expected_state(arch: str, **cfg) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The RouteScope state dict of ``arch`` (on the ``meta`` device: shapes only) and its timm names."""
    with torch.device("meta"):
        model = build_model(arch, **cfg)
    separable = {name for name, block in model.named_blocks() if not block.expands}
    expected = model.state_dict()
    return expected, {key: timm_name(key, separable) for key in expected}


def matches(state: State) -> bool:
    """timm's key set of a CondConv EfficientNet-B0 with 4 or 8 experts (shapes are checked when converting)."""
    if "conv_stem.weight" not in state or _experts(state) not in EXPERTS:
        return False
    _, names = expected_state(arch_of(_experts(state), tf=True))
    return set(names.values()) == set(state)


def _convert(state: State, extras: dict, tf: bool) -> tuple[torch.nn.Module, dict]:
    experts = _experts(state)
    if experts not in EXPERTS:
        found = f"{ROUTER_KEY} of shape {tuple(state[ROUTER_KEY].shape)}" if ROUTER_KEY in state else f"no {ROUTER_KEY}"
        raise ConversionError(
            f"not a timm CondConv EfficientNet-B0 with 4 or 8 experts ({found}); it has {describe_keys(state)}"
        )
    classifier = state.get("classifier.weight")
    if classifier is not None and classifier.ndim == 2 and classifier.shape[0] != 1000:
        raise ConversionError(
            f"classifier.weight has {classifier.shape[0]} classes, not ImageNet's 1000: no class names for it"
        )
    arch = arch_of(experts, tf)
    expected, names = expected_state(arch)
    weights = take_state(state, names, expected, source=f"timm {arch}")
    model = build_model(arch)
    model.load_state_dict(weights, strict=True)
    mean, std = (INCEPTION_MEAN, INCEPTION_STD) if tf else (IMAGENET_MEAN, IMAGENET_STD)
    meta = {
        "name": arch,
        "method": "condconv",
        "dataset": "imagenet",
        "classes": CLASS_FILE.read_text(encoding="utf-8").splitlines(),
        "input_size": [3, 224, 224],
        "mean": list(mean),
        "std": list(std),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "recipe": {},
        "metrics": {},
        "source": {"library": "timm", "model": arch, **({"hf_hub_id": HF_HUB[arch]} if arch in HF_HUB else {})},
    }
    return model.eval(), meta


LAYOUTS = [
    Layout(
        "timm-tf-efficientnet-cc-b0",
        "timm's tf_efficientnet_cc_b0_4e / _8e (CondConv EfficientNet-B0, TF padding; .safetensors or .pth)",
        matches,
        lambda state, extras: _convert(state, extras, tf=True),
    ),
    Layout(
        "timm-efficientnet-cc-b0",
        "timm's efficientnet_cc_b0_4e / _8e (symmetric padding; same keys as the tf_ layout, so only with --from)",
        lambda state: False,
        lambda state, extras: _convert(state, extras, tf=False),
    ),
]
