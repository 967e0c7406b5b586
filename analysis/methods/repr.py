"""RePr in analysis: what a RePr checkpoint says about its own training, its Structure view, and the paper's
figures (Prakash et al., CVPR 2019).

As plain data: the accuracy curves with the phase of every epoch, the spans trained as a sub-network, the
filters each cycle dropped, the ranking that chose them, and the inter-filter overlap matrices of a model's
convs; the figures only draw these, so tests can check the numbers without reading pixels. Everything here
reads ``model.meta["history"]`` as ``models.train.Trainer`` writes it (one row per epoch, RePr rows carrying
``repr_phase``, ``repr_event``, ``repr_test_acc_before`` and, on each re-init, ``repr_cycle_record``; see
``models.repr``).

Figures: accuracy over epochs with the pruned phases shaded (the paper's Figure 1), inter-filter overlap
before and after, the filters dropped in each cycle, and the ranking criteria compared. "Before" is the
standard-trained counterpart in the context (method ``baseline``, the plain architecture RePr builds on,
same builder config and data set); every figure still draws with one RePr checkpoint alone.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch.nn as nn
from matplotlib.ticker import MaxNLocator

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.figures import FigureContext, register_figure
from routescope.analysis.core.kinds import KindView, Section, register_view
from routescope.analysis.core.runs import (
    group_members,
    register_run_variant,
    run_row,
    runs_frame,
    seed_of,
    summarize_runs,
)
from routescope.models.checkpoint import training_args
from routescope.models.layers.filter_overlap import overlap_matrix
from routescope.models.recipes.repr import RePrOptions
from routescope.models.repr import FILTERS, filter_layers, prunable_layers, repr_record


def filter_overlap(entry: dict) -> go.Figure:
    """Overlap score of each filter (RePr's ranking); dropped filters highlighted."""
    dropped = set(entry.get("dropped", []))
    scores = entry["overlap"]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(scores))),
            y=scores,
            marker_color=["#e45756" if i in dropped else "#4c78a8" for i in range(len(scores))],
        )
    )
    return figure.update_layout(
        title=f"{entry['layer']}: filter overlap (red = dropped in the last cycle)",
        xaxis_title="filter",
        yaxis_title="overlap",
        height=240,
        **COMPACT,
    )


def filter_details(entry: dict, meta: dict) -> list[Section]:
    """One conv layer's overlap chart and ranking, and the filters every cycle dropped (from the training history)."""
    ranking = pd.DataFrame({"filter": range(len(entry["overlap"])), "overlap": entry["overlap"]})
    ranking["dropped in last cycle"] = ranking["filter"].isin(entry.get("dropped", []))
    sections = [Section(entry["layer"], filter_overlap(entry), ranking.sort_values("overlap", ascending=False))]
    cycles = cycle_records(meta.get("history", []))
    if cycles:
        sections.append(
            Section(
                "Filters dropped per cycle",
                table=pd.DataFrame(
                    [
                        {"cycle": c, "layer": name, "dropped": dropped}
                        for c, record in enumerate(cycles, 1)
                        for name, dropped in record["dropped"].items()
                    ]
                ),
            )
        )
    return sections


register_view(
    KindView(
        FILTERS,
        inspect=lambda entries: [filter_overlap(e) for e in entries],
        detail=filter_details,
        title="Filter overlap (RePr ranking)",
        notable=lambda entry: bool(entry.get("dropped")),
    )
)


CURVE_COLUMNS = ("epoch", "train_acc", "test_acc", "phase", "event", "test_acc_before_event")


