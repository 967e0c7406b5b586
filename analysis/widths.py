"""DS-Net width statistics: the static subnets' accuracy/cost curve and the widths chosen per class.

The static curve is what the dynamic net is judged against (DS-Net's claim: the gate buys a better
accuracy/MACs trade-off than any fixed width), so the figures and the app compute it the same way here.
"""
from __future__ import annotations

import functools

import pandas as pd
import torch
from torch.utils.data import TensorDataset

from analysis.dataset_table import layer_columns
from models.evaluate import accuracy_and_macs


def static_width_table(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = 250) -> pd.DataFrame:
    """One row per width choice (all dynamic stages at that width): ``width``, ``accuracy`` on the uint8
    ``images``, ``macs`` per image (counted by the same trace as the dynamic net's, through the loop
    ``models.evaluate`` runs for the README's variant rows); ordered by width."""
    device = next(model.parameters()).device
    data = TensorDataset(images, labels)
    rows = []
    for width in model.widths_choices:
        correct, macs = accuracy_and_macs(functools.partial(model.forward_at_width, width=width), data, model.meta["mean"],
                                          model.meta["std"], device, batch_size=batch_size, progress=False)
        rows.append({"width": float(width), "accuracy": correct.float().mean().item(), "macs": macs.double().mean().item()})
    return pd.DataFrame(rows)


def dynamic_point(table: pd.DataFrame) -> dict[str, float]:
    """Accuracy and mean executed MACs of the dynamic net over a dataset table (the point set against the curve)."""
    return {"accuracy": float(table["correct"].mean()), "macs": float(table["macs"].mean())}


def stage_widths(table: pd.DataFrame) -> pd.DataFrame:
    """The chosen width of each dynamic stage per image (columns: stage names, in network order)."""
    return table[layer_columns(table, "width")].rename(columns=lambda c: c.split("/")[0])


def mean_width_by_class(table: pd.DataFrame) -> pd.DataFrame:
    """Mean chosen width per class (rows, every class) and dynamic stage (columns)."""
    return stage_widths(table).groupby(table["class"], observed=False).mean()
