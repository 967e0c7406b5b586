"""RePr figures (Prakash et al., CVPR 2019): accuracy over epochs with the pruned phases shaded (the paper's
Figure 1), inter-filter overlap before and after, the filters dropped in each cycle, and the ranking
criteria compared. The numbers come from ``analysis.repr_records`` and ``analysis.experiments``; here
they are only drawn.

"Before" is the standard-trained counterpart in the context (method ``baseline``, the plain architecture
RePr builds on, same builder config and data set); every figure still draws with one RePr checkpoint alone.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.experiments import group_members, run_row, runs_frame, seed_of, summarize_runs
from analysis.figure_registry import FigureContext, register_figure
from analysis.repr_records import (accuracy_curves, cycle_records, dense_arch, dropped_grid, mean_overlap, overlap_layers,
                                   overlap_matrices, pruned_spans, repr_ranking)
from models.repr import prunable_layers

REPR_COLOR, STANDARD_COLOR, PRUNED_COLOR = "tab:red", "black", "tab:orange"


def main_repr(context: FigureContext) -> str:
    """The RePr run the single-model figures show: the paper's orthogonality ranking, with recorded cycles,
    lowest seed (the bundled run, not the luckiest one), then by name."""
    models = context.models("repr")

    def key(name: str) -> tuple:
        meta = models[name].meta
        seed = seed_of(meta, context.checkpoints.get(name))
        return (repr_ranking(meta) != "orthogonality", not cycle_records(meta.get("history") or []),
                math.inf if seed is None else seed, name)

    return min(models, key=key)


def standard_counterpart(context: FigureContext, name: str) -> str | None:
    """The standard-trained model a RePr run compares with, found by architecture, not by file name: method
    ``baseline``, arch = the RePr arch's plain architecture, same builder config and data set; the same seed
    if there is one."""
    model = context.model(name)
    seed = seed_of(model.meta, context.checkpoints.get(name))
    candidates = {n: m for n, m in context.models("baseline").items()
                  if getattr(m, "arch", None) == dense_arch(model.arch) and dict(m.arch_config) == dict(model.arch_config)
                  and m.meta.get("dataset") == model.meta.get("dataset")}

    def key(n: str) -> tuple:
        s = seed_of(candidates[n].meta, context.checkpoints.get(n))
        return (s != seed, math.inf if s is None else s, n)

    return min(candidates, key=key, default=None)


def _no_data(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="gray")
    ax.set_axis_off()


# --- (a) the paper's Figure 1 ------------------------------------------------------------------------------

@register_figure("repr_training_curves", "repr",
                 "Train (dashed) and test (solid) accuracy per epoch of a RePr run, with the epochs trained as a pruned "
                 "sub-network shaded; crosses are the test accuracy just before each drop / re-initialization (the dot "
                 "on the same epoch is measured after it). In black, the standard-trained model of the same "
                 "architecture where the checkpoints include one (the paper's Figure 1).")
def training_curves_figure(context: FigureContext) -> plt.Figure:
    name = main_repr(context)
    history = context.model(name).meta.get("history") or []
    figure, ax = plt.subplots(figsize=(7, 3.3))
    if not history:
        _no_data(ax, f"{name}: no training history in the checkpoint")
        return figure
    for i, (start, end) in enumerate(pruned_spans(history)):
        ax.axvspan(start, end, color=PRUNED_COLOR, alpha=0.15, lw=0, label="pruned (sub-network)" if i == 0 else None)
    curves = accuracy_curves(history)
    ax.plot(curves["epoch"], curves["train_acc"] * 100, "--", color=REPR_COLOR, label=f"RePr train ({name})")
    ax.plot(curves["epoch"], curves["test_acc"] * 100, "-", marker=".", color=REPR_COLOR, label="RePr test")
    events = curves.dropna(subset=["test_acc_before_event"])
    if len(events):
        ax.scatter(events["epoch"], events["test_acc_before_event"] * 100, marker="x", color=REPR_COLOR, s=18,
                   label="RePr test before drop / re-init")
    base = standard_counterpart(context, name)
    if base is not None and (base_history := context.model(base).meta.get("history")):
        standard = accuracy_curves(base_history)
        ax.plot(standard["epoch"], standard["train_acc"] * 100, "--", color=STANDARD_COLOR, alpha=0.7, label=f"standard train ({base})")
        ax.plot(standard["epoch"], standard["test_acc"] * 100, "-", color=STANDARD_COLOR, alpha=0.7, label="standard test")
    ax.set_xlabel("epochs completed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"RePr vs standard training ({repr_ranking(context.model(name).meta)} ranking)" if base
                 else f"{name}: RePr training ({repr_ranking(context.model(name).meta)} ranking)")
    ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: the dips need the room
    return figure


# --- (b) overlap matrices before / after -------------------------------------------------------------------

def overlap_panels(context: FigureContext, name: str) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """The layers shown, and per column ("standard", "RePr") their overlap matrices; no "standard" column
    without a counterpart."""
    model = context.model(name)
    layers = overlap_layers(model)
    columns = {}
    base = standard_counterpart(context, name)
    if base is not None:
        columns[f"standard ({base})"] = overlap_matrices(context.model(base), layers)
    columns[f"RePr ({name})"] = overlap_matrices(model, layers)
    return layers, columns


@register_figure("repr_filter_overlap", "repr",
                 "Inter-filter overlap |W W^T| of the L2-normalized flattened filters of each conv layer (diagonal set "
                 "to 0), standard-trained (left, where the checkpoints include it) vs after RePr training (right), with "
                 "the layer's mean overlap in each title (one colour scale per layer); lower means more orthogonal, "
                 "less redundant filters. Layers RePr does not rank (the first conv, and convs with more filters than "
                 "input dimensions) are marked; a deep ResNet shows up to six of its ranked convs.")
def filter_overlap_figure(context: FigureContext) -> plt.Figure:
    name = main_repr(context)
    layers, columns = overlap_panels(context, name)
    prunable = {layer.name for layer in prunable_layers(context.model(name))}
    figure, axes = plt.subplots(len(layers), len(columns), figsize=(2.4 * len(columns) + 0.8, 2.3 * len(layers)),
                                squeeze=False, layout="constrained")
    for row, layer in enumerate(layers):
        top = max(float(matrices[layer].max()) for matrices in columns.values()) or 1.0  # one scale per layer
        for col, (column, matrices) in enumerate(columns.items()):
            ax, matrix = axes[row][col], matrices[layer]
            image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
            note = "" if layer in prunable else " (not ranked)"
            ax.set_title(f"{column}\n{layer}{note}: mean {mean_overlap(matrix):.3f}" if row == 0
                         else f"{layer}{note}: mean {mean_overlap(matrix):.3f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        colorbar = figure.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
        colorbar.ax.tick_params(labelsize=6)
    figure.supxlabel("|cosine| between two filters of a layer (same colour scale within a row)", fontsize=7)
    if len(columns) == 1:
        figure.suptitle("no standard-trained counterpart among the checkpoints", fontsize=7, color="gray")
    return figure


# --- (c) filters dropped per cycle -------------------------------------------------------------------------

@register_figure("repr_dropped_filters", "repr",
                 "Which filters each RePr cycle dropped, per prunable conv layer (rows: cycles, columns: filter index; "
                 "dark = dropped, then re-initialized orthogonally). The ranking is global over layers, so layers "
                 "lose different numbers of filters.")
def dropped_filters_figure(context: FigureContext) -> plt.Figure:
    name = main_repr(context)
    grid = dropped_grid(cycle_records(context.model(name).meta.get("history") or []))
    if not grid:
        figure, ax = plt.subplots(figsize=(5, 1.5))
        _no_data(ax, f"{name}: no finished RePr cycle recorded")
        return figure
    n_cols = 1 if len(grid) <= 8 else 3
    n_rows = math.ceil(len(grid) / n_cols)
    n_cycles = next(iter(grid.values())).shape[0]
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(5.5 * n_cols, n_rows * (0.5 + 0.18 * n_cycles)),
                                squeeze=False, layout="constrained")
    for ax, (layer, cells) in zip(axes.ravel(), grid.items()):
        ax.imshow(cells, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                  extent=(-0.5, cells.shape[1] - 0.5, cells.shape[0] + 0.5, 0.5))
        ax.set_yticks(range(1, n_cycles + 1))
        ax.set_ylabel("cycle", fontsize=7)
        ax.set_title(f"{layer}: {', '.join(str(int(n)) for n in cells.sum(1))} of {cells.shape[1]} dropped per cycle", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(grid):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("filter", fontsize=7)
    figure.suptitle(f"{name}: filters dropped in each cycle", fontsize=9)
    return figure


# --- (d) ranking criteria ----------------------------------------------------------------------------------

def ranking_comparison(context: FigureContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and their seed summary for every RePr checkpoint and the standard-trained ones of the same backbones."""
    repr_models = context.models("repr")
    backbones = {(dense_arch(m.arch), m.meta.get("dataset")) for m in repr_models.values()}
    standard = {n: m for n, m in context.models("baseline").items() if (m.arch, m.meta.get("dataset")) in backbones}
    rows = [run_row(m.meta, m.arch, context.checkpoints.get(n)) for n, m in {**standard, **repr_models}.items()]
    runs = runs_frame(rows)
    return runs, summarize_runs(runs)


