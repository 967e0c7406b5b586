"""The SkipNet authors' recurrent-gate ResNets (Wang et al., ECCV 2018; github.com/ucbdrive/skipnet) as RouteScope
SkipNets, which really skip the blocks their gates turn off (the authors' code computes every block and masks).

Their files are ``{"arch", "state_dict", "epoch" or "iter", "best_prec1"}`` saved by PyTorch 0.2-0.3 from a
``DataParallel`` model (``module.`` keys). The network is a flat list of ``group{G}_layer{I}`` blocks (``G`` from 1),
each followed by ``group{G}_gate{I}`` (``AvgPool2d`` + 1x1 conv to 10 dims), one LSTM(10, 10) ``control.rnn`` shared
by all gates and ``control.proj`` to one logit (a linear on CIFAR, a 1x1 conv on ImageNet). What the conversion
changes, and why:

- Their gate ``k`` reads block ``k``'s output and decides block ``k + 1``; RouteScope's gate of block ``i`` reads block
  ``i``'s input, the same tensor. Their gate ``k`` becomes our gate of block ``k + 1``; their last gate decides nothing
  (its output is discarded) and is dropped.
- A downsampling block's shortcut is one module registered under two names (``group{G}_ds{I}``, used when the block is
  skipped, and ``group{G}_layer{I}.downsample``, used when it runs), so its tensors appear twice. We keep the block's,
  check the other copy is equal, and drop it.
- Their gate pools with ``AvgPool2d`` of the feature map's size at the training resolution (32 on CIFAR, 224 on
  ImageNet): a global average there, which is what RouteScope's gate computes at any size.
- BatchNorm of PyTorch 0.2-0.3 has no ``num_batches_tracked``: it stays 0 (inference never reads it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from ..data import CIFAR10, IMAGENET_MEAN, IMAGENET_STD
from ..registry import build_model, registered_models
from .base import ConversionError, Layout, State, describe_keys, take_state

CODE = "https://github.com/ucbdrive/skipnet"
CLASS_FILES = Path(__file__).resolve().parent.parent / "assets" / "classes"
# their preprocessing (cifar/data.py, for CIFAR-10 and CIFAR-100 alike): the widely copied CIFAR std, not the
# per-channel std of the training set that RouteScope's own CIFAR-10 recipes use
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_BUILDERS = {(3, 4, 6, 3): "skipnet_resnet50", (3, 4, 23, 3): "skipnet_resnet101"}

_UNIT = re.compile(r"^group(\d+)_(layer|ds|gate)(\d+)\.")
_SIGNATURE = (  # tensors every recurrent-gate SkipNet file of theirs has
    "conv1.weight",
    "fc.weight",
    "group1_layer0.conv1.weight",
    "group1_gate0.1.weight",
    "control.rnn.weight_ih_l0",
)
_ARCH = re.compile(r"^(cifar10|cifar100|imagenet)_rnn_gate_(rl_)?(\d+)$")  # their model names (models.py)


@dataclass(frozen=True)
class SourceNet:
    """What an authors' state dict is, read from its tensor names and shapes."""

    family: str  # "cifar" (3x3 stem, basic blocks, 3 groups) or "imagenet" (7x7 stem, bottlenecks, 4 groups)
    layers: tuple[int, ...]  # blocks per group
    num_classes: int

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """``(group, index)`` of every block in execution order."""
        return [(g, i) for g, n in enumerate(self.layers, 1) for i in range(n)]

    @property
    def depth(self) -> int:
        per_block = 2 if self.family == "cifar" else 3
        return per_block * sum(self.layers) + 2

    @property
    def builder(self) -> str | None:
        """The RouteScope builder of this backbone, or None where there is none."""
        if self.family == "imagenet":
            return IMAGENET_BUILDERS.get(self.layers)
        name = f"skipnet_resnet{self.depth}"
        return name if len(set(self.layers)) == 1 and name in registered_models() else None


