"""DS-Net in analysis: width statistics, its Inspect and Compare views, and the paper's figures (Li et al.
2021): accuracy vs MACs of the static subnets and the dynamic net, distribution of chosen widths, easy
(narrow) vs hard (wide) images, mean width per class.

The static curve is what the dynamic net is judged against (DS-Net's claim: the gate buys a better
accuracy/MACs trade-off than any fixed width), so the figures and the app compute it the same way here.
"""

from __future__ import annotations

import functools
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from torch.utils.data import TensorDataset

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.figures import FigureContext, easy_hard_gallery, main_model, register_figure
from routescope.analysis.core.tradeoff import knob_tradeoff
from routescope.analysis.core.kinds import (
    AttributionTarget,
    Control,
    KindView,
    PatternPart,
    Section,
    Widget,
    register_view,
)
from routescope.analysis.core.scaling import nearest_layer
from routescope.analysis.core.table import layer_columns
from routescope.analysis.core.units import width as width_text
from routescope.models.dsnet import WIDTH, WIDTH_CHOICES
from routescope.models.evaluation import accuracy_and_macs


def width_bars(decisions: list[dict]) -> go.Figure:
    """Chosen channels vs the stage's maximum, per dynamic stage."""
    layers = [d["layer"] for d in decisions]
    figure = go.Figure(
        [
            go.Bar(x=layers, y=[d["max_channels"] for d in decisions], name="max channels", marker_color="#e8eef6"),
            go.Bar(
                x=layers,
                y=[d["channels"] for d in decisions],
                name="chosen",
                marker_color="#f58518",
                text=[width_text(d["width"]) for d in decisions],
                textposition="inside",
                hovertemplate="%{x}: %{y} channels (%{text} width)<extra></extra>",
            ),
        ]
    )
    return figure.update_layout(
        title="Width chosen per stage", barmode="overlay", height=260, yaxis_title="channels", **COMPACT
    )


def width_choices(model, n: int) -> list[float] | None:
    """The model's width ratios (``widths_choices``), or DS-Net's default ones when ``model`` is not known and they
    are as many as the gate's choices; None when neither fits."""
    choices = getattr(model, "widths_choices", None)
    choices = list(choices) if choices is not None else list(WIDTH_CHOICES) if model is None else None
    return [float(w) for w in choices] if choices is not None and len(choices) == n else None


def width_probabilities(decisions: list[dict], model=None) -> go.Figure:
    """The width gate's probability of each width, per dynamic stage (columns labelled with the widths)."""
    z = [d["probabilities"] for d in decisions]
    n = len(z[0]) if z else 0
    choices = width_choices(model, n)
    columns = [f"{width_text(w)} width" for w in choices] if choices else [f"choice {i}" for i in range(n)]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            y=[d["layer"] for d in decisions],
            x=columns,
            zmin=0,
            zmax=1,
            colorscale="Oranges",
            texttemplate="%{z:.2f}",
            colorbar=dict(title="probability"),
            hovertemplate="%{y} at %{x}: p = %{z:.3f}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")  # network order, top down
    return figure.update_layout(title="Width-gate probabilities", height=120 + 40 * len(z), **COMPACT)


def width_distribution(table: pd.DataFrame) -> pd.DataFrame:
    """Share of images at each width, per dynamic stage (rows: stage, columns: width)."""
    columns = layer_columns(table, "width")
    return (
        pd.DataFrame({c.split("/")[0]: table[c].value_counts(normalize=True) for c in columns})
        .T.fillna(0.0)
        .sort_index(axis=1)
    )


def compare_sections(table: pd.DataFrame) -> list[Section]:
    if not layer_columns(table, "width"):
        return []
    shares = width_distribution(table)
    shares.columns = [width_text(w) for w in shares.columns]
    figure = px.imshow(
        shares,
        text_auto=".0%",
        color_continuous_scale="Oranges",
        zmin=0,
        zmax=1,
        labels={"x": "width (fraction of the stage's channels)", "y": "stage", "color": "share of images"},
    )
    figure.update_layout(coloraxis_colorbar=dict(tickformat=".0%"))
    return [Section("Width distribution per stage", figure)]


def width_pattern(table: pd.DataFrame) -> PatternPart | None:
    """The width of each dynamic stage, as a fraction of its channels, ``/`` between stages: ``0.25/1``."""
    columns = layer_columns(table, "width")
    if not columns:
        return None
    layers = [c.split("/")[0] for c in columns]
    values = table[columns].apply(lambda row: "/".join(f"{w:g}" for w in row), axis=1)
    legend = (
        f"Widths: one number per dynamic stage ({' / '.join(layers)}), the fraction of the stage's channels it ran "
        "with (0.25 = a quarter, 1 = all of them)."
    )
    return PatternPart(values, legend, columns[0])


