"""DS-Net (Li et al., CVPR 2021): a slimmable ResNet whose width gates pick, per image, how wide each stage runs.

Architecture (ResNet layout and names of ``models.resnet``: ``stem``, ``layer1..3``, ``fc``; on the ImageNet
ResNet-50, ``dsnet_resnet50``, four stages of ``DSBottleneck``, whose inner and output channels both slim):

- Every conv is a ``SlimConv2d`` and every BN a ``SlimBatchNorm2d`` (``models.layers.slimmable``). A *dynamic
  stage* (default ``layer2`` and ``layer3``, option ``dynamic_stages``) runs at one of ``widths_choices``
  (default 0.25, 0.5, 0.75, 1.0) of its channels: all its blocks, inner widths, block outputs and the
  residual stream run at the first ``k`` channels; the next stage's first conv (and the classifier)
  slice their input to ``k``. The stem and fixed stages always run at full width. ``layer1`` is fixed by
  default: its gate would read only the stem's pooled features, too little to judge an image's
  difficulty; the price is that stem + layer1 (about a third of the MACs) always run. Pass
  ``dynamic_stages=(1, 2, 3)`` to slim it too.
- A ``WidthGate`` at the start of each dynamic stage reads the stage input: global pool -> 1x1 conv ->
  ReLU, then an SE head (sigmoid channel attention, which scales the first block's inner features,
  i.e. ``relu(bn1(conv1(x)))``, as DS-Net's gate sits inside the first block) and a width head (logits
  over the choices; argmax, no Gumbel noise, no sampling). The SE head runs in every mode (supernet
  training included, as in the reference), the width head only in dynamic mode. ``gate_grid=g`` (not in
  the paper; default 1) pools to a g x g map read by a g x g conv instead of a global pool.
- BN running statistics: one row per width of the stage for ``bn2`` (``bn3``) and the BNs of later blocks; for the
  first block's ``bn1`` and projection-shortcut BN, whose input width is the previous stage's choice,
  one row per (previous width, this width) pair (``key = in_index * n_choices + out_index``). The gates
  choose stage widths independently, so a row per output width alone would normalize a wide layer3 fed
  by a narrow layer2 with statistics of wide inputs.

Forward modes (none mutates the model; one model serves many requests at once):

- ``model(x)``: dynamic (train and eval). At each dynamic stage the rows are grouped by chosen width on the
  device (one host read of the group sizes per gate, nothing else waits for the device), each group runs at
  its width on its rows only (``index_select``, compute, reassemble in the input's order), inside
  ``trace.subset(rows)``; every gate records ``kind="width"`` with width, channels, max_channels and
  probabilities. ``model(x, return_gates=True)`` returns ``DSOutput`` (logits, width logits, choices).
- ``model(x, width=w)`` / ``model.forward_at_width(x, w)``: a static subnet, ``w`` one of the choices
  (all dynamic stages) or one per dynamic stage. ``model(x, configs=[...])``: several static subnets at
  once (choice indices per dynamic stage), stacked; one call, so DDP syncs gradients once per step.
- ``static_subnet(w)`` exports a static subnet as a plain ``ResNet`` (without the SE attention),
  ``dense_counterpart()`` is ``static_subnet(1.0)``, ``benchmark_references()`` gives ``tools.bench``
  the dense backbone and the widest/narrowest static subnets.

Training (IEB supernet, then SGS gates) and what its gradients see: ``models.recipes.dsnet``.
"""

from __future__ import annotations

import functools
import itertools
import math
from contextlib import nullcontext
from typing import Callable, ContextManager, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _disable_current_modes

from .errors import UsageError
from .layers.batchnorm_fold import fold_weights
from .layers.row_groups import group_rows, inverse_permutation
from .layers.slimmable import SlimBatchNorm2d, SlimConv2d, WidthGate
from .registry import register_model
from .resnet import RESNET50, RESNET50_WIDTHS, BasicBlock, Bottleneck, ResNet, make_stem, stage_layers
from .trace import PerRow, Trace, current_trace
from .decisions import DecisionKind, register_kind

WIDTH_CHOICES = (0.25, 0.5, 0.75, 1.0)
Config = tuple[int, ...]  # width-choice index per dynamic stage


