"""The accuracy-vs-MACs curve a model's knob traces (``analysis.sweep.knob_sweep``), against what the same
compute buys without routing: the model's static variants (``evaluation_variants()``: DS-Net's fixed widths,
early exit's truncated nets), the dense ResNet of the same family and the other trained models of the method.
Shared by the Compare page (plotly) and ``python -m analysis.figures`` (matplotlib)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.testsets import ModelImages
from routescope.analysis.core.units import macs_axis
from routescope.models.evaluation import accuracy_and_macs
from routescope.models.protocol import RouteScopeModel

POINTS = ["label", "kind", "accuracy", "macs_mean"]


def knob_values(
    model: torch.nn.Module, knob: str, count: int = 11, low: float | None = None, high: float | None = None
) -> list[float]:
    """``count`` evenly spaced values of ``knob`` over its declared range (or ``[low, high]``), rounded to 4 digits."""
    spec = model.knobs()[knob]
    low, high = spec["low"] if low is None else low, spec["high"] if high is None else high
    return [round(float(v), 4) for v in np.linspace(low, high, count)]


def static_points(
    model: RouteScopeModel, images: ModelImages, progress: Callable[[float], None] | None = None
) -> pd.DataFrame:
    """Accuracy (over the labelled images) and mean MACs of each of the model's ``evaluation_variants()`` on the
    same images (none: empty)."""
    variants = model.evaluation_variants()
    device = next(model.parameters()).device
    labelled = images.model_labels() >= 0
    rows = []
    for i, (label, forward) in enumerate(variants.items()):
        mean, std = model.meta["mean"], model.meta["std"]
        correct, macs = accuracy_and_macs(forward, images, mean, std, device, progress=False)
        accuracy = correct[labelled].float().mean().item() if labelled.any() else math.nan
        rows.append({"label": label, "kind": "static variant", "accuracy": accuracy, "macs_mean": macs.mean().item()})
        if progress is not None:
            progress((i + 1) / len(variants))
    return pd.DataFrame(rows, columns=POINTS)


def table_point(label: str, kind: str, table: pd.DataFrame) -> dict:
    """A model's point from its per-image table."""
    return {
        "label": label,
        "kind": kind,
        "accuracy": float(table["correct"].mean()),
        "macs_mean": float(table["macs"].mean()),
    }


def tradeoff_figure(curve: pd.DataFrame, knob: str, trained: dict, others: pd.DataFrame, title: str) -> go.Figure:
    """The knob curve (hover: the value), the trained operating point (a star) and the other points by kind."""
    figure = go.Figure(
        go.Scatter(
            x=curve["macs_mean"] / 1e6,
            y=curve["accuracy"] * 100,
            mode="lines+markers",
            name=f"{knob} sweep",
            text=[f"{knob}={v:g}" for v in curve["value"]],
            hovertemplate="%{text}<br>%{x:.2f} M MACs, %{y:.2f}%<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[trained["macs_mean"] / 1e6],
            y=[trained["accuracy"] * 100],
            mode="markers",
            marker=dict(symbol="star", size=16, color="#e45756"),
            name=trained["label"],
            hovertemplate="%{x:.2f} M MACs, %{y:.2f}%<extra>trained</extra>",
        )
    )
    for kind, group in others.groupby("kind", sort=False):
        figure.add_trace(
            go.Scatter(
                x=group["macs_mean"] / 1e6,
                y=group["accuracy"] * 100,
                mode="markers",
                name=kind,
                text=group["label"],
                marker=dict(size=9, symbol="square" if kind == "dense" else "circle"),
                hovertemplate="%{text}<br>%{x:.2f} M MACs, %{y:.2f}%<extra></extra>",
            )
        )
    low, high, hidden = accuracy_range([curve["accuracy"], [trained["accuracy"]], others["accuracy"]])
    if hidden:
        figure.add_annotation(
            text=f"{hidden} point{'s' if hidden > 1 else ''} below {low:.1f}% off the chart (double-click to see all)",
            xref="paper",
            yref="paper",
            x=0,
            y=0,
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            font=dict(size=11, color="#666"),
        )
    return figure.update_layout(
        title=title,
        xaxis=macs_axis("mean MACs per image"),
        yaxis=dict(title="accuracy", ticksuffix="%", range=[low, high]),
        height=420,
        **COMPACT,
    )