def recognise(state: State) -> SourceNet | None:
    """The authors' recurrent-gate ResNet that ``state`` is, or None when it is not one."""
    if not all(k in state for k in _SIGNATURE) or state["conv1.weight"].dim() != 4 or state["fc.weight"].dim() != 2:
        return None
    family = {3: "cifar", 7: "imagenet"}.get(state["conv1.weight"].shape[-1])
    bottleneck = "group1_layer0.conv3.weight" in state
    if family is None or bottleneck != (family == "imagenet"):
        return None
    counts: dict[int, int] = {}
    for key in state:
        found = _UNIT.match(key)
        if found and found.group(2) == "layer":
            group, index = int(found.group(1)), int(found.group(3))
            counts[group] = max(counts.get(group, 0), index + 1)
    groups = 3 if family == "cifar" else 4
    if sorted(counts) != list(range(1, groups + 1)):
        return None
    return SourceNet(family, tuple(counts[g] for g in range(1, groups + 1)), int(state["fc.weight"].shape[0]))


def source_key(target: str, blocks: list[tuple[int, int]]) -> str:
    """The authors' name of RouteScope's tensor ``target`` (gate ``j`` of RouteScope is their gate of block ``j``,
    since RouteScope gates every block but the first)."""
    head, _, rest = target.partition(".")
    if head == "stem":
        index, _, leaf = rest.partition(".")
        return ("conv1." if index == "0" else "bn1.") + leaf
    if head.startswith("layer"):
        index, _, leaf = rest.partition(".")
        leaf = "downsample." + leaf[len("shortcut.") :] if leaf.startswith("shortcut.") else leaf
        return f"group{head[len('layer') :]}_layer{index}.{leaf}"
    if head == "gates":
        part, _, leaf = rest.partition(".")
        if part == "embed":
            index, _, leaf = leaf.partition(".")
            group, block = blocks[int(index)]
            return f"group{group}_gate{block}.1.{leaf}"
        if part == "lstm":
            return f"control.rnn.{leaf}_l0"  # LSTMCell's weight_ih is nn.LSTM's weight_ih_l0, gate order i, f, g, o
        if part == "proj":
            return f"control.proj.{leaf}"
    if head == "fc":
        return target
    raise ConversionError(f"no source tensor for {target}")


def _arch_of(extras: dict) -> tuple[str, bool, int] | None:
    """``(dataset, hrl, depth)`` from the file's ``arch`` entry, when it names a recurrent-gate model."""
    found = _ARCH.match(str(extras.get("arch", "")))
    return (found.group(1), bool(found.group(2)), int(found.group(3))) if found else None


def _few(keys: list[str]) -> str:
    return f"{len(keys)} keys ({', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''})"


def _class_names(file: str) -> list[str]:
    return (CLASS_FILES / file).read_text(encoding="utf-8").splitlines()


def _meta(net: SourceNet, extras: dict) -> dict:
    """Name, classes, input size and normalisation of the authors' training, and what their file reports."""
    arch = _arch_of(extras)
    if net.family == "imagenet":
        if net.num_classes != 1000:
            raise ConversionError(f"an ImageNet SkipNet with {net.num_classes} classes, not 1000: no names for them")
        dataset, classes, size, mean, std = "imagenet", _class_names("imagenet.txt"), 224, IMAGENET_MEAN, IMAGENET_STD
    elif net.num_classes in (10, 100):
        dataset = f"cifar{net.num_classes}"
        classes = list(CIFAR10.classes) if net.num_classes == 10 else _class_names("cifar100.txt")
        size, mean, std = 32, CIFAR_MEAN, CIFAR_STD
    else:
        raise ConversionError(f"a CIFAR SkipNet with {net.num_classes} classes, not 10 or 100: no names for them")
    if arch is not None and (arch[0] != dataset or arch[2] != net.depth):
        raise ConversionError(
            f"its arch {extras['arch']!r} says {arch[0]} SkipNet-{arch[2]}, but its tensors are a {dataset} "
            f"SkipNet-{net.depth} ({'x'.join(map(str, net.layers))} blocks, {net.num_classes} classes)"
        )
    stage = None if arch is None else ("hrl" if arch[1] else "sp")
    origin: dict = {"code": CODE, "training": {"sp": "SP", "hrl": "HRL+SP", None: "unknown"}[stage]}
    for key in ("best_prec1", "epoch", "iter"):  # their top-1 (%) on their test set, and when it was saved
        value = extras.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            origin[key] = value
    return {
        "name": "_".join(["skipnet", f"resnet{net.depth}", dataset, *([stage] if stage else []), "ucbdrive"]),
        "method": "skipnet",
        "dataset": dataset,
        "classes": classes,
        "input_size": [3, size, size],
        "mean": list(mean),
        "std": list(std),
        "metrics": {},
        "recipe": {},
        "origin": origin,
    }