WIDTH = register_kind(
    DecisionKind(
        "width",
        "dsnet",
        "image",
        {
            "width": ("number", "the chosen width ratio"),
            "channels": ("integer", "channels the stage ran with"),
            "max_channels": ("integer", "channels of the widest choice"),
            "probabilities": ("array", "the width gate's probability of each choice"),
        },
        "the width a slimmable stage ran at",
        signature=lambda d: d["width"],
        optional=("probabilities",),
        forcible=("width",),
    )
)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` without the copy of a single part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _GroupedBatch:
    """A batch being run group by group (``DSResNet._dynamic_grouped``): ``pieces``, contiguous runs of rows at one
    width choice (their channels differ), and ``order``, the input row of each position."""

    def __init__(self, x: torch.Tensor, trace: Trace | None) -> None:
        self.pieces: list[tuple[torch.Tensor, int]] = [(x, 0)]  # (rows, the choice they ran at)
        self.order = torch.arange(len(x), device=x.device)
        self.trace = trace

    def starts(self) -> list[int]:
        return list(itertools.accumulate([len(p) for p, _ in self.pieces], initial=0))

    def rows(self, start: int, count: int) -> ContextManager:
        """Inside: the trace works on the positions ``start..start+count`` (nothing to do without a trace or for
        the whole batch)."""
        if self.trace is None or count == len(self.order):
            return nullcontext()
        return self.trace.subset(self.order[start : start + count])

    def each_piece(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """``fn`` on each piece, each inside its rows."""
        out = []
        for (piece, _), start in zip(self.pieces, self.starts()):
            with self.rows(start, len(piece)):
                out.append(fn(piece))
        return out


class DSOutput(NamedTuple):
    """A dynamic forward's result; D = number of dynamic stages, n = number of width choices."""

    logits: torch.Tensor  # (N, classes)
    width_logits: torch.Tensor  # (N, D, n)
    choices: torch.Tensor  # (N, D) long, index of the width each gate chose


def fold_sliced(
    conv: SlimConv2d, bn: SlimBatchNorm2d, k_in: int, c: int, key: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn`` (statistics row ``key``) folded into ``conv`` sliced to ``k_in -> c``: one contiguous weight and bias."""
    weight, bias = fold_weights(
        conv.weight[:c, :k_in],
        None,
        bn.running_mean[key, :c],
        bn.running_var[key, :c],
        bn.eps,
        bn.weight[:c],
        bn.bias[:c],
    )
    return weight.contiguous(), bias


class DSBlock(nn.Module):
    """``BasicBlock`` with slice-able convs/BNs (same attribute names, so state_dict keys match ResNet's).

    ``forward(x, channels, ...)`` runs at ``channels`` output channels. The first BN after a conv that reads the
    block input (``bn1``, the shortcut's) has a statistics row per (input width, this width) pair, the others one
    per width (the module docstring).
    """

    expansion = 1
    convs = (("conv1", "bn1"), ("conv2", "bn2"))  # the residual path, in order; the first reads the block input

    def __init__(self, in_ch: int, width: int, stride: int, in_keys: int, out_keys: int) -> None:
        super().__init__()
        self.in_keys, self.out_keys = in_keys, out_keys
        self.conv1 = SlimConv2d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = SlimBatchNorm2d(width, in_keys * out_keys)
        self.conv2 = SlimConv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = SlimBatchNorm2d(width, out_keys)
        self._shortcut(in_ch, width, stride)

    def _shortcut(self, in_ch: int, out_ch: int, stride: int) -> None:
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                SlimConv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                SlimBatchNorm2d(out_ch, self.in_keys * self.out_keys),
            )

    @property
    def last_bn(self) -> SlimBatchNorm2d:
        return getattr(self, self.convs[-1][1])

    def inner_channels(self, channels: int) -> int:
        """Channels of the inner convs when the block outputs ``channels``."""
        return max(1, round(channels / self.expansion))

    folded: dict | None = None  # the fast inference form's weights per (input channels, channels, key)

    @torch.no_grad()
    def fold_widths(self, combos: list[tuple[int, int, int, int]]) -> None:
        """Fold each BatchNorm into its conv for every ``(k_in, channels, in_index, out_index)`` the network can
        run: one contiguous sliced weight and bias per width and statistics row, made once."""
        folded = {}
        for k_in, c, in_index, out_index in combos:
            key = in_index * self.out_keys + out_index
            inner, k, path = self.inner_channels(c), k_in, []
            for i, (conv, bn) in enumerate(self.convs):
                out = c if i == len(self.convs) - 1 else inner
                path.append(fold_sliced(getattr(self, conv), getattr(self, bn), k, out, key if i == 0 else out_index))
                k = out
            shortcut = None if isinstance(self.shortcut, nn.Identity) else fold_sliced(*self.shortcut, k_in, c, key)
            folded[(k_in, c, key)] = (path, shortcut)
        self.folded = folded

    def _apply(self, fn, recurse: bool = True):
        """``Module.to`` (device, dtype, memory format) reaches the folded weights too: they are not parameters."""
        if self.folded is not None:

            def convert(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else fn(t)

            self.folded = {
                key: (
                    [(convert(w), convert(b)) for w, b in path],
                    None if shortcut is None else tuple(map(convert, shortcut)),
                )
                for key, (path, shortcut) in self.folded.items()
            }
        return super()._apply(fn, recurse)

    def _forward_folded(self, x: torch.Tensor, channels: int, key: int, attention: torch.Tensor | None) -> torch.Tensor:
        path, shortcut = self.folded[(x.shape[1], channels, key)]
        h = x
        for i, ((name, _), (w, b)) in enumerate(zip(self.convs, path)):
            conv = getattr(self, name)
            h = F.conv2d(h, w, b, conv.stride, conv.padding)
            if i < len(path) - 1:
                h = F.relu(h)
            if i == 0 and attention is not None:
                h = h * attention
        if shortcut is None:
            return F.relu(h + x[:, :channels])
        return F.relu(h + F.conv2d(x, shortcut[0], shortcut[1], self.shortcut[0].stride))

    def forward(
        self, x: torch.Tensor, channels: int, out_index: int, in_index: int = 0, attention: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run at ``channels`` output channels; ``x`` has the width of its producer (choice ``in_index``);
        ``attention`` (the gate's SE head) scales the first conv's output."""
        key = in_index * self.out_keys + out_index
        if self.folded is not None:
            return self._forward_folded(x, channels, key, attention)
        inner, h = self.inner_channels(channels), x
        for i, (conv, bn) in enumerate(self.convs):
            last = i == len(self.convs) - 1
            h = getattr(self, bn)(getattr(self, conv)(h, channels if last else inner), key if i == 0 else out_index)
            if not last:
                h = F.relu(h)
            if i == 0 and attention is not None:
                h = h * attention
        if isinstance(self.shortcut, nn.Identity):
            shortcut = x[:, :channels]
        else:
            shortcut = self.shortcut[1](self.shortcut[0](x, channels), key)
        return F.relu(h + shortcut)


class DSBottleneck(DSBlock):
    """``Bottleneck`` (1x1, 3x3 with the stride, 1x1 to ``4 * width``) with slice-able convs/BNs; a stage at width
    ratio ``r`` runs ``r`` of the inner and of the output channels."""

    expansion = 4
    convs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_ch: int, width: int, stride: int, in_keys: int, out_keys: int) -> None:
        nn.Module.__init__(self)
        self.in_keys, self.out_keys = in_keys, out_keys
        self.conv1 = SlimConv2d(in_ch, width, 1, bias=False)
        self.bn1 = SlimBatchNorm2d(width, in_keys * out_keys)
        self.conv2 = SlimConv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = SlimBatchNorm2d(width, out_keys)
        self.conv3 = SlimConv2d(width, width * 4, 1, bias=False)
        self.bn3 = SlimBatchNorm2d(width * 4, out_keys)
        self._shortcut(in_ch, width * 4, stride)


SAME_WIDTHS = "static subnets, same widths (no gate)"  # the bench's reference of equal MACs (issue 30)


class DSResNet(ResNet):
    """CIFAR ResNet whose dynamic stages run at a per-image width chosen by a gate (see the module docstring)."""

    method = "dsnet"

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        widths_choices: Sequence[float] = WIDTH_CHOICES,
        dynamic_stages: Sequence[int] = (2, 3),
        attention: bool = True,
        gate_grid: int = 1,
        block: type[BasicBlock] = BasicBlock,
        layers: Sequence[int] | None = None,
        stem: str = "cifar",
    ) -> None:
        nn.Module.__init__(self)
        self.depth, self.widths = depth, tuple(int(w) for w in widths)
        self.layers, self.stem_kind = stage_layers(depth, len(self.widths), layers), stem
        self.block_type = block
        slim_block = DSBottleneck if issubclass(block, Bottleneck) else DSBlock
        choices = tuple(sorted(float(w) for w in widths_choices))
        if not choices or choices[0] <= 0 or choices[-1] != 1.0 or len(set(choices)) != len(choices):
            raise UsageError(f"widths_choices must be distinct ratios in (0, 1] ending with 1.0, got {widths_choices}")
        dynamic = tuple(sorted(set(int(s) for s in dynamic_stages)))
        stages = tuple(range(1, len(self.widths) + 1))
        if not dynamic or not set(dynamic) <= set(stages):
            raise UsageError(f"dynamic_stages must be a non-empty subset of {stages}, got {dynamic_stages}")
        self.widths_choices, self.dynamic_stages, self.use_attention = choices, dynamic, bool(attention)
        # the channels each stage outputs (the residual stream's width), per choice
        self.stage_channels: tuple[tuple[int, ...], ...] = tuple(
            tuple(max(1, round(w * c * slim_block.expansion)) for w in choices)
            if s in dynamic
            else (c * slim_block.expansion,)
            for s, c in enumerate(self.widths, 1)
        )
        for s, options in enumerate(self.stage_channels, 1):
            if len(set(options)) != len(options):
                raise UsageError(f"widths_choices {choices} give repeated channel counts {options} in layer{s}")
        self.stem = make_stem(stem, in_chans, self.widths[0])
        in_ch, in_keys = self.widths[0], 1
        gates = {}
        for s, (width, n) in enumerate(zip(self.widths, self.layers), 1):
            keys = len(self.stage_channels[s - 1])
            out_ch = width * slim_block.expansion
            blocks = [
                slim_block(in_ch if j == 0 else out_ch, width, 1 if s == 1 or j else 2, in_keys if j == 0 else 1, keys)
                for j in range(n)
            ]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
            if s in dynamic:  # the SE head scales the first block's inner channels
                gates[f"layer{s}"] = WidthGate(in_ch, width, len(choices), attention=attention, grid=gate_grid)
            in_ch, in_keys = out_ch, keys
        self.gates = nn.ModuleDict(gates)
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, as in ResNet, so attributions (GradCAM) can hook it
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_backbone()

    def _init_backbone(self) -> None:
        """As ``resnet.init_weights`` (Kaiming convs, unit BN, zero-init last BN of each block); gates keep their
        own."""
        for part in (self.stem, *self.stages()):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, SlimBatchNorm2d)):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                if isinstance(m, DSBlock):
                    nn.init.zeros_(m.last_bn.weight)

    # --- width configurations -------------------------------------------------------------------------
    @property
    def num_choices(self) -> int:
        return len(self.widths_choices)

    @property
    def gate_names(self) -> tuple[str, ...]:
        return tuple(f"layer{s}" for s in self.dynamic_stages)

    @property
    def widest_config(self) -> Config:
        return (self.num_choices - 1,) * len(self.dynamic_stages)

    @property
    def narrowest_config(self) -> Config:
        return (0,) * len(self.dynamic_stages)

    def config_of(self, width: float | Sequence[float]) -> Config:
        """Choice indices for one width (every dynamic stage) or one width per dynamic stage."""
        ws = [width] * len(self.dynamic_stages) if isinstance(width, (int, float)) else list(width)
        if len(ws) != len(self.dynamic_stages):
            raise ValueError(f"need one width per dynamic stage {self.gate_names}, got {width}")
        config = []
        for w in ws:
            matches = [i for i, c in enumerate(self.widths_choices) if math.isclose(float(w), c, abs_tol=1e-6)]
            if not matches:
                raise ValueError(f"width {w} is not one of the choices {self.widths_choices}")
            config.append(matches[0])
        return tuple(config)

    def stage_indices(self, config: Config) -> tuple[int, ...]:
        """Choice index of each stage (0 for a fixed stage)."""
        if len(config) != len(self.dynamic_stages) or not all(0 <= i < self.num_choices for i in config):
            raise ValueError(
                f"config {config} does not fit dynamic stages {self.gate_names} x {self.num_choices} choices"
            )
        chosen = dict(zip(self.dynamic_stages, config))
        return tuple(int(chosen.get(s, 0)) for s in range(1, len(self.widths) + 1))

    def channels_of(self, config: Config) -> tuple[int, ...]:
        """The channels each stage outputs in ``config``."""
        return tuple(self.stage_channels[s][i] for s, i in enumerate(self.stage_indices(config)))

    def widths_of(self, config: Config) -> tuple[int, ...]:
        """The stage widths (``ResNet(widths=...)``) of the static subnet ``config``."""
        return tuple(self.layer1[0].inner_channels(c) for c in self.channels_of(config))

    def calibration_configs(self) -> list[Config]:
        """n^2 configurations (alternating i, j over the dynamic stages) covering every (previous, current) width
        pair."""
        n, d = self.num_choices, len(self.dynamic_stages)
        configs = {tuple(i if t % 2 == 0 else j for t in range(d)): None for i in range(n) for j in range(n)}
        return list(configs)

    def gate_parameters(self) -> list[nn.Parameter]:
        return list(self.gates.parameters())

    # --- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        width: float | Sequence[float] | None = None,
        *,
        configs: Sequence[Config] | None = None,
        return_gates: bool = False,
    ) -> torch.Tensor | DSOutput:
        """Dynamic logits by default; ``width`` forces a static subnet; ``configs`` stacks several static subnets."""
        if configs is not None:
            return torch.stack([self._forward_static(x, tuple(c)) for c in configs])
        if width is not None:
            return self._forward_static(x, self.config_of(width))
        trace = current_trace()
        if x.shape[0] == 1 and not return_gates and not self.training and (trace is None or not trace.observe):
            return self._forward_one(x, trace)
        out = self._forward_dynamic(x)
        return out if return_gates else out.logits

    def choice_of(self, width: float) -> int:
        """The index of a width choice (an override names the width, e.g. 0.25)."""
        for index, choice in enumerate(self.widths_choices):
            if abs(float(width) - choice) < 1e-6:
                return index
        raise ValueError(f"width {width} is not one of this DS-Net's choices {list(self.widths_choices)}")

    def decision_layers(self) -> dict[str, str]:
        return {name: WIDTH.name for name in self.gate_names}

    def costliest_path(self) -> dict[str, dict]:
        return {name: {"width": self.widths_choices[-1]} for name in self.gate_names}

    def fold_batchnorms(self) -> int:
        """The fast inference form (``models.inference``): the stem's BN folded as in any ResNet, each block's per
        width and statistics row (``DSBlock.fold_widths``)."""
        from .inference import fold_batchnorms

        folded = fold_batchnorms(self.stem)
        in_options: tuple[int, ...] = (self.widths[0],)
        for s, options in enumerate(self.stage_channels, 1):
            blocks = list(self.stages()[s - 1])
            blocks[0].fold_widths([(k_in, c, i, o) for i, k_in in enumerate(in_options) for o, c in enumerate(options)])
            for block in blocks[1:]:
                block.fold_widths([(c, c, 0, o) for o, c in enumerate(options)])
            folded += len(blocks)
            in_options = options
        return folded

    def knobs(self) -> dict[str, dict]:
        return {
            "width_bias": {
                "low": -5.0,
                "high": 5.0,
                "default": 0.0,
                "help": "added to the width gate's logits from -bias (narrowest) to +bias (widest); "
                "> 0 moves images to wider widths, < 0 to narrower (0: the trained gate)",
            }
        }

    def forward_at_width(self, x: torch.Tensor, width: float | Sequence[float]) -> torch.Tensor:
        """The static subnet at ``width`` (functional: nothing is stored on the model)."""
        return self(x, width=width)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier on the first ``x.shape[1]`` features (the last stage's width)."""
        return F.linear(torch.flatten(self.pool(x), 1), self.fc.weight[:, : x.shape[1]], self.fc.bias)

    def inner_of(self, s: int, index: int) -> int:
        """The inner channels of stage ``s``'s blocks at choice ``index`` (what the gate's SE head scales)."""
        return self.stages()[s - 1][0].inner_channels(self.stage_channels[s - 1][index])

    def _run_stage(
        self, s: int, x: torch.Tensor, index: int, in_index: int, attention: torch.Tensor | None
    ) -> torch.Tensor:
        return self._later_blocks(s, self._first_block(s, x, index, in_index, attention), index)

    def _first_block(
        self, s: int, x: torch.Tensor, index: int, in_index: int, attention: torch.Tensor | None
    ) -> torch.Tensor:
        """Stage ``s``'s first block at choice ``index`` on ``x`` of the previous stage's choice ``in_index``."""
        return getattr(self, f"layer{s}")[0](x, self.stage_channels[s - 1][index], index, in_index, attention)

    def _later_blocks(self, s: int, x: torch.Tensor, index: int) -> torch.Tensor:
        """Stage ``s``'s other blocks at choice ``index``."""
        for block in list(getattr(self, f"layer{s}"))[1:]:
            x = block(x, self.stage_channels[s - 1][index], index)
        return x

    def _forward_static(self, x: torch.Tensor, config: Config) -> torch.Tensor:
        trace = current_trace()
        indices = self.stage_indices(config)
        x = self.stem(x)
        in_index = 0
        for s, index in enumerate(indices, 1):
            attention = None
            name = f"layer{s}"
            if name in self.gates:
                channels = self.stage_channels[s - 1][index]
                if trace is not None:
                    trace.record(
                        name,
                        WIDTH,
                        width=self.widths_choices[index],
                        channels=channels,
                        max_channels=self.stage_channels[s - 1][-1],
                        forced=True,
                    )
                gate = self.gates[name]
                if gate.se is not None:
                    attention = gate.attention(gate.hidden(x), self.inner_of(s, index))
            x = self._run_stage(s, x, index, in_index, attention)
            in_index = index
        return self.head(x)

    def _forward_dynamic(self, x: torch.Tensor) -> DSOutput:
        return self._dynamic_grouped(self.stem(x), current_trace())

    def _tilted(self, z: torch.Tensor, trace: Trace | None) -> torch.Tensor:
        """The width logits with the ``width_bias`` knob applied: one step of bias per choice, from -bias to +bias."""
        bias = trace.knob("width_bias", 0.0) if trace is not None else 0.0
        if bias:
            z = z + bias * torch.linspace(-1.0, 1.0, z.shape[1], dtype=z.dtype, device=z.device)
        return z

    def _forward_one(self, x: torch.Tensor, trace: Trace | None) -> torch.Tensor:
        """Batch 1 with nothing to record (plain inference, or a forced path being timed): the choices of
        ``_dynamic_grouped`` taken with Python control flow, without grouping and reassembling the batch."""
        x, in_index = self.stem(x), 0
        for s in range(1, len(self.widths) + 1):
            name = f"layer{s}"
            if name not in self.gates:
                x, in_index = self._run_stage(s, x, 0, in_index, None), 0
                continue
            gate = self.gates[name]
            h = gate.hidden(x)
            forced = trace.forced(name, WIDTH) if trace is not None else None
            index = (
                self.choice_of(forced)
                if forced is not None
                else int(self._tilted(gate.width_logits(h), trace).argmax())
            )
            x, in_index = self._run_stage(s, x, index, in_index, gate.attention(h, self.inner_of(s, index))), index
        return self.head(x)

    def _dynamic_grouped(self, x: torch.Tensor, trace: Trace | None) -> DSOutput:
        """Stages and head on a batch, each stage once per chosen width: the rows of one width run together.

        At a gate the rows are sorted by (choice, previous choice) on the device and the group sizes are read once
        (the stage's only host read); a stage's first block runs once per (previous width, width) pair, as its BN
        statistics and input channels depend on both, its later blocks once per width (``_run_grouped``). Logits,
        width logits and choices return in the input's order (differentiable: cat and index_select). Each group
        runs inside ``trace.subset`` of its rows when tracing.
        """
        batch = _GroupedBatch(x, trace)
        z_per_gate, choice_per_gate = [], []
        for s in range(1, len(self.widths) + 1):
            gate = self.gates[f"layer{s}"] if f"layer{s}" in self.gates else None
            choice = h = None
            if gate is not None:
                h = _cat(batch.each_piece(gate.hidden))
                choice, z_in_order, choice_in_order = self._decide_widths(s, h, batch.order, trace)
                z_per_gate.append(z_in_order)
                choice_per_gate.append(choice_in_order)
            self._run_grouped(s, batch, choice, gate, h)
        logits = _cat(batch.each_piece(self.head)).index_select(0, inverse_permutation(batch.order))
        n, k = len(x), self.num_choices
        if not z_per_gate:
            return DSOutput(logits, x.new_zeros(n, 0, k), torch.zeros(n, 0, dtype=torch.long, device=x.device))
        return DSOutput(logits, torch.stack(z_per_gate, 1), torch.stack(choice_per_gate, 1))

    def _decide_widths(
        self, s: int, h: torch.Tensor, order: torch.Tensor, trace: Trace | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage ``s``'s gate on the hidden features ``h`` (rows in the current ``order``), forced and recorded as
        the trace says: the choice in the current order, then the width logits and the choice in the input's."""
        name = f"layer{s}"
        z = self._tilted(self.gates[name].width_logits(h), trace)  # > 0 tilts towards wider choices, < 0 narrower
        choice = z.argmax(1)
        forced = trace.forced(name, WIDTH) if trace is not None else None
        if isinstance(forced, PerRow):  # given in the input's order
            choice = torch.tensor([self.choice_of(w) for w in forced], device=h.device).index_select(0, order)
        elif forced is not None:
            choice = torch.full_like(choice, self.choice_of(forced))
        back = inverse_permutation(order)
        z_in_order, choice_in_order = z.index_select(0, back), choice.index_select(0, back)
        if trace is not None:
            options, on_host = self.stage_channels[s - 1], choice_in_order.cpu()
            trace.record(
                name,
                WIDTH,
                width=torch.tensor(self.widths_choices, dtype=torch.float64)[on_host],
                channels=torch.tensor(options)[on_host],
                max_channels=options[-1],
                probabilities=z_in_order.softmax(1),  # kept differentiable for attributions (keep_tensors)
                **({"forced": True} if forced is not None else {}),
            )
        return choice, z_in_order, choice_in_order

    def _run_grouped(
        self,
        s: int,
        batch: "_GroupedBatch",
        choice: torch.Tensor | None,
        gate: WidthGate | None,
        h: torch.Tensor | None,
    ) -> None:
        """Stage ``s`` on ``batch`` at each row's ``choice`` (None: a fixed stage, every row at its one width): the
        rows sorted by (choice, piece), the first block once per non-empty (choice, piece), the rest once per choice;
        ``batch`` then holds one piece per choice taken."""
        pieces, k, starts = batch.pieces, self.num_choices, batch.starts()
        if choice is None:
            perm, sizes = None, [len(p) for p, _ in pieces] + [0] * ((k - 1) * len(pieces))
        else:
            piece_of = torch.cat([torch.full((len(p),), i, device=choice.device) for i, (p, _) in enumerate(pieces)])
            # choice-major: the rows of one width end up contiguous; the sizes are this stage's one host read
            perm, sizes = group_rows(choice * len(pieces) + piece_of, k * len(pieces))
        groups = [(c, i) for c in range(k) for i in range(len(pieces)) if sizes[c * len(pieces) + i]]
        if [i for _, i in groups] == list(range(len(pieces))):
            perm = None  # each piece chose one width, in the order of the pieces: nothing moves
        else:
            batch.order = batch.order.index_select(0, perm)
            h = h.index_select(0, perm)
        offset, next_pieces = 0, []
        for c in range(k):
            first, start = [], offset
            for i, (piece, in_index) in enumerate(pieces):
                count = sizes[c * len(pieces) + i]
                if not count:
                    continue
                span = slice(offset, offset + count)
                # stable sort: a piece that chose one width keeps its order
                rows = piece if count == len(piece) else piece.index_select(0, perm[span] - starts[i])
                with batch.rows(offset, count):
                    attention = None if gate is None else gate.attention(h[span], self.inner_of(s, c))
                    first.append(self._first_block(s, rows, c, in_index, attention))
                offset += count
            if first:
                y = _cat(first)
                with batch.rows(start, len(y)):
                    next_pieces.append((self._later_blocks(s, y, c), c))
        batch.pieces = next_pieces

    # --- static subnets -------------------------------------------------------------------------------
    def _bn_keys(self, config: Config) -> dict[str, int]:
        """Running-statistics row of every ``SlimBatchNorm2d`` for a static configuration."""
        indices = self.stage_indices(config)
        keys = {}
        for s, index in enumerate(indices, 1):
            previous = indices[s - 2] if s > 1 else 0
            for j, block in enumerate(getattr(self, f"layer{s}")):
                first = (previous if j == 0 else 0) * block.out_keys + index
                for i, (_, bn) in enumerate(block.convs):
                    keys[f"layer{s}.{j}.{bn}"] = first if i == 0 else index
                keys[f"layer{s}.{j}.shortcut.1"] = first
        return keys

    def subnet_state_dict(self, config: Config) -> dict[str, torch.Tensor]:
        """Weights and BN statistics of the static subnet ``config``, shaped for
        ``ResNet(widths=channels_of(config))``."""
        target = ResNet(
            self.depth, self.fc.out_features, self.stem[0].in_channels, self.widths_of(config), **self.backbone
        ).state_dict()
        source, keys = self.state_dict(), self._bn_keys(config)
        out = {}
        for name, like in target.items():
            tensor = source[name]
            module, _, leaf = name.rpartition(".")
            if module in keys and leaf in ("running_mean", "running_var", "num_batches_tracked"):
                tensor = tensor[keys[module]]
            out[name] = tensor[tuple(slice(0, n) for n in like.shape)].clone()
        return out

    def upcycle(self, source: dict[str, torch.Tensor]) -> list[str]:
        """``models.train --init-from`` a DS-Net with global-pool gates into one with grid gates (``gate_grid``):
        each reduce weight is spread over the grid (``WidthGate.spread_global_reduce``). Returns the keys used."""
        keys = [f"gates.{name}.reduce.weight" for name in self.gates]
        return [k for k, gate in zip(keys, self.gates.values()) if k in source and gate.spread_global_reduce(source[k])]

    def static_subnet(self, width: float | Sequence[float]) -> ResNet:
        """A plain ``ResNet`` equal to the static subnet at ``width`` without the gates' SE attention.

        Exactly equal to ``forward_at_width`` when the model was built with ``attention=False``.
        """
        config = self.config_of(width)
        return self.plain_copy(self.subnet_state_dict(config), widths=self.widths_of(config))

    def dense_counterpart(self) -> ResNet:
        """The plain full-width ResNet with this backbone's weights and widest BN statistics (``cost.full_macs``)."""
        return self.static_subnet(1.0)

    static_variants = "static width"  # the evaluation variants that are static networks (analysis.results' frontier)

    def evaluation_variants(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """For ``models.evaluate``: every static width (with the gates' attention, as the dynamic net runs them)."""
        return {f"static width {w:g}": functools.partial(self.forward_at_width, width=w) for w in self.widths_choices}

    def benchmark_references(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """What ``tools.bench`` times the dynamic net against (the dense backbone, the extreme static subnets),
        plus the narrowest static subnet against the widest (a ``(subject, reference)`` pair)."""
        widest = functools.partial(self.forward_at_width, width=self.widths_choices[-1])
        narrowest = functools.partial(self.forward_at_width, width=self.widths_choices[0])
        return {
            "dense backbone": self.dense_counterpart().eval(),
            SAME_WIDTHS: self._same_widths_static(),
            "static widest subnet": widest,
            "static narrowest subnet": narrowest,
            "narrowest vs widest (static)": (narrowest, widest),
        }

    def _same_widths_static(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The static subnets of equal MACs: each image at the widths the gates choose for it, decided once per input
        tensor beforehand (a bench input is the same tensor every round) and run without any gate, the images of one
        configuration together. Against it the dynamic model's latency is its gate and dispatch overhead."""
        decided: dict[tuple, torch.Tensor] = {}

        def run(x: torch.Tensor) -> torch.Tensor:
            key = (x.data_ptr(), tuple(x.shape))
            if key not in decided:
                with _disable_current_modes():  # deciding is not the reference's work: no counter sees it
                    decided[key] = self._forward_dynamic(x).choices
            configs = decided[key]
            if len(x) == 1:
                return self._forward_static(x, tuple(configs[0].tolist()))
            out = None
            for config in configs.unique(dim=0):
                rows = (configs == config).all(1).nonzero().squeeze(1)
                logits = self._forward_static(x.index_select(0, rows), tuple(config.tolist()))
                out = logits.new_empty(len(x), logits.shape[1]) if out is None else out
                out[rows] = logits
            return out

        return run


@register_model
def dsnet_resnet8(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-8: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        8, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet14(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-14: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        14, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet20(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-20: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        20, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet32(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-32: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        32, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet44(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-44: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        44, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet56(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-56: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        56, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet110(
    num_classes: int = 10,
    in_chans: int = 3,
    widths: tuple[int, int, int] = (16, 32, 64),
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the CIFAR ResNet-110: slimmable widths in dynamic_stages (default layer2, layer3), chosen per image
    by gates."""
    return DSResNet(
        110, num_classes, in_chans, tuple(widths), tuple(widths_choices), tuple(dynamic_stages), attention, gate_grid
    )


@register_model
def dsnet_resnet50(
    num_classes: int = 1000,
    in_chans: int = 3,
    widths: tuple[int, ...] = RESNET50_WIDTHS,
    widths_choices: Sequence[float] = WIDTH_CHOICES,
    dynamic_stages: Sequence[int] = (2, 3, 4),
    attention: bool = True,
    gate_grid: int = 1,
) -> DSResNet:
    """DS-Net on the ImageNet ResNet-50 (the paper's backbone): slimmable bottleneck stages 2-4, for the paper-scale
    bench."""
    return DSResNet(
        50,
        num_classes,
        in_chans,
        tuple(widths),
        tuple(widths_choices),
        tuple(dynamic_stages),
        attention,
        gate_grid,
        **RESNET50,
    )
