"""Early exit in analysis: which exit each image took, its Inspect and Compare views, and the figures of the
early-exit papers (BranchyNet; Shallow-Deep Networks, Kaya et al. 2019): share of images per exit, accuracy
vs MACs over confidence thresholds (with the dense ResNet and the static truncated networks), easy vs hard
images by exit, exit per class.
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
from routescope.analysis.core.figures import (
    FigureContext,
    easy_hard_gallery,
    main_model,
    matching_baselines,
    register_figure,
)
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
from routescope.analysis.core.units import percent_axis
from routescope.models.early_exit import EXIT, FINAL_EXIT
from routescope.models.evaluation import accuracy_and_macs

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def exit_confidences(entries: list[dict]) -> go.Figure:
    """The confidence at each exit the image visited, the exit it left at highlighted."""
    layers = [d["layer"] for d in entries]
    figure = go.Figure(
        go.Bar(
            x=layers,
            y=[d["confidence"] for d in entries],
            marker_color=["#e45756" if d["exited"] else "#9ecae9" for d in entries],
            text=["exit" if d["exited"] else "" for d in entries],
            textposition="inside",  # outside, it ran into the threshold's label above the last bar
            insidetextanchor="end",
            hovertemplate="%{x}: confidence %{y:.3f}<extra></extra>",
        )
    )
    threshold = next((d["threshold"] for d in entries if "threshold" in d), None)
    if threshold is not None and threshold <= 1:
        figure.add_hline(
            y=threshold,
            line_dash="dash",
            line_color="gray",
            annotation_text=f"threshold {threshold:g}",
            annotation_position="top left",
        )
    taken = next((d["layer"] for d in entries if d["exited"]), "?")
    return figure.update_layout(
        title=f"Left at {taken} after {len(entries)} exit(s) visited<br><sup>red = the exit taken</sup>",
        yaxis=dict(range=[0, 1.1], title="max softmax"),
        height=270,
        **{**COMPACT, "margin": dict(l=10, r=10, t=55, b=10)},
    )


def exit_order(table: pd.DataFrame) -> list[str]:
    """The exits in network order, as the table's ``layer/confidence`` columns list them (the final one last)."""
    return [c.split("/")[0] for c in table.columns if c.endswith("/confidence")]


def exit_shares(table: pd.DataFrame) -> pd.Series:
    """Share of images that left at each exit (every exit, in network order)."""
    return table["exit"].value_counts(normalize=True).reindex(exit_order(table), fill_value=0.0)


def exit_by_class(table: pd.DataFrame) -> pd.DataFrame:
    """Share of each class's images per exit (rows: classes, columns: exits in network order)."""
    shares = pd.crosstab(table["class"], table["exit"], normalize="index")
    return shares.reindex(columns=exit_order(table), fill_value=0.0)


