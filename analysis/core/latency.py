"""Measured batch-1 latency of one image: MACs say what a decision saves on paper, the clock says what it saves
on this machine (a skipped block saves its time; a narrower slice or a mixed kernel may save less than its MACs).

The model runs with its decisions (and any overrides and knobs) as in a traced forward, but without the
per-op MAC counter, which would dominate the time of a small network.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from models.trace import _ACTIVE, Trace, check_interventions


@dataclass(frozen=True)
class Latency:
    """Milliseconds over ``runs`` timed runs after a warm-up: the median and the spread (quartiles, min, max)."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms (IQR {self.q1_ms:.2f}–{self.q3_ms:.2f}, {self.runs} runs)"


def time_calls(call: Callable[[], Any], runs: int = 15, warmup: int = 3) -> Latency:
    """Time ``call`` ``runs`` times after ``warmup`` untimed calls (the first calls allocate and pick kernels)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Latency(float(median), float(q1), float(q3), float(min(times)), float(max(times)), runs)


@torch.no_grad()
def decided_forward(model: torch.nn.Module, x: torch.Tensor, overrides: dict | None = None,
                    knobs: dict | None = None) -> torch.Tensor:
    """The model's forward with its overrides and knobs active (what ``traced_forward`` runs), minus MAC counting:
    the trace is set for the dynamic layers to read, no dispatch mode is entered."""
    trace = Trace(x.shape[0], overrides=overrides, knobs=knobs)
    token = _ACTIVE.set(trace)
    try:
        return model(x)
    finally:
        _ACTIVE.reset(token)


def image_latency(model: torch.nn.Module, x: torch.Tensor, overrides: dict | None = None, knobs: dict | None = None,
                  runs: int = 15, warmup: int = 3) -> Latency:
    """Batch-1 latency of the normalized image ``x`` (1 x C x H x W) through ``model``, decisions forced by
    ``overrides`` and settings moved by ``knobs`` (checked first, like ``traced_forward``)."""
    check_interventions(model, overrides, knobs)
    return time_calls(lambda: decided_forward(model, x, overrides, knobs), runs, warmup)


def dense_counterpart(model: torch.nn.Module) -> torch.nn.Module:
    """The dense network a dynamic model is measured against (``model.dense_counterpart()``; a static model is
    its own), in eval mode. A copy: the caller caches it, the model is not touched."""
    dense = model.dense_counterpart() if hasattr(model, "dense_counterpart") else copy.deepcopy(model)
    return dense.eval()