def group_label(group: pd.Series) -> str:
    """'convnet3 standard' or 'convnet3 RePr orthogonality' (the backbone, then how it was trained)."""
    how = "standard" if group["method"] == "baseline" else f"RePr {group['ranking']}"
    return f"{dense_arch(group['arch'])} {how}"


@register_figure("repr_ranking_comparison", "repr",
                 "Test accuracy (models.evaluate, full test set) of RePr runs by filter ranking (orthogonality: the "
                 "paper's, norm: lowest weight norm, random) next to standard training of the same backbone: mean over "
                 "seeds with a min-max bar, each run a dot, the number of runs in brackets.")
def ranking_comparison_figure(context: FigureContext) -> plt.Figure:
    runs, table = ranking_comparison(context)
    figure, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * max(1, len(table))))
    if table.empty:
        _no_data(ax, "no evaluated RePr checkpoint (metrics.test_acc missing)")
        return figure
    for y, group in table.iterrows():
        color = STANDARD_COLOR if group["method"] == "baseline" else REPR_COLOR
        members = group_members(runs, group)
        ax.hlines(y, group["test_acc_min"] * 100, group["test_acc_max"] * 100, color=color, lw=2, alpha=0.5)
        ax.scatter(members["test_acc"] * 100, [y] * len(members), color=color, s=10, alpha=0.6)
        ax.scatter([group["test_acc_mean"] * 100], [y], color=color, marker="D", s=30, zorder=3)
        spread = "" if pd.isna(group["test_acc_std"]) else f" ± {group['test_acc_std'] * 100:.2f}"
        ax.annotate(f"{group['test_acc_mean'] * 100:.2f}{spread} (n={group['n_runs']})", (group["test_acc_max"] * 100, y),
                    xytext=(6, -3), textcoords="offset points", fontsize=7)
    several = table["dataset"].nunique() > 1
    ax.set_yticks(range(len(table)), [group_label(g) + (f" ({g['dataset']})" if several else "") for _, g in table.iterrows()],
                  fontsize=7)
    ax.set_ylim(len(table) - 0.5, -0.5)
    low, high = table["test_acc_min"].min() * 100, table["test_acc_max"].max() * 100
    pad = max(0.5, (high - low) * 0.15)
    ax.set_xlim(low - pad, min(high + 4 * pad, 100.5))  # room for the labels, never past 100%
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("RePr ranking criteria vs standard training")
    return figure
