"""DGConv figures (Zhang et al. 2019): the learned mask U per layer, groups per layer for every budget, accuracy vs
MACs over the budgets with the dense ResNet of the same depth."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker

from analysis.figure_registry import FigureContext, main_model, register_figure
from analysis.group_structure import budget_table, group_entries, groups_table, mask_from_groups, matching_baselines


def main_dgconv(context: FigureContext) -> str:
    return main_model(context, "dgconv")


def budget_label(name: str, budget: float | None, with_name: bool = True) -> str:
    """``name (budget 0.5)``, ``budget 0.5`` without the name, or the name alone for a model without a budget."""
    if budget is None or pd.isna(budget):
        return name
    return f"{name} (budget {budget:g})" if with_name else f"budget {budget:g}"


@register_figure("dgconv_masks", "dgconv",
                 "The learned connectivity U of every DGConv layer (dark: output channel i reads input channel j); "
                 "block patterns are groups, interleaved ones come from the order of the Kronecker factors.")
def masks_figure(context: FigureContext) -> plt.Figure:
    name = main_dgconv(context)
    entries = group_entries(context.model(name))
    columns = min(4, max(1, len(entries)))
    rows = max(1, math.ceil(len(entries) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.8 * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, entry in zip(axes.flat, entries):
        ax.imshow(mask_from_groups(entry["group_of_channel"]), cmap="Purples", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{entry['layer']}\n{entry['groups']} group{'s' if entry['groups'] != 1 else ''}", fontsize=6)
    for ax in axes.flat[len(entries):]:
        ax.axis("off")
    figure.suptitle(f"{name}: learned masks U", fontsize=9)
    return figure


@register_figure("dgconv_groups_per_layer", "dgconv",
                 "Number of groups of every DGConv layer (1 = dense, C = depthwise), one line per model / budget.")
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


@register_figure("dgconv_accuracy_vs_macs", "dgconv",
                 "Test accuracy vs mean MACs per image of the DGConv models trained for different complexity budgets, "
                 "one line per number of training epochs, with the plain ResNet of the same depth (square) when one is available; numbers from models.evaluate "
                 "on the full test set.")
def accuracy_vs_macs_figure(context: FigureContext) -> plt.Figure:
    models = context.models("dgconv")
    points = budget_table(models)
    figure, ax = plt.subplots(figsize=(4.5, 3))
    # one line per training length: budgets trained for different numbers of epochs are not one trade-off curve
    for epochs, rows in points.groupby(points["epochs"].fillna(-1), sort=True):
        ax.plot(rows["macs"] / 1e6, rows["accuracy"] * 100, "v-", label=f"{epochs:g} epochs" if epochs >= 0 else "epochs unknown")
    for _, row in points.iterrows():
        ax.annotate(budget_label(row["model"], row["budget"], with_name=False), (row["macs"] / 1e6, row["accuracy"] * 100),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    baselines = {}
    for model in models.values():
        baselines.update(matching_baselines(context.models("baseline"), model))
    for _, row in budget_table(baselines).iterrows():
        ax.scatter(row["macs"] / 1e6, row["accuracy"] * 100, color="black", marker="s")
        ax.annotate(row["model"], (row["macs"] / 1e6, row["accuracy"] * 100), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=6, frameon=False, loc="lower right")
    ax.set_title("DGConv: accuracy vs compute over budgets")
    return figure