def accuracy_curves(history: list[dict]) -> pd.DataFrame:
    """One row per trained epoch; ``epoch`` counts epochs completed (1-based), where the row's accuracy was measured.

    ``test_acc_before_event`` is the test accuracy just before the drop or re-init at the end of that
    epoch (its ``test_acc`` is measured after it), so a figure can show the jump an event causes.
    """
    rows = [
        {
            "epoch": row.get("global_epoch", i) + 1,
            "train_acc": row.get("train_acc"),
            "test_acc": row.get("test_acc"),
            "phase": row.get("repr_phase"),
            "event": row.get("repr_event"),
            "test_acc_before_event": row.get("repr_test_acc_before"),
        }
        for i, row in enumerate(history)
    ]
    curves = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    for column in ("train_acc", "test_acc", "test_acc_before_event"):
        curves[column] = pd.to_numeric(curves[column], errors="coerce")
    for column in ("phase", "event"):  # None, not NaN, where an epoch has none
        curves[column] = curves[column].astype(object).where(curves[column].notna(), None)
    return curves


def pruned_spans(history: list[dict]) -> list[tuple[int, int]]:
    """Runs of consecutive epochs trained as a sub-network, as (start, end) on the completed-epochs axis.

    Epoch ``e`` (0-based) trains between ``e`` and ``e + 1`` epochs completed, so pruned epochs 4 and 5
    give the span (4, 6).
    """
    spans: list[list[int]] = []
    for epoch in sorted(repr_record(history)["pruned_epochs"]):
        if spans and spans[-1][1] == epoch:
            spans[-1][1] = epoch + 1
        else:
            spans.append([epoch, epoch + 1])
    return [(start, end) for start, end in spans]


def cycle_records(history: list[dict]) -> list[dict]:
    """The finished prune / re-init cycles, in order (``models.repr.repr_record``)."""
    return repr_record(history)["cycles"]


def dropped_grid(cycles: list[dict]) -> dict[str, np.ndarray]:
    """Per prunable layer, in network order, a (cycles, filters) bool grid: True where that cycle dropped that filter.

    A layer's filter count comes from the record's per-filter ``overlap_before`` scores, which cover every
    prunable layer (also those a cycle took nothing from).
    """
    sizes: dict[str, int] = {}
    for record in cycles:
        for name, scores in (record.get("overlap_before") or {}).items():
            sizes[name] = max(sizes.get(name, 0), len(scores))
        for name, rows in (record.get("dropped") or {}).items():
            sizes[name] = max(sizes.get(name, 0), max(rows, default=-1) + 1)
    grid = {name: np.zeros((len(cycles), size), dtype=bool) for name, size in sizes.items()}
    for c, record in enumerate(cycles):
        for name, rows in (record.get("dropped") or {}).items():
            grid[name][c, rows] = True
    return grid


def repr_ranking(meta: dict) -> str | None:
    """The filter ranking a RePr run used (None for other methods).

    Read from its cycle records (what really ran), else from the training arguments, else the default the
    recipe falls back to. Only RePr runs have one: every checkpoint's args carry ``repr_ranking``, because
    ``models.train`` adds all methods' options to one parser.
    """
    if meta.get("method") != "repr":
        return None
    for record in cycle_records(meta.get("history") or []):
        if record.get("ranking"):
            return record["ranking"]
    return training_args(meta).get("repr_ranking") or RePrOptions.repr_ranking


register_run_variant("repr", repr_ranking)


def dense_arch(arch: str) -> str:
    """The standard-trained architecture a RePr model is built on (``repr_convnet3`` -> ``convnet3``).

    RePr changes the training, not the layers; ``models.repr`` registers each RePr model as ``repr_`` + the
    name of the plain model it subclasses.
    """
    return arch.removeprefix("repr_")


def overlap_layers(model: nn.Module, max_layers: int = 6) -> list[str]:
    """The convs an overlap figure shows: all of them for a small net, else up to ``max_layers`` prunable ones
    evenly spread over the depth (a ResNet-20 has 21 convs)."""
    names = [layer.name for layer in filter_layers(model)]
    if len(names) <= max_layers:
        return names
    prunable = [layer.name for layer in prunable_layers(model)] or names
    picks = np.unique(np.linspace(0, len(prunable) - 1, min(max_layers, len(prunable))).round().astype(int))
    return [prunable[i] for i in picks]


