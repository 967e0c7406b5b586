"""DS-Net figures (Li et al. 2021): accuracy vs MACs of the static subnets and the dynamic net, distribution of
chosen widths, easy (narrow) vs hard (wide) images, mean width per class."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.dataset_table import width_distribution
from analysis.figure_registry import FigureContext, main_model, register_figure
from analysis.figures_skipnet import easy_hard_gallery
from analysis.widths import dynamic_point, mean_width_by_class, stage_widths, static_width_table


def main_dsnet(context: FigureContext) -> str:
    return main_model(context, "dsnet")


def grouped_bars(ax: plt.Axes, data: pd.DataFrame, horizontal: bool = False) -> None:
    """One group of bars per row of ``data`` (labelled by the index), one bar per column (a dynamic stage)."""
    positions = np.arange(len(data))
    bar = 0.8 / max(1, len(data.columns))
    draw = ax.barh if horizontal else ax.bar
    for offset, column in enumerate(data.columns):
        draw(positions + (offset - (len(data.columns) - 1) / 2) * bar, data[column].to_numpy(), bar, label=column)
    (ax.set_yticks if horizontal else ax.set_xticks)(positions, data.index.astype(str))
    if horizontal:
        ax.invert_yaxis()


@register_figure("dsnet_accuracy_vs_macs", "dsnet",
                 "Accuracy vs MACs per image of every static width subnet (all dynamic stages at one width, line) and of "
                 "the dynamic net whose gates pick the widths per image (star), on the figure's test images.")
def accuracy_vs_macs_figure(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(4.8, 3.2))
    for color, (name, model) in zip(plt.cm.tab10.colors, context.models("dsnet").items()):
        static = static_width_table(model, *context.images())
        ax.plot(static["macs"] / 1e6, static["accuracy"] * 100, "o-", color=color, alpha=0.7, label=f"{name} static")
        for _, row in static.iterrows():
            ax.annotate(f"{row['width']:g}x", (row["macs"] / 1e6, row["accuracy"] * 100), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
        dynamic = dynamic_point(context.table(name))
        ax.scatter(dynamic["macs"] / 1e6, dynamic["accuracy"] * 100, marker="*", s=120, color=color, edgecolor="black",
                   zorder=3, label=f"{name} dynamic")
    ax.legend(fontsize=6, frameon=False)
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("DS-Net: static subnets vs dynamic widths")
    return figure


@register_figure("dsnet_width_distribution", "dsnet", "Share of test images at each width, per dynamic stage.")
def width_distribution_figure(context: FigureContext) -> plt.Figure:
    name = main_dsnet(context)
    model = context.model(name)
    shares = width_distribution(context.table(name)).reindex(columns=list(model.widths_choices), fill_value=0.0).T
    shares.index = [f"{w:g}x" for w in shares.index]
    figure, ax = plt.subplots(figsize=(4.5, 2.8))
    grouped_bars(ax, shares)
    ax.set_ylim(0, 1)
    ax.set_xlabel("width")
    ax.set_ylabel("share of images")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{name}: chosen widths per stage")
    return figure


@register_figure("dsnet_easy_vs_hard", "dsnet",
                 "Easy images (fewest MACs: narrowest widths, top) and hard images (most MACs: widest, bottom), with the "
                 "width chosen per dynamic stage, and their mean brightness and contrast.")
def easy_hard_figure(context: FigureContext) -> plt.Figure:
    name = main_dsnet(context)
    widths = stage_widths(context.table(name))

    def describe(item: pd.Series) -> str:
        return f"{item['class']}\n{'/'.join(f'{w:g}' for w in widths.loc[item.name])} ({item['macs'] / 1e6:.1f}M)"

    return easy_hard_gallery(context, name, describe)


@register_figure("dsnet_width_per_class", "dsnet", "Mean width chosen per class, per dynamic stage.")
def width_per_class_figure(context: FigureContext) -> plt.Figure:
    name = main_dsnet(context)
    per_class = mean_width_by_class(context.table(name))
    figure, ax = plt.subplots(figsize=(5, 3.2))
    grouped_bars(ax, per_class, horizontal=True)
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean width")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{name}: mean width per class")
    return figure
