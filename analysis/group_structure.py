"""DGConv group structure across models: masks, groups per layer, accuracy vs cost over the budgets.

Read from ``model_structure`` entries of kind "groups" (what the routing trace reports), so the same code
serves a trainable ``DGConv2d`` model and one exported to grouped convs by ``load_checkpoint``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from analysis.routing import model_structure
from models.checkpoint import training_args


def mask_from_groups(group_of_channel: Sequence[int]) -> np.ndarray:
    """The binary C x C mask U: ``U[i, j] = 1`` iff channels i and j share a group (U's connected components)."""
    groups = np.asarray(group_of_channel)
    return (groups[:, None] == groups[None, :]).astype(np.uint8)


def group_entries(model: torch.nn.Module) -> list[dict]:
    """The model's learned group structure, one entry per DGConv layer in network order."""
    return [entry for entry in model_structure(model) if entry["kind"] == "groups"]


def budget_of(model: torch.nn.Module) -> float | None:
    """The complexity budget the model was trained for (``--budget``), if its recipe says."""
    return training_args(model.meta).get("budget")


def groups_table(models: dict[str, torch.nn.Module]) -> pd.DataFrame:
    """One row per (model, DGConv layer): budget, layer, position, groups, channels, group size, nnz(U)."""
    rows = [{"model": name, "budget": budget_of(model), "layer": entry["layer"], "position": position,
             "groups": entry["groups"], "channels": len(entry["group_of_channel"]),
             "group_size": len(entry["group_of_channel"]) // entry["groups"], "nnz": entry.get("nnz")}
            for name, model in models.items() for position, entry in enumerate(group_entries(model))]
    return pd.DataFrame(rows, columns=["model", "budget", "layer", "position", "groups", "channels", "group_size", "nnz"])


def budget_table(models: dict[str, torch.nn.Module]) -> pd.DataFrame:
    """Per model with measured metrics (meta, full test set): budget, training epochs, accuracy, mean and dense MACs;
    by MACs."""
    rows = []
    for name, model in models.items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics and "macs_mean" in metrics:
            rows.append({"model": name, "budget": budget_of(model), "epochs": training_args(model.meta).get("epochs"),
                         "accuracy": float(metrics["test_acc"]), "macs": float(metrics["macs_mean"]),
                         "macs_full": metrics.get("macs_full")})
    columns = ["model", "budget", "epochs", "accuracy", "macs", "macs_full"]
    return pd.DataFrame(rows, columns=columns).sort_values("macs", ignore_index=True)


def matching_baselines(baselines: dict[str, torch.nn.Module], like: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The plain models of the same depth and data set as ``like`` (the dense point of its trade-off curve)."""
    depth, dataset = getattr(like, "depth", None), like.meta.get("dataset")
    return {name: model for name, model in baselines.items()
            if depth is not None and getattr(model, "depth", None) == depth and model.meta.get("dataset") == dataset}
