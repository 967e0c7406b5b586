"""Budget-knob sweeps: for each value of one inference setting (``model.knobs()``: SkipNet's gate threshold, the
early-exit confidence threshold, DS-Net's width bias), the accuracy and the MACs each test image really executed, on
the same images. The model is never changed: the value travels in the trace of each call.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

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
        table = stored_table(model, images, knobs={knob: float(value)}, root=root)
        correct = table["correct"].dropna()
        rows.append(
            {
                "value": float(value),
                "accuracy": float(correct.mean()) if len(correct) else math.nan,
                "macs_mean": float(table["macs"].mean()),
                "macs_min": float(table["macs"].min()),
                "macs_max": float(table["macs"].max()),
            }
        )
        if progress is not None:
            progress((i + 1) / len(values))
    return pd.DataFrame(rows, columns=COLUMNS)
