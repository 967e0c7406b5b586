"""CondConv figures (Yang et al. 2019): routing weights per image, mean routing per class with a class-specificity
number per layer (class-agnostic early, class-specific late?), top classes per expert of the last layer."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.dataset_table import routing_by_class, routing_layers
from analysis.figure_registry import FigureContext, main_model, register_figure
from analysis.routing_stats import class_specificity, routing_by_image, top_classes_per_expert


def main_condconv(context: FigureContext) -> str:
    return main_model(context, "condconv")


@register_figure("condconv_routing_per_image", "condconv",
                 "Routing weight of every expert (columns) for every test image (rows, grouped by class), one panel per "
                 "CondConv layer; sigmoid weights, 0 (white) to 1 (dark).")
def routing_per_image_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    layers = routing_layers(table)
    counts = table["class"].value_counts(sort=False).reindex(table["class"].cat.categories, fill_value=0)
    bounds = np.cumsum(counts.to_numpy())
    centres = bounds - counts.to_numpy() / 2
    figure, axes = plt.subplots(1, len(layers), figsize=(1.2 + 1.3 * len(layers), 4.5), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, layer in zip(axes[0], layers):
        weights = routing_by_image(table, layer)
        image = ax.imshow(weights.to_numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        for bound in bounds[:-1]:
            ax.axhline(bound - 0.5, color="black", linewidth=0.4)
        ax.set_xticks(range(len(weights.columns)), [c.removeprefix("expert") for c in weights.columns], fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
        ax.set_title(layer, fontsize=8)
    axes[0][0].set_yticks(centres - 0.5, counts.index.astype(str), fontsize=6)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.6, label="routing weight")
    figure.suptitle(f"{name}: routing weights per image", fontsize=9)
    return figure


@register_figure("condconv_routing_by_class", "condconv",
                 "Mean routing weight of each expert per class, one heatmap per CondConv layer. Each title gives the layer's "
                 "class specificity: the std over classes of an expert's mean weight, averaged over experts (0 = every "
                 "class routes alike); the paper finds early layers class-agnostic and late ones class-specific.")
def routing_by_class_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    specificity = class_specificity(table)
    layers = list(specificity.index)
    figure, axes = plt.subplots(1, len(layers), figsize=(1.4 + 1.5 * len(layers), 3.4), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, layer in zip(axes[0], layers):
        by_class = routing_by_class(table, layer)
        image = ax.imshow(by_class.to_numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1)
        ax.set_xticks(range(len(by_class.columns)), [c.removeprefix("expert") for c in by_class.columns], fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
        ax.set_title(f"{layer}\nspecificity {specificity[layer]:.3f}", fontsize=8)
    axes[0][0].set_yticks(range(len(by_class.index)), by_class.index.astype(str), fontsize=6)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.7, label="mean routing weight")
    figure.suptitle(f"{name}: mean routing weight per class", fontsize=9)
    return figure


@register_figure("condconv_top_classes_per_expert", "condconv",
                 "For each expert of the last CondConv layer, the three classes whose images give it the highest mean "
                 "routing weight.")
def top_classes_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    layer = routing_layers(table)[-1]
    top = top_classes_per_expert(table, layer, k=3)
    experts = list(dict.fromkeys(top["expert"]))
    columns = min(4, len(experts))
    rows = -(-len(experts) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 1.3 * rows + 0.5), squeeze=False,
                             sharex=True, layout="constrained")
    for ax in axes.flat[len(experts):]:
        ax.axis("off")
    for ax, expert in zip(axes.flat, experts):
        ranked = top[top["expert"] == expert]
        ax.barh(ranked["class"], ranked["weight"], color="tab:green")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=6)
        ax.set_title(expert, fontsize=8)
    figure.supxlabel("mean routing weight", fontsize=7)
    figure.suptitle(f"{name}: top classes per expert in {layer}", fontsize=9)
    return figure
