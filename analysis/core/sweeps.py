"""Budget-knob sweeps: for each value of one inference setting (``model.knobs()``: SkipNet's gate threshold, the
early-exit confidence threshold, DS-Net's width bias), the accuracy and the MACs each test image really executed, on
the same images. The model is never changed: the value travels in the trace of each call.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from routescope.analysis.core.table_store import stored_table
from routescope.analysis.core.testsets import ModelImages
from routescope.models.trace import check_interventions

COLUMNS = ["value", "accuracy", "macs_mean", "macs_min", "macs_max"]


def knob_sweep(
    model: torch.nn.Module,
    knob: str,
    values: Sequence[float],
    images: ModelImages,
    progress: Callable[[float], None] | None = None,
    bar: bool = False,
    root: Path | None = None,
) -> pd.DataFrame:
    """One row per value: ``value, accuracy, macs_mean, macs_min, macs_max``; ``progress(fraction)`` after each.
    Each value's per-image table is stored (``table_store``), so a value is traced once per test set; accuracy is
    over the labelled images (NaN when none is)."""
    for value in values:
        check_interventions(model, None, {knob: value})
    rows = []
    for i, value in enumerate(tqdm(values, desc=f"sweep {knob}", disable=not bar)):
        rows.append(sweep_row(model, knob, value, images, root))
        if progress is not None:
            progress((i + 1) / len(values))
    return pd.DataFrame(rows, columns=COLUMNS)


def sweep_row(model: torch.nn.Module, knob: str, value: float, images: ModelImages, root: Path | None = None) -> dict:
    """One row of ``knob_sweep``: the knob at ``value`` over ``images`` (its table stored, traced once per test set)."""
    table = stored_table(model, images, knobs={knob: float(value)}, root=root)
    correct = table["correct"].dropna()
    return {
        "value": float(value),
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "macs_mean": float(table["macs"].mean()),
        "macs_min": float(table["macs"].min()),
        "macs_max": float(table["macs"].max()),
    }


def _change(a: dict, b: dict, spans: dict[str, float]) -> float:
    """How much the curve moves between two rows: MACs and accuracy each as a share of their range so far."""
    total = 0.0
    for column, span in spans.items():
        x, y = a[column], b[column]
        if span > 0 and not (math.isnan(x) or math.isnan(y)):
            total += abs(x - y) / span
    return total


def adaptive_values(
    evaluate: Callable[[float], dict],
    low: float,
    high: float,
    budget: int = 11,
    start: int = 5,
    digits: int = 4,
    stop: Callable[[], bool] | None = None,
    done: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Up to ``budget`` rows of ``evaluate(value)`` (a dict with ``macs_mean`` and ``accuracy``) over ``[low, high]``,
    sampled where the decisions change: ``start`` evenly spaced values first, then, one at a time, the midpoint of
    the interval over which MACs and accuracy (each relative to its range so far) change most, weighed by the root
    of the interval's width (a step is not bisected forever). A knob on saturated
    gates, whose curve only moves near one end, gets its points there instead of on a flat stretch. Values are
    rounded to ``digits``; an interval too narrow to split at that rounding is left alone.

    ``stop()`` is asked before each value (True: end with the rows done); ``done(row)`` is called after each. The
    rows come back sorted by value."""
    grid = sorted({round(float(v), digits) for v in np.linspace(low, high, max(2, min(start, budget)))})
    rows: dict[float, dict] = {}

    def run(value: float) -> bool:
        if stop is not None and stop():
            return False
        rows[value] = {**evaluate(value), "value": value}
        if done is not None:
            done(rows[value])
        return True

    for value in grid:
        if not run(value):
            return [rows[v] for v in sorted(rows)]
    while len(rows) < budget:
        ordered = [rows[v] for v in sorted(rows)]
        spans = {
            c: float(np.nanmax(vals) - np.nanmin(vals)) if not np.all(np.isnan(vals)) else 0.0
            for c in ("macs_mean", "accuracy")
            for vals in [np.array([r[c] for r in ordered], dtype=float)]
        }
        candidates = []
        for a, b in zip(ordered, ordered[1:]):
            middle = round((a["value"] + b["value"]) / 2, digits)
            if middle in rows or not a["value"] < middle < b["value"]:
                continue
            # the change, weighed by the square root of the interval's share of the range: a jump (a step the
            # bisection could chase forever: SkipNet's threshold at exactly 1) loses priority as its interval
            # shrinks, so a broad change elsewhere gets points too; then the wider interval first (a flat curve)
            width = b["value"] - a["value"]
            candidates.append((_change(a, b, spans) * math.sqrt(width / (high - low)), width, middle))
        if not candidates:
            break
        _, _, middle = max(candidates)
        if not run(middle):
            break
    return [rows[v] for v in sorted(rows)]


FLAT_MACS = 0.005  # a knob whose MACs move less than this share of their mean and
FLAT_ACCURACY = 0.001  # whose accuracy moves less than this (0.1 point) changes nothing that shows


def flat_sweep(curve: pd.DataFrame) -> bool:
    """Whether a sweep's values all give (about) the same MACs and accuracy: the knob changes nothing over its range."""
    if len(curve) < 2:
        return False
    macs = curve["macs_mean"]
    accuracy = curve["accuracy"].dropna()
    macs_flat = float(macs.max() - macs.min()) <= FLAT_MACS * max(float(macs.mean()), 1.0)
    accuracy_flat = accuracy.empty or float(accuracy.max() - accuracy.min()) <= FLAT_ACCURACY
    return macs_flat and accuracy_flat


def adaptive_sweep(
    model: torch.nn.Module,
    knob: str,
    images: ModelImages,
    budget: int = 11,
    low: float | None = None,
    high: float | None = None,
    stop: Callable[[], bool] | None = None,
    done: Callable[[dict], None] | None = None,
    root: Path | None = None,
) -> pd.DataFrame:
    """``knob_sweep`` on an adaptive grid (``adaptive_values``): ``budget`` values of ``knob`` over its declared range
    (or ``[low, high]``), concentrated where MACs or accuracy change; each value's table stored like
    ``knob_sweep``'s. ``stop``/``done``: as ``adaptive_values`` (a stopped sweep keeps the values done)."""
    spec = model.knobs()[knob]
    low = float(spec["low"] if low is None else low)
    high = float(spec["high"] if high is None else high)
    check_interventions(model, None, {knob: low})
    check_interventions(model, None, {knob: high})
    rows = adaptive_values(lambda v: sweep_row(model, knob, v, images, root), low, high, budget, stop=stop, done=done)
    return pd.DataFrame(rows, columns=COLUMNS)


def seconds_per_value(model: torch.nn.Module, knob: str, images: ModelImages, probe: int = 128) -> float:
    """About how long one value of a sweep takes on ``images``: the first ``probe`` images traced once at the knob's
    default, timed, scaled to the whole set (what the page says before a sweep starts)."""
    import time

    from routescope.models.evaluation import accuracy_and_macs

    n = min(probe, len(images))
    if n == 0:
        return 0.0
    device = next(model.parameters()).device
    default = float(model.knobs()[knob]["default"])
    started = time.perf_counter()
    accuracy_and_macs(
        model, images, model.meta["mean"], model.meta["std"], device, limit=n, progress=False, knobs={knob: default}
    )
    return (time.perf_counter() - started) * len(images) / n
