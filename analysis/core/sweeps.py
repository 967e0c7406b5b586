"""Budget-knob sweeps: for each value of one inference setting (``model.knobs()``: SkipNet's gate threshold, the
early-exit confidence threshold, DS-Net's width bias), the accuracy and the MACs each test image really executed, on
the same images. The model is never changed: the value travels in the trace of each call.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from torch.utils.data import TensorDataset
from tqdm import tqdm

from models.devices import model_device
from models.evaluation import accuracy_and_macs
from models.trace import check_interventions


def knob_sweep(
    model: torch.nn.Module,
    knob: str,
    values: Sequence[float],
    images: torch.Tensor,
    labels: torch.Tensor,
    progress: Callable[[float], None] | None = None,
    bar: bool = False,
) -> pd.DataFrame:
    """One row per value: ``value, accuracy, macs_mean, macs_min, macs_max``; ``progress(fraction)`` after each."""
    for value in values:
        check_interventions(model, None, {knob: value})
    data = TensorDataset(images, labels)
    device = model_device(model)
    rows = []
    for i, value in enumerate(tqdm(values, desc=f"sweep {knob}", disable=not bar)):
        correct, macs = accuracy_and_macs(
            model, data, model.meta["mean"], model.meta["std"], device, progress=False, knobs={knob: float(value)}
        )
        rows.append(
            {
                "value": float(value),
                "accuracy": correct.float().mean().item(),
                "macs_mean": macs.mean().item(),
                "macs_min": macs.min().item(),
                "macs_max": macs.max().item(),
            }
        )
        if progress is not None:
            progress((i + 1) / len(values))
    return pd.DataFrame(rows, columns=["value", "accuracy", "macs_mean", "macs_min", "macs_max"])
