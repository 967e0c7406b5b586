"""DGConv in analysis: group structure across models, its Structure view, and the paper's figures (Zhang et
al. 2019): the learned mask U per layer, groups per layer for every budget, accuracy vs MACs over the
budgets with the dense ResNet of the same depth.

Read from ``model_structure`` entries of kind "groups" (what the routing trace reports), so the same code
serves a trainable ``DGConv2d`` model and one exported to grouped convs by ``load_checkpoint``.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from matplotlib import ticker

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.figures import FigureContext, main_model, matching_baselines, register_figure
from routescope.analysis.core.kinds import KindView, Section, register_view
from routescope.analysis.core.trace import model_structure
from routescope.models.checkpoint import training_args
from routescope.models.dgconv import GROUPS


def group_mask(entry: dict) -> go.Figure:
    """The learned connectivity U of a DGConv layer: U[i, j] = 1 when channels i and j share a group; square cells,
    the axes spanning exactly the layer's channels."""
    mask = entry.get("mask") or mask_from_groups(entry["group_of_channel"]).tolist()
    n = len(mask)
    figure = go.Figure(
        go.Heatmap(
            z=mask,
            colorscale=[[0, "#f4f4f4"], [1, "#54a24b"]],
            zmin=0,
            zmax=1,
            showscale=False,
            xgap=1 if n <= 64 else 0,
            ygap=1 if n <= 64 else 0,
            hovertemplate="input %{x} → output %{y}: %{z}<extra>1 = connected</extra>",
        )
    )
    figure.update_xaxes(range=[-0.5, n - 0.5], constrain="domain", title="input channel", showgrid=False)
    figure.update_yaxes(
        range=[n - 0.5, -0.5], scaleanchor="x", constrain="domain", title="output channel", showgrid=False
    )
    return figure.update_layout(
        title=f"{entry['layer']}: {entry['groups']} groups (green = connected)", height=380, **COMPACT
    )


register_view(
    KindView(
        GROUPS,
        inspect=lambda entries: [group_mask(e) for e in entries],
        summary=lambda entries: pd.DataFrame(
            [
                {
                    "layer": e["layer"],
                    "groups": e["groups"],
                    "channels": len(e["group_of_channel"]),
                    "group size": len(e["group_of_channel"]) // e["groups"],
                }
                for e in entries
            ]
        ),
        detail=lambda entry, meta: [Section(entry["layer"], group_mask(entry))],
        title="Learned group structure (DGConv)",
        notable=lambda entry: entry["groups"] > 1,
    )
)


def mask_from_groups(group_of_channel: Sequence[int]) -> np.ndarray:
    """The binary C x C mask U: ``U[i, j] = 1`` iff channels i and j share a group (U's connected components)."""
    groups = np.asarray(group_of_channel)
    return (groups[:, None] == groups[None, :]).astype(np.uint8)


def group_entries(model: torch.nn.Module) -> list[dict]:
    """The model's learned group structure, one entry per DGConv layer in network order."""
    return [entry for entry in model_structure(model) if entry["kind"] == GROUPS.name]


def budget_of(model: torch.nn.Module) -> float | None:
    """The complexity budget the model was trained for (``--budget``), if its recipe says."""
    return training_args(model.meta).get("budget")


def groups_table(models: dict[str, torch.nn.Module]) -> pd.DataFrame:
    """One row per (model, DGConv layer): budget, layer, position, groups, channels, group size, nnz(U)."""
    rows = [
        {
            "model": name,
            "budget": budget_of(model),
            "layer": entry["layer"],
            "position": position,
            "groups": entry["groups"],
            "channels": len(entry["group_of_channel"]),
            "group_size": len(entry["group_of_channel"]) // entry["groups"],
            "nnz": entry.get("nnz"),
        }
        for name, model in models.items()
        for position, entry in enumerate(group_entries(model))
    ]
    return pd.DataFrame(
        rows, columns=["model", "budget", "layer", "position", "groups", "channels", "group_size", "nnz"]
    )


def budget_table(models: dict[str, torch.nn.Module]) -> pd.DataFrame:
    """Per model with measured metrics (meta, full test set): budget, training epochs, accuracy, mean and dense MACs;
    by MACs."""
    rows = []
    for name, model in models.items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics and "macs_mean" in metrics:
            rows.append(
                {
                    "model": name,
                    "budget": budget_of(model),
                    "epochs": training_args(model.meta).get("epochs"),
                    "accuracy": float(metrics["test_acc"]),
                    "macs": float(metrics["macs_mean"]),
                    "macs_full": metrics.get("macs_full"),
                }
            )
    columns = ["model", "budget", "epochs", "accuracy", "macs", "macs_full"]
    return pd.DataFrame(rows, columns=columns).sort_values("macs", ignore_index=True)