def overlap_matrices(model: nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    """``|W W^T|`` of each named conv's normalized flattened filters (F, F), zero diagonal
    (``models.layers.filter_overlap``)."""
    modules = dict(model.named_modules())
    return {name: overlap_matrix(modules[name].weight).numpy() for name in names}


def mean_overlap(matrix: np.ndarray) -> float:
    """Mean over the off-diagonal entries: the layer's mean filter score of
    ``models.layers.filter_overlap.filter_scores``."""
    n = matrix.shape[0]
    return float(matrix.sum() / (n * (n - 1))) if n > 1 else 0.0


REPR_COLOR, STANDARD_COLOR, PRUNED_COLOR = "tab:red", "black", "tab:orange"


def main_repr(context: FigureContext) -> str:
    """The RePr run the single-model figures show: the paper's orthogonality ranking, with recorded cycles,
    lowest seed (the bundled run, not the luckiest one), then by name."""
    models = context.models("repr")

    def key(name: str) -> tuple:
        meta = models[name].meta
        seed = seed_of(meta, context.checkpoints.get(name))
        return (
            repr_ranking(meta) != "orthogonality",
            not cycle_records(meta.get("history") or []),
            math.inf if seed is None else seed,
            name,
        )

    return min(models, key=key)


def standard_counterpart(context: FigureContext, name: str) -> str | None:
    """The standard-trained model a RePr run compares with, found by architecture, not by file name: method
    ``baseline``, arch = the RePr arch's plain architecture, same builder config and data set; the same seed
    if there is one."""
    model = context.model(name)
    seed = seed_of(model.meta, context.checkpoints.get(name))
    candidates = {
        n: m
        for n, m in context.models("baseline").items()
        if getattr(m, "arch", None) == dense_arch(model.arch)
        and dict(m.arch_config) == dict(model.arch_config)
        and m.meta.get("dataset") == model.meta.get("dataset")
    }

    def key(n: str) -> tuple:
        s = seed_of(candidates[n].meta, context.checkpoints.get(n))
        return (s != seed, math.inf if s is None else s, n)

    return min(candidates, key=key, default=None)


def _no_data(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="gray")
    ax.set_axis_off()


# --- (a) the paper's Figure 1 ------------------------------------------------------------------------------


@register_figure(
    "repr_training_curves",
    "repr",
    "Train (dashed) and test (solid) accuracy per epoch of a RePr run, with the epochs trained as a pruned "
    "sub-network shaded; crosses are the test accuracy just before each drop / re-initialization (the dot "
    "on the same epoch is measured after it). In black, the standard-trained model of the same "
    "architecture where the checkpoints include one (the paper's Figure 1).",
)
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
        ax.scatter(
            events["epoch"],
            events["test_acc_before_event"] * 100,
            marker="x",
            color=REPR_COLOR,
            s=18,
            label="RePr test before drop / re-init",
        )
    base = standard_counterpart(context, name)
    if base is not None and (base_history := context.model(base).meta.get("history")):
        standard = accuracy_curves(base_history)
        ax.plot(
            standard["epoch"],
            standard["train_acc"] * 100,
            "--",
            color=STANDARD_COLOR,
            alpha=0.7,
            label=f"standard train ({base})",
        )
        ax.plot(
            standard["epoch"], standard["test_acc"] * 100, "-", color=STANDARD_COLOR, alpha=0.7, label="standard test"
        )
    ax.set_xlabel("epochs completed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"RePr vs standard training ({repr_ranking(context.model(name).meta)} ranking)"
        if base
        else f"{name}: RePr training ({repr_ranking(context.model(name).meta)} ranking)"
    )
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


@register_figure(
    "repr_filter_overlap",
    "repr",
    "Inter-filter overlap |W W^T| of the L2-normalized flattened filters of each conv layer (diagonal set "
    "to 0), standard-trained (left, where the checkpoints include it) vs after RePr training (right), with "
    "the layer's mean overlap in each title (one colour scale per layer); lower means more orthogonal, "
    "less redundant filters. Layers RePr does not rank (the first conv, and convs with more filters than "
    "input dimensions) are marked; a deep ResNet shows up to six of its ranked convs.",
)
def filter_overlap_figure(context: FigureContext) -> plt.Figure:
    name = main_repr(context)
    layers, columns = overlap_panels(context, name)
    prunable = {layer.name for layer in prunable_layers(context.model(name))}
    figure, axes = plt.subplots(
        len(layers),
        len(columns),
        figsize=(2.4 * len(columns) + 0.8, 2.3 * len(layers)),
        squeeze=False,
        layout="constrained",
    )
    for row, layer in enumerate(layers):
        top = max(float(matrices[layer].max()) for matrices in columns.values()) or 1.0  # one scale per layer
        for col, (column, matrices) in enumerate(columns.items()):
            ax, matrix = axes[row][col], matrices[layer]
            image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
            note = "" if layer in prunable else " (not ranked)"
            ax.set_title(
                f"{column}\n{layer}{note}: mean {mean_overlap(matrix):.3f}"
                if row == 0
                else f"{layer}{note}: mean {mean_overlap(matrix):.3f}",
                fontsize=7,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        colorbar = figure.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
        colorbar.ax.tick_params(labelsize=6)
    figure.supxlabel("|cosine| between two filters of a layer (same colour scale within a row)", fontsize=7)
    if len(columns) == 1:
        figure.suptitle("no standard-trained counterpart among the checkpoints", fontsize=7, color="gray")
    return figure


# --- (c) filters dropped per cycle -------------------------------------------------------------------------


@register_figure(
    "repr_dropped_filters",
    "repr",
    "Which filters each RePr cycle dropped, per prunable conv layer (rows: cycles, columns: filter index; "
    "dark = dropped, then re-initialized orthogonally). The ranking is global over layers, so layers "
    "lose different numbers of filters.",
)
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
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.5 * n_cols, n_rows * (0.5 + 0.18 * n_cycles)), squeeze=False, layout="constrained"
    )
    for ax, (layer, cells) in zip(axes.ravel(), grid.items()):
        ax.imshow(
            cells,
            cmap="Greys",
            vmin=0,
            vmax=1,
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, cells.shape[1] - 0.5, cells.shape[0] + 0.5, 0.5),
        )
        ax.set_yticks(range(1, n_cycles + 1))
        ax.set_ylabel("cycle", fontsize=7)
        ax.set_title(
            f"{layer}: {', '.join(str(int(n)) for n in cells.sum(1))} of {cells.shape[1]} dropped per cycle", fontsize=7
        )
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(grid) :]:
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


@register_figure(
    "repr_ranking_comparison",
    "repr",
    "Test accuracy (models.evaluate, full test set) of RePr runs by filter ranking (orthogonality: the "
    "paper's, norm: lowest weight norm, random) next to standard training of the same backbone: mean over "
    "seeds with a min-max bar, each run a dot, the number of runs in brackets.",
    test_images=False,
)
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
        ax.annotate(
            f"{group['test_acc_mean'] * 100:.2f}{spread} (n={group['n_runs']})",
            (group["test_acc_max"] * 100, y),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=7,
        )
    several = table["dataset"].nunique() > 1
    ax.set_yticks(
        range(len(table)),
        [group_label(g) + (f" ({g['dataset']})" if several else "") for _, g in table.iterrows()],
        fontsize=7,
    )
    ax.set_ylim(len(table) - 0.5, -0.5)
    low, high = table["test_acc_min"].min() * 100, table["test_acc_max"].max() * 100
    pad = max(0.5, (high - low) * 0.15)
    ax.set_xlim(low - pad, min(high + 4 * pad, 100.5))  # room for the labels, never past 100%
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("RePr ranking criteria vs standard training")
    return figure
