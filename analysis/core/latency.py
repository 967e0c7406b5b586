"""Measured latency: MACs say what a decision saves on paper, the clock says what it saves on this machine (a
skipped block saves its time; a narrower slice or a mixed kernel may save less than its MACs).

One timing path for the app and ``tools.bench``: a side is a forward through ``models.trace.forced_forward``
(the model's own inference path: batch-1 control flow and compiled kernels, with any overrides and knobs, no MAC
counter), and two sides are timed alternately in ABBA order (``alternating``), so the noise of a shared machine
falls on both. On a GPU each call is synchronised before the clock stops.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from routescope.models.devices import model_device
from routescope.models.host_sync import alternating
from routescope.models.protocol import RouteScopeModel
from routescope.models.trace import check_interventions, forced_forward


@dataclass(frozen=True)
class Latency:
    """Milliseconds over ``runs`` timed runs after a warm-up: the median and the spread (quartiles, min, max)."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Latency":
        ms = np.asarray(seconds) * 1e3
        q1, median, q3 = np.percentile(ms, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(ms.min()), float(ms.max()), len(ms))

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms (IQR {self.q1_ms:.2f}–{self.q3_ms:.2f}, {self.runs} runs)"

    @property
    def interval(self) -> tuple[float, float]:
        """The interquartile range, in ms: the spread a difference must leave to be measured."""
        return self.q1_ms, self.q3_ms


def latency_comparison(a: Latency, b: Latency) -> float | None:
    """The ratio of the medians ``a / b`` of two sides timed alternately in one run, or None when their
    interquartile ranges overlap: a difference inside the noise of the run is no measurable difference (the rule of
    ``tools.bench``'s ratio interval and ``analysis.results.target_status``: only a whole interval counts)."""
    if a.q3_ms >= b.q1_ms and b.q3_ms >= a.q1_ms:
        return None
    return a.median_ms / b.median_ms


NO_DIFFERENCE = "no measurable difference"


def decided_call(
    model: torch.nn.Module, x: torch.Tensor, overrides: dict | None = None, knobs: dict | None = None
) -> Callable[[], torch.Tensor]:
    """One timed forward of ``model`` on ``x`` with its overrides and knobs (checked here, once, not in the timed
    call): what ``tools.bench`` and the app's latency both time."""
    overrides, knobs = check_interventions(model, overrides, knobs)
    x = x.to(model_device(model))
    return lambda: forced_forward(model, x, overrides, knobs, checked=True)


@torch.no_grad()
def paired_latency(
    model: torch.nn.Module,
    dense: torch.nn.Module,
    x: torch.Tensor,
    overrides: dict | None = None,
    knobs: dict | None = None,
    rounds: int = 16,
    warmup: int = 3,
) -> tuple[Latency, Latency]:
    """Batch-1 latency of the normalized image ``x`` (1 x C x H x W) through ``model`` (decisions forced by
    ``overrides``, settings moved by ``knobs``) and through ``dense``, measured alternately in one run."""
    sides = [decided_call(model, x, overrides, knobs), decided_call(dense, x)]
    for _ in range(warmup):
        for side in sides:
            side()
    times = alternating(sides, rounds, model_device(model))
    return Latency.of(times[0]), Latency.of(times[1])


def dense_counterpart(model: RouteScopeModel) -> torch.nn.Module:
    """The dense network a dynamic model is measured against (``model.dense_counterpart()``; a static model is
    its own), in eval mode. A copy: the caller caches it, the model is not touched."""
    dense = model.dense_counterpart()
    dense = copy.deepcopy(model) if dense is None else dense
    return dense.eval()
