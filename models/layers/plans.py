"""The fastest exact execution of a layer, chosen by measurement once per device and input shape.

Some layers can compute their function in more than one way: DGConv's exported conv as the grouped conv with its
channel gathers or as one dense conv holding the zero blocks; CondConv's per-example convolution over the whole batch
or over chunks of it that stay in cache. Which is faster depends on the device, the shape, the memory layout and the
machine, so each plan is timed ``PLAN_REPEATS`` times (median, the plans taking turns, the device's queue drained
around each run) the first time an input shape and layout is seen in inference. Training, autograd and any counting
mode (the trace's MAC counter, ``FlopCounterMode``) run the layer's reference plan, the one its method describes, so
what is counted is that plan's work.
"""

from __future__ import annotations

from statistics import median
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..host_sync import alternating

PLAN_REPEATS = 11  # timed runs per plan when a shape is first seen (median; near ties need several)
MEASURED = ("cpu", "cuda", "mps")  # devices whose plans are timed (others, e.g. meta, run the reference plan)
_REFERENCE_ONLY: ContextVar[bool] = ContextVar("routescope_reference_plans", default=False)
Plans = dict[str, Callable[[], torch.Tensor]]  # each exact way of computing the layer's output, by name


@contextmanager
def reference_plans() -> Iterator[None]:
    """Every layer runs its reference plan inside (what ``tools.bench --plans`` times the measured choice against)."""
    token = _REFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _REFERENCE_ONLY.reset(token)


def counting() -> bool:
    """Whether a ``TorchDispatchMode`` (the trace's MAC counter, ``FlopCounterMode``) is watching the operators."""
    return _get_current_dispatch_mode() is not None


def fastest(plans: Plans, device: torch.device) -> str:
    """The name of the fastest plan, each run once to warm up, then timed ``PLAN_REPEATS`` times (median), the plans
    taking turns (``alternating``) so that a slow spell of the machine falls on all of them."""
    for run in plans.values():
        run()
    times = dict(zip(plans, alternating(list(plans.values()), PLAN_REPEATS, device)))
    return min(times, key=lambda name: median(times[name]))


class MeasuredPlans:
    """A layer's choice among exact plans, per ``(device type, contiguous?, *input shape)``; ``chosen`` holds what
    was measured."""

    def __init__(self) -> None:
        self.chosen: dict[tuple, str] = {}

    def choose(self, layer: nn.Module, x: torch.Tensor, plans: Callable[[], Plans], reference: str) -> str:
        """The name of the plan to run on ``x``: ``reference`` in training, autograd, a counting mode or on an
        unmeasured device; else the plan measured fastest for ``x``'s device, layout and shape, measured now if this
        is the first such input. ``plans()`` makes the runnable plans only then: a layer that knows its choice pays
        a dictionary lookup per call (at batch 1 a layer's Python costs as much as a small operator)."""
        if layer.training or torch.is_grad_enabled() or counting() or _REFERENCE_ONLY.get():
            return reference
        key = (x.device.type, x.is_contiguous(), *x.shape)  # the layout too: channels-last may change the fastest
        name = self.chosen.get(key)
        if name is None:
            if key[0] not in MEASURED:
                return reference
            name = self.chosen[key] = fastest(plans(), x.device)
        return name

    def run(self, layer: nn.Module, x: torch.Tensor, plans: Plans, reference: str) -> torch.Tensor:
        """The chosen plan of ``plans``, run (``choose``)."""
        return plans[self.choose(layer, x, lambda: plans, reference)]()

    def forget(self) -> None:
        """Drop every measurement (the layer's weights changed)."""
        self.chosen.clear()