def convert(state: State, extras: dict, family: str) -> tuple[nn.Module, dict]:
    """The RouteScope SkipNet (training form, eval mode) with the authors' weights, and its meta."""
    net = recognise(state)
    if net is None or net.family != family:
        hint = f"; it is the authors' {net.family} layout (skipnet-{net.family})" if net is not None else ""
        raise ConversionError(
            f"not a SkipNet recurrent-gate {family} checkpoint of {CODE}{hint}: it has {describe_keys(state)}"
        )
    if net.builder is None:
        raise ConversionError(
            f"no RouteScope SkipNet for the authors' {net.family} SkipNet-{net.depth} "
            f"({'x'.join(map(str, net.layers))} blocks); converted: "
            + ("ResNet-38, 74, 110 (and 8, 20, 32, 56)" if family == "cifar" else "ResNet-50 and ResNet-101")
        )
    meta = _meta(net, extras)
    model = build_model(net.builder, num_classes=net.num_classes)
    target = model.state_dict()
    blocks = net.blocks
    mapping: dict[str, str] = {}
    fresh: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        src = source_key(name, blocks)
        if name.endswith("num_batches_tracked") and src not in state:
            fresh[name] = tensor  # BatchNorm had no counter before PyTorch 0.4
        else:
            mapping[name] = src
    last_group, last_block = blocks[-1]
    last_gate = [f"group{last_group}_gate{last_block}.1.weight", f"group{last_group}_gate{last_block}.1.bias"]
    twins = {re.sub(r"^group(\d+)_layer(\d+)\.downsample\.", r"group\1_ds\2.", src): src for src in mapping.values()}
    twins = {twin: src for twin, src in twins.items() if twin != src}
    source = str(extras.get("arch", "source"))
    used = {*mapping.values(), *twins, *last_gate}
    missing = sorted(used - set(state))
    if missing:  # named here with the unexpected ones: take_state does not see the dropped keys that are missing
        unexpected = sorted(set(state) - used)
        raise ConversionError(
            f"{source}: does not fit: missing {_few(missing)}"
            + (f"; unexpected {_few(unexpected)}" if unexpected else "")
            + f". It has {describe_keys(state)}"
        )
    differ = [twin for twin, src in twins.items() if not torch.equal(state[twin], state[src])]
    if differ:
        raise ConversionError(
            f"{', '.join(differ[:3])} differ from the block's own downsample tensors: the skipped and the executed "
            "path would use different shortcuts, which one RouteScope block cannot hold"
        )
    expected = {name: tensor for name, tensor in target.items() if name not in fresh}
    weights = take_state(state, mapping, expected, dropped=[*twins, *last_gate], source=source)
    model.load_state_dict({**weights, **fresh}, strict=True)
    return model.eval(), meta


LAYOUTS = [
    Layout(
        "skipnet-cifar",
        "SkipNet authors' CIFAR-10/100 recurrent-gate ResNet-38/74/110, SP or HRL (ucbdrive/skipnet)",
        lambda state: getattr(recognise(state), "family", None) == "cifar",
        partial(convert, family="cifar"),
    ),
    Layout(
        "skipnet-imagenet",
        "SkipNet authors' ImageNet recurrent-gate ResNet-50/101, SP or HRL (ucbdrive/skipnet)",
        lambda state: getattr(recognise(state), "family", None) == "imagenet",
        partial(convert, family="imagenet"),
    ),
]
