"""Writes ``skipnet_<arch>.json``: the tensor names and shapes of the SkipNet authors' published recurrent-gate
checkpoints (github.com/ucbdrive/skipnet, ``cifar/models.py`` and ``imagenet/models.py``), in the order their
``state_dict()`` lists them, ``module.`` prefix of ``DataParallel`` included.

Written from their architecture as a description, independently of ``models.convert.skipnet``, so the tests check the
converter against it. Run ``python tests/data/layouts/make_skipnet_layouts.py`` to regenerate.

Their network, as the tables describe it: a stem (``conv1``, ``bn1``); per group ``g`` (from 1) and block ``i`` (from
0), in that order: the shortcut projection ``group{g}_ds{i}`` (only where the block changes width or resolution), the
block ``group{g}_layer{i}`` (which holds the same projection again as ``downsample``), and the gate embedding
``group{g}_gate{i}`` (``Sequential(AvgPool2d, Conv2d(channels, 10, 1))``, so its conv is ``.1``); then ``control``
(``rnn``: an ``nn.LSTM(10, 10)``; ``proj``: ``nn.Linear(10, 1)`` on CIFAR, ``nn.Conv2d(10, 1, 1)`` on ImageNet) and
``fc``. BatchNorm lists weight, bias, running_mean, running_var (PyTorch 0.3: no num_batches_tracked).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
EMBED = HIDDEN = 10
# arch: (stem width, stem kernel, group widths, blocks per group, bottleneck, classes)
ARCHS = {
    "cifar10_rnn_gate_38": (16, 3, (16, 32, 64), (6, 6, 6), False, 10),
    "cifar10_rnn_gate_110": (16, 3, (16, 32, 64), (18, 18, 18), False, 10),
    "imagenet_rnn_gate_50": (64, 7, (64, 128, 256, 512), (3, 4, 6, 3), True, 1000),
    "imagenet_rnn_gate_101": (64, 7, (64, 128, 256, 512), (3, 4, 23, 3), True, 1000),
}


BN = ("weight", "bias", "running_mean", "running_var")


def batchnorm(prefix: str, channels: int) -> list[tuple[str, list[int]]]:
    return [(f"{prefix}.{leaf}", [channels]) for leaf in BN]


def keys(arch: str) -> list[tuple[str, list[int]]]:
    stem, kernel, widths, layers, bottleneck, classes = ARCHS[arch]
    out = [("conv1.weight", [stem, 3, kernel, kernel]), *batchnorm("bn1", stem)]
    channels = stem
    for g, (width, n) in enumerate(zip(widths, layers), 1):
        for i in range(n):
            stride = 2 if g > 1 and i == 0 else 1
            width_out = width * (4 if bottleneck else 1)
            projection = stride != 1 or channels != width_out
            shortcut = [("0.weight", [width_out, channels, 1, 1])] + [(f"1.{leaf}", [width_out]) for leaf in BN]
            if projection:
                out += [(f"group{g}_ds{i}.{leaf}", shape) for leaf, shape in shortcut]
            block = f"group{g}_layer{i}"
            if bottleneck:
                convs = [[width, channels, 1, 1], [width, width, 3, 3], [width_out, width, 1, 1]]
            else:
                convs = [[width, channels, 3, 3], [width, width, 3, 3]]
            for k, shape in enumerate(convs, 1):
                out += [(f"{block}.conv{k}.weight", shape), *batchnorm(f"{block}.bn{k}", shape[0])]
            if projection:
                out += [(f"{block}.downsample.{leaf}", shape) for leaf, shape in shortcut]
            out += [(f"group{g}_gate{i}.1.weight", [EMBED, width_out, 1, 1]), (f"group{g}_gate{i}.1.bias", [EMBED])]
            channels = width_out
    out += [
        ("control.rnn.weight_ih_l0", [4 * HIDDEN, EMBED]),
        ("control.rnn.weight_hh_l0", [4 * HIDDEN, HIDDEN]),
        ("control.rnn.bias_ih_l0", [4 * HIDDEN]),
        ("control.rnn.bias_hh_l0", [4 * HIDDEN]),
        ("control.proj.weight", [1, HIDDEN] if not bottleneck else [1, HIDDEN, 1, 1]),
        ("control.proj.bias", [1]),
        ("fc.weight", [classes, channels]),
        ("fc.bias", [classes]),
    ]
    return [(f"module.{name}", shape) for name, shape in out]


def main() -> None:
    for arch in ARCHS:
        lines = ",\n".join(f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in keys(arch))
        (HERE / f"skipnet_{arch}.json").write_text("{\n" + lines + "\n}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