def width_control(entry: dict, model) -> Control:
    """Pick the stage's width among the model's ``widths_choices``."""
    choices = tuple(float(w) for w in model.widths_choices)
    top = entry["max_channels"]
    return Control(
        entry["layer"],
        WIDTH.forced_field,
        f"width of {entry['layer']}",
        Widget.SELECT,
        float(entry["width"]),
        float,
        options=choices,
        format=lambda w: f"{width_text(w)} ({round(w * top)} of {top} channels)",
    )


def width_like(table: pd.DataFrame, bundled, target) -> Callable:
    """Each dynamic stage of ``target`` runs at a width drawn from the bundled model's widths for the dynamic stage
    nearest in relative depth (the same stage for a deeper CIFAR ResNet; ResNet-50's ``layer2`` and ``layer3``
    follow the bundled ``layer2``, its ``layer4`` the bundled ``layer3``)."""
    shares = {
        layer: table[f"{layer}/width"].value_counts(normalize=True)
        for layer in (c.split("/")[0] for c in layer_columns(table, "width"))
    }
    blocks = lambda model: [name for name, _ in model.named_blocks()]  # noqa: E731
    source = {t: nearest_layer(t, blocks(target), list(shares), blocks(bundled)) for t in target.gate_names}
    return lambda rng: {
        t: {"width": float(rng.choice(shares[s].index.to_numpy(), p=shares[s].to_numpy()))} for t, s in source.items()
    }


register_view(
    KindView(
        WIDTH,
        columns=lambda d: {f"{d['layer']}/width": float(d["width"]), f"{d['layer']}/channels": int(d["channels"])},
        inspect=lambda entries, model=None: [width_bars(entries), width_probabilities(entries, model)],
        pattern=width_pattern,
        compare=compare_sections,
        targets=lambda d: [
            AttributionTarget(f"probability of width choice {i} ({w:.2f})", "probabilities", i)
            for i, w in enumerate(d.get("probabilities") or [])
        ],
        control=width_control,
        force_like=width_like,
    )
)


def static_width_table(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250
) -> pd.DataFrame:
    """One row per width choice (all dynamic stages at that width): ``width``, ``accuracy`` on the uint8
    ``images``, ``macs`` per image (counted by the same trace as the dynamic net's, through the loop
    ``models.evaluate`` runs for the README's variant rows); ordered by width."""
    device = next(model.parameters()).device
    data = TensorDataset(images, labels)
    rows = []
    for width in model.widths_choices:
        correct, macs = accuracy_and_macs(
            functools.partial(model.forward_at_width, width=width),
            data,
            model.meta["mean"],
            model.meta["std"],
            device,
            batch_size=batch_size,
            progress=False,
        )
        rows.append(
            {"width": float(width), "accuracy": correct.float().mean().item(), "macs": macs.double().mean().item()}
        )
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


@register_figure(
    "dsnet_accuracy_vs_macs",
    "dsnet",
    "Accuracy vs MACs per image of every static width subnet (all dynamic stages at one width, line) and of "
    "the dynamic net whose gates pick the widths per image (star), on the figure's test images.",
)
def accuracy_vs_macs_figure(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(4.8, 3.2))
    for color, (name, model) in zip(plt.cm.tab10.colors, context.models("dsnet").items()):
        static = context.stored(name, "static-widths", lambda: static_width_table(model, *context.images()))
        ax.plot(static["macs"] / 1e6, static["accuracy"] * 100, "o-", color=color, alpha=0.7, label=f"{name} static")
        for _, row in static.iterrows():
            ax.annotate(
                f"{row['width']:g}x",
                (row["macs"] / 1e6, row["accuracy"] * 100),
                fontsize=6,
                xytext=(3, -8),
                textcoords="offset points",
            )
        dynamic = dynamic_point(context.table(name))
        ax.scatter(
            dynamic["macs"] / 1e6,
            dynamic["accuracy"] * 100,
            marker="*",
            s=120,
            color=color,
            edgecolor="black",
            zorder=3,
            label=f"{name} dynamic",
        )
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


@register_figure(
    "dsnet_easy_vs_hard",
    "dsnet",
    "Easy images (fewest MACs: narrowest widths, top) and hard images (most MACs: widest, bottom), with the "
    "width chosen per dynamic stage, and their mean brightness and contrast.",
)
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


register_figure(
    "dsnet_knob_tradeoff",
    "dsnet",
    "Accuracy vs mean MACs of the main DS-Net as its inference knob is swept (a few values, the same "
    "images), the trained operating point (star), its static variants, the dense ResNet of the same "
    "depth and the other bundled DS-Net models: what the knob buys against fixed alternatives.",
)(lambda context: knob_tradeoff(context, "dsnet"))