def main_dgconv(context: FigureContext) -> str:
    return main_model(context, "dgconv")


def budget_label(name: str, budget: float | None, with_name: bool = True) -> str:
    """``name (budget 0.5)``, ``budget 0.5`` without the name, or the name alone for a model without a budget."""
    if budget is None or pd.isna(budget):
        return name
    return f"{name} (budget {budget:g})" if with_name else f"budget {budget:g}"


@register_figure(
    "dgconv_masks",
    "dgconv",
    "The learned connectivity U of every DGConv layer (dark: output channel i reads input channel j); "
    "block patterns are groups, interleaved ones come from the order of the Kronecker factors.",
)
def masks_figure(context: FigureContext) -> plt.Figure:
    name = main_dgconv(context)
    entries = group_entries(context.model(name))
    columns = min(4, max(1, len(entries)))
    rows = max(1, math.ceil(len(entries) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.7 * columns, 1.8 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, entry in zip(axes.flat, entries):
        ax.imshow(mask_from_groups(entry["group_of_channel"]), cmap="Purples", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{entry['layer']}\n{entry['groups']} group{'s' if entry['groups'] != 1 else ''}", fontsize=6)
    for ax in axes.flat[len(entries) :]:
        ax.axis("off")
    figure.suptitle(f"{name}: learned masks U", fontsize=9)
    return figure


@register_figure(
    "dgconv_groups_per_layer",
    "dgconv",
    "Number of groups of every DGConv layer (1 = dense, C = depthwise), one line per model / budget.",
)
def groups_per_layer_figure(context: FigureContext) -> plt.Figure:
    table = groups_table(context.models("dgconv"))
    figure, ax = plt.subplots(figsize=(6, 3))
    for name, rows in table.sort_values("budget", kind="stable").groupby("model", sort=False):
        ax.plot(rows["position"], rows["groups"], "o-", label=budget_label(name, rows["budget"].iloc[0]))
    if table.groupby("model")["layer"].apply(tuple).nunique() == 1:  # same architecture: name the layers
        layers = table.drop_duplicates("position")
        ax.set_xticks(layers["position"], layers["layer"], rotation=60, fontsize=6)
    else:
        ax.set_xlabel("DGConv layer (network order)")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
    ax.set_ylabel("groups")
    ax.legend(fontsize=6, frameon=False)
    ax.set_title("DGConv: groups per layer")
    return figure


@register_figure(
    "dgconv_accuracy_vs_macs",
    "dgconv",
    "Test accuracy vs mean MACs per image of the DGConv models trained for different complexity budgets, "
    "one line per number of training epochs, with the plain ResNet of the same depth (square) when one is available; "
    "numbers from models.evaluate "
    "on the full test set.",
    test_images=False,
)
def accuracy_vs_macs_figure(context: FigureContext) -> plt.Figure:
    models = context.models("dgconv")
    points = budget_table(models)
    figure, ax = plt.subplots(figsize=(4.5, 3))
    # one line per training length: budgets trained for different numbers of epochs are not one trade-off curve
    for epochs, rows in points.groupby(points["epochs"].fillna(-1), sort=True):
        ax.plot(
            rows["macs"] / 1e6,
            rows["accuracy"] * 100,
            "v-",
            label=f"{epochs:g} epochs" if epochs >= 0 else "epochs unknown",
        )
    for _, row in points.iterrows():
        ax.annotate(
            budget_label(row["model"], row["budget"], with_name=False),
            (row["macs"] / 1e6, row["accuracy"] * 100),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    baselines = {}
    for model in models.values():
        baselines.update(matching_baselines(context.models("baseline"), model))
    for _, row in budget_table(baselines).iterrows():
        ax.scatter(row["macs"] / 1e6, row["accuracy"] * 100, color="black", marker="s")
        ax.annotate(
            row["model"],
            (row["macs"] / 1e6, row["accuracy"] * 100),
            fontsize=6,
            xytext=(3, -8),
            textcoords="offset points",
        )
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=6, frameon=False, loc="lower right")
    ax.set_title("DGConv: accuracy vs compute over budgets")
    return figure