def _accuracy_and_macs(
    forward, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    correct, macs = accuracy_and_macs(
        forward,
        TensorDataset(images, labels),
        model.meta["mean"],
        model.meta["std"],
        next(model.parameters()).device,
        batch_size=250,
        progress=False,
    )
    return correct.float().mean().item(), macs.double().mean().item()


def threshold_sweep(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, thresholds=THRESHOLDS
) -> pd.DataFrame:
    """Accuracy and mean executed MACs of the early-exiting model at each confidence threshold (same images)."""
    rows = []
    for q in thresholds:
        accuracy, macs = _accuracy_and_macs(functools.partial(model, threshold=q), model, images, labels)
        rows.append({"threshold": q, "accuracy": accuracy, "macs": macs})
    return pd.DataFrame(rows)


def static_exits(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Every image leaves at the same exit: the static truncated networks, one row per exit."""
    rows = []
    for name in (*model.exit_names, "fc"):
        accuracy, macs = _accuracy_and_macs(functools.partial(model, exit_at=name), model, images, labels)
        rows.append({"exit": name, "accuracy": accuracy, "macs": macs})
    return pd.DataFrame(rows)


def compare_sections(table: pd.DataFrame) -> list[Section]:
    if "exit" not in table.columns:
        return []
    shares = exit_shares(table)
    bars = px.bar(x=shares.index, y=shares.values, labels={"x": "exit", "y": "share of images"})
    bars.update_traces(hovertemplate="%{x}: %{y:.1%} of the images leave here<extra></extra>")
    bars.update_layout(yaxis=percent_axis("images that leave here", full=True))
    per_class = px.imshow(
        exit_by_class(table),
        text_auto=".0%",
        color_continuous_scale="Reds",
        zmin=0,
        zmax=1,
        labels={"x": "exit", "y": "class", "color": "share of the class"},
    )
    per_class.update_layout(coloraxis_colorbar=dict(tickformat=".0%"))
    return [Section("Share of images per exit", bars), Section("Exit per class", per_class)]


def exit_pattern(table: pd.DataFrame) -> PatternPart | None:
    """The exit the image left at."""
    if "exit" not in table.columns:
        return None
    exits = exit_order(table)
    legend = f"Exit: the exit the image left at ({', '.join(exits)}; {FINAL_EXIT} = it ran the whole network)."
    return PatternPart(table["exit"].astype(str), legend, f"{exits[0]}/confidence" if exits else "exit")


def decision_columns(d: dict) -> dict:
    return {f"{d['layer']}/confidence": float(d["confidence"]), **({"exit": d["layer"]} if d["exited"] else {})}


def exit_control(entry: dict, model) -> Control:
    """Leave at this exit or pass it (the final exit cannot be refused: every image leaves there at the latest)."""
    final = entry["layer"] == FINAL_EXIT
    return Control(
        entry["layer"],
        EXIT.forced_field,
        f"leave at {entry['layer']}",
        Widget.TOGGLE,
        bool(entry["exited"]),
        bool,
        help=f"confidence {entry['confidence']:.2f} (threshold {entry['threshold']:g})"
        + ("; the final exit cannot be refused" if final else ""),
        disabled=final,
    )


def exit_like(table: pd.DataFrame, bundled, target) -> Callable:
    """Each image leaves ``target`` at the exit nearest in position to one drawn from the bundled model's exit
    shares (every exit before it refused)."""
    shares = exit_shares(table)
    blocks = lambda model: [name for name, _ in model.named_blocks()]  # noqa: E731
    exits = list(target.exit_names)
    source = {e: nearest_layer(e, blocks(bundled), exits, blocks(target)) for e in shares.index}

    def sample(rng) -> dict:
        taken = source[rng.choice(shares.index.to_numpy(), p=(shares / shares.sum()).to_numpy())]
        before = exits if taken == FINAL_EXIT else exits[: exits.index(taken)]
        return {**{e: {"exited": False} for e in before}, **({} if taken == FINAL_EXIT else {taken: {"exited": True}})}

    return sample


register_view(
    KindView(
        EXIT,
        columns=decision_columns,
        inspect=lambda entries: [exit_confidences(entries)],
        pattern=exit_pattern,
        compare=compare_sections,
        targets=lambda d: [AttributionTarget("confidence (max softmax)", "confidence")],
        control=exit_control,
        force_like=exit_like,
    )
)


# --- figures -------------------------------------------------------------------------------------------------


def main_early_exit(context: FigureContext) -> str:
    return main_model(context, "early_exit")


@register_figure(
    "early_exit_exit_shares",
    "early_exit",
    "Share of test images that leave at each exit of the early-exit model (its trained threshold).",
)
def exit_shares_figure(context: FigureContext) -> plt.Figure:
    name = main_early_exit(context)
    shares = exit_shares(context.table(name))
    figure, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.bar(shares.index, shares.values * 100, color="tab:red")
    ax.set_ylabel("images (%)")
    ax.set_xlabel("exit")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.set_title(f"{name}: where images leave", fontsize=9)
    return figure


@register_figure(
    "early_exit_accuracy_vs_macs",
    "early_exit",
    "Accuracy vs mean executed MACs over confidence thresholds (stars: the trained threshold), the static "
    "truncated networks (every image leaves at one exit) and the dense ResNet of the same depth, on the same images.",
)
def accuracy_vs_macs_figure(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(4.8, 3.2))
    images, labels = context.images()
    for color, (name, model) in zip(plt.cm.tab10.colors, context.models("early_exit").items()):
        sweep = context.stored(name, "threshold-sweep", lambda: threshold_sweep(model, images, labels))
        ax.plot(sweep["macs"] / 1e6, sweep["accuracy"] * 100, "o-", color=color, label=f"{name} thresholds")
        for _, row in sweep.iterrows():
            ax.annotate(
                f"{row['threshold']:g}",
                (row["macs"] / 1e6, row["accuracy"] * 100),
                fontsize=6,
                xytext=(3, -8),
                textcoords="offset points",
            )
        static = context.stored(name, "static-exits", lambda: static_exits(model, images, labels))
        ax.plot(
            static["macs"] / 1e6, static["accuracy"] * 100, "x--", color=color, alpha=0.6, label=f"{name} static exits"
        )
        trained = context.table(name)
        ax.scatter(
            trained["macs"].mean() / 1e6,
            trained["correct"].mean() * 100,
            marker="*",
            s=140,
            color=color,
            edgecolor="black",
            zorder=3,
            label=f"{name} (threshold {model.threshold:g})",
        )
        for base_name in matching_baselines(context.models("baseline"), model):
            base = context.table(base_name)
            ax.scatter(base["macs"].mean() / 1e6, base["correct"].mean() * 100, marker="s", color="black")
            ax.annotate(
                base_name,
                (base["macs"].mean() / 1e6, base["correct"].mean() * 100),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.legend(fontsize=6, frameon=False, loc="lower right")
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Early exit: accuracy vs compute over thresholds")
    return figure


@register_figure(
    "early_exit_easy_vs_hard",
    "early_exit",
    "The test images that left earliest (fewest MACs) and latest, labelled with class and exit taken.",
)
def easy_hard_figure(context: FigureContext) -> plt.Figure:
    return easy_hard_gallery(context, main_early_exit(context), lambda item: f"{item['class']}\n{item['exit']}")


@register_figure(
    "early_exit_exit_per_class", "early_exit", "Share of each class's test images that leave at each exit."
)
def exit_per_class_figure(context: FigureContext) -> plt.Figure:
    name = main_early_exit(context)
    shares = exit_by_class(context.table(name))
    figure, ax = plt.subplots(figsize=(5, 3.2))
    image = ax.imshow(shares.to_numpy(), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(shares.columns)), shares.columns, rotation=45, fontsize=7)
    ax.set_yticks(np.arange(len(shares.index)), shares.index, fontsize=7)
    figure.colorbar(image, ax=ax, label="share of the class")
    ax.set_title(f"{name}: exit per class", fontsize=9)
    return figure


register_figure(
    "early_exit_knob_tradeoff",
    "early_exit",
    "Accuracy vs mean MACs of the main early-exit as its inference knob is swept (a few values, the same "
    "images), the trained operating point (star), its static variants, the dense ResNet of the same "
    "depth and the other bundled early-exit models: what the knob buys against fixed alternatives.",
)(lambda context: knob_tradeoff(context, "early_exit"))
