"""The memory format of a fast form's weights, chosen by measurement once per model and device.

Why: PyTorch runs the batch-1 convolutions of these small networks through im2col + GEMM
(``aten::_slow_conv2d_forward``) in either layout, and how fast depends on the layout and the machine: on one CPU of
these sessions channels-last made the dense ResNet-20 much faster (``tools.bench --formats``, docs/speed.md), on an
earlier one it was slower at 28 x 28. So ``models.inference.fast_form`` times the model in
both formats on a batch-1 input of its own size (alternately, median) and keeps the faster, along the model's
``costliest_path()`` (every block, the widest width, no early exit: a random image's own decisions are no guide to
the layers real images reach, and noise leaves an early-exit network at its first exit); the dense counterpart
it is compared with is chosen the same way, so both sides run their own fastest form.

The weights decide: a convolution whose weight is channels-last returns channels-last activations whatever its
input's layout, so the network follows from its first conv without converting the caller's input (and a
1-channel image is both layouts). The format never changes what is computed (equal up to float32 summation order).

``ROUTESCOPE_MEMORY_FORMAT`` = ``auto`` (measure, the default), ``contiguous`` or ``channels_last`` fixes it.
"""

from __future__ import annotations

import copy
import os
from statistics import median
from typing import Callable

import torch
import torch.nn as nn

from .devices import model_device
from .errors import UsageError
from .host_sync import alternating
from .layers.plans import MEASURED
from .protocol import RouteScopeModel
from .trace import check_interventions, forced_forward

ENV = "ROUTESCOPE_MEMORY_FORMAT"
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
ROUNDS = 3  # alternating rounds (ABBA order) per format when measuring
FORWARDS = 4  # timed batch-1 forwards per round
BUDGET_S = 2.0  # a network too slow to measure fully within this (an uploaded giant) gets one round of one forward


def requested_memory_format() -> str:
    """``$ROUTESCOPE_MEMORY_FORMAT`` (``auto`` when unset); a ``UsageError`` for any other value."""
    name = os.environ.get(ENV) or "auto"
    if name != "auto" and name not in FORMATS:
        raise UsageError(f"{ENV}={name!r}: expected auto, {' or '.join(FORMATS)}")
    return name


def set_memory_format(model: nn.Module, name: str) -> nn.Module:
    """``model`` with its 4-D weights in format ``name`` (``Module.to``; modules holding derived weights convert
    them in ``_apply``), recorded as ``model.memory_format``."""
    model.to(memory_format=FORMATS[name])
    model.memory_format = name
    return model


def costliest_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward along its ``costliest_path()`` (every layer it has), or ``model`` itself where its work
    does not depend on the input: what the memory format is measured on."""
    path = model.costliest_path() if isinstance(model, RouteScopeModel) else {}
    if not path:
        return model
    overrides, knobs = check_interventions(model, path, None)
    return lambda x: forced_forward(model, x, overrides, knobs, checked=True)


@torch.no_grad()  # not inference_mode: the converted weights must stay usable by autograd (captum's attributions)
def fastest_memory_format(model: nn.Module, input_size: tuple[int, int, int]) -> str:
    """The format in which ``model`` runs batch-1 forwards of a random ``input_size`` image along its costliest path
    faster: a copy of it in each format, warmed up (and its layers' plans measured), then ``FORWARDS`` forwards per
    side timed alternately for ``ROUNDS`` rounds (one forward, one round where that would take over ``BUDGET_S``)."""
    device = model_device(model)
    x = torch.randn(1, *input_size, device=device)
    copies = {name: costliest_forward(set_memory_format(copy.deepcopy(model), name)) for name in FORMATS}
    first = alternating([lambda f=f: f(x) for f in copies.values()], 1, device)  # the warm-up, timed
    full = max(t for side in first for t in side) * FORWARDS * ROUNDS * len(FORMATS) <= BUDGET_S
    rounds, runs = (ROUNDS, FORWARDS) if full else (1, 1)
    sides = [lambda f=f: [f(x) for _ in range(runs)] for f in copies.values()]
    times = dict(zip(copies, alternating(sides, rounds, device)))
    return min(times, key=lambda name: median(times[name]))


def choose_memory_format(model: nn.Module, input_size: tuple[int, int, int] | None) -> str:
    """Put ``model`` in the requested format, or the measured faster one (``auto``; contiguous where there is no
    input size to measure with, no input of that size runs through it, or the device's speed is not measured);
    returns its name."""
    name = requested_memory_format()
    if name == "auto":
        name = "contiguous"
        if input_size is not None and model_device(model).type in MEASURED:
            try:
                name = fastest_memory_format(model, tuple(input_size))
            except RuntimeError:  # the input does not run through it: check_usable says why, in the user's words
                name = "contiguous"
    set_memory_format(model, name)
    return name