ZOOM_POINTS = 10.0  # the accuracy axis spans at most this many points below the best point (outliers: a note)


def accuracy_range(columns, span: float = ZOOM_POINTS) -> tuple[float, float, int]:
    """The accuracy axis (in %) zoomed to the data: from the lowest point, or ``span`` points under the best where a
    point is far lower (a sweep value that breaks the model), to the best; and how many points fall below it."""
    values = np.array([v for column in columns for v in column if v is not None and not math.isnan(v)], dtype=float)
    if values.size == 0:
        return 0.0, 100.0, 0
    values = values * 100
    top, bottom = float(values.max()), float(values.min())
    floor = max(bottom, top - span)
    pad = max((top - floor) * 0.08, 0.2)
    low = floor - pad
    return low, top + pad, int((values < low).sum())


def tradeoff_axes(ax, curve: pd.DataFrame, knob: str, trained: dict, others: pd.DataFrame) -> None:
    """The same figure with matplotlib (``python -m analysis.figures``)."""
    from routescope.analysis.core.figures import place_labels, short_name

    ax.plot(curve["macs_mean"] / 1e6, curve["accuracy"] * 100, "o-", color="tab:blue", label=f"{knob} sweep")
    labels = [
        (m / 1e6, a * 100, f"{v:g}", "tab:blue")
        for v, m, a in zip(curve["value"], curve["macs_mean"], curve["accuracy"])
    ]
    ax.scatter(
        [trained["macs_mean"] / 1e6],
        [trained["accuracy"] * 100],
        marker="*",
        s=160,
        color="tab:red",
        zorder=5,
        label=trained["label"],
    )
    for (kind, group), marker in zip(others.groupby("kind", sort=False), "s^Dv"):
        ax.scatter(group["macs_mean"] / 1e6, group["accuracy"] * 100, marker=marker, s=24, label=kind, alpha=0.8)
        labels += [
            (m / 1e6, a * 100, short_name(n), "dimgray")
            for n, m, a in zip(group["label"], group["macs_mean"], group["accuracy"])
        ]
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(
        fontsize=6, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3
    )  # below: off the points
    low, high, hidden = accuracy_range([curve["accuracy"], [trained["accuracy"]], others["accuracy"]])
    ax.set_ylim(low, high)
    if hidden:
        ax.text(0.01, 0.01, f"{hidden} below {low:.1f}% not shown", transform=ax.transAxes, fontsize=5, color="gray")
    ax.margins(x=0.1)
    ax.figure.tight_layout()
    place_labels(ax, [p for p in labels if low <= p[1] <= high], fontsize=5)


def knob_tradeoff(context, method: str, count: int = 5):
    """The figure of ``method``'s main model: its first knob swept over ``count`` values on the context's images,
    with the static variants, the matching dense baselines and the other models of the method (their tables)."""
    import matplotlib.pyplot as plt

    from routescope.analysis.core.figures import main_model, matching_baselines
    from routescope.analysis.core.sweeps import knob_sweep

    name = main_model(context, method)
    model = context.model(name)
    knob = next(iter(model.knobs()))
    images = context.test_images(name)
    curve = knob_sweep(model, knob, knob_values(model, knob, count), images)
    rows = context.stored(name, "static-points", lambda: static_points(model, images)).to_dict("records")
    rows += [table_point(n, "dense", context.table(n)) for n in matching_baselines(context.models("baseline"), model)]
    rows += [table_point(n, f"other {method} models", context.table(n)) for n in context.models(method) if n != name]
    others = pd.DataFrame(rows, columns=POINTS)
    figure, ax = plt.subplots(figsize=(6, 3.8))
    tradeoff_axes(
        ax,
        curve,
        knob,
        table_point(f"{name} (trained {knob}={model.knobs()[knob]['default']:g})", "trained", context.table(name)),
        others,
    )
    ax.set_title(f"{name}: {knob} sweep vs static alternatives ({len(images)} images)")
    return figure
