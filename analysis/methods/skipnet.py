"""SkipNet in analysis: skip statistics over a dataset table, its Inspect and Compare views, and the paper's
figures (Wang et al. 2018): skip ratio per block, easy vs hard images, blocks per class, input scale vs blocks
executed, accuracy vs MACs over the alpha sweep.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.figures import (
    FigureContext,
    easy_hard_gallery,
    main_model,
    place_labels,
    register_figure,
    short_name,
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
from routescope.analysis.core.perturb import rescale
from routescope.analysis.core.scaling import nearest_layer
from routescope.analysis.core.table import dataset_table, layer_columns
from routescope.analysis.core.units import percent_axis
from routescope.models.checkpoint import training_args
from routescope.models.skipnet import SKIP


def ungated_block(gated: list[str]) -> str:
    """The block SkipNet does not gate: the network's first, which always runs (``layer1.0`` in the ResNet layout
    the gated blocks are named in; "the first block" otherwise)."""
    resnet = bool(gated) and all(re.fullmatch(r"layer\d+\.\d+", name) for name in gated)
    return "layer1.0" if resnet and "layer1.0" not in gated else "the first block"


def no_gate_note(gated: list[str]) -> str:
    block = ungated_block(gated)
    block = "The first block" if block == "the first block" else block
    return f"{block} has no gate: it always runs, so it is not shown"


def skip_strip(decisions: list[dict]) -> go.Figure:
    """One cell per gated block: executed (dark) or skipped (light), with the gate probability."""
    layers = [d["layer"] for d in decisions]
    executed = [[1 if d["executed"] else 0 for d in decisions]]
    text = [[f"{d['probability']:.2f}" for d in decisions]]
    figure = go.Figure(
        go.Heatmap(
            z=executed,
            x=layers,
            y=["gate"],
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale=[[0, "#e8eef6"], [1, "#1f4e8c"]],
            showscale=False,
            xgap=3,
            hovertemplate="%{x}: p(execute)=%{text}<extra></extra>",
        )
    )
    n_run = sum(executed[0])
    return figure.update_layout(
        # the legend under the title, not in it: a half-width column (Inspect's side by side) cuts a long title
        title=f"Blocks executed: {n_run} of {len(layers)} gated"
        f"<br><sup>dark = run, number = gate probability<br>{no_gate_note(layers)}</sup>",
        height=205,
        **{**COMPACT, "margin": dict(l=10, r=10, t=75, b=10)},
    )


def skip_pattern(table: pd.DataFrame) -> PatternPart | None:
    """One digit per gated block, in network order: 1 = executed, 0 = skipped."""
    columns = layer_columns(table, "executed")
    if not columns:
        return None
    layers = [c.split("/")[0] for c in columns]
    values = table[columns].astype(int).astype(str).agg("".join, axis=1)
    legend = (
        f"Skip gates: one digit per gated block, in network order ({', '.join(layers)}); 1 = block executed, "
        f"0 = skipped. {no_gate_note(layers).split(':')[0]} (it always runs)."
    )
    return PatternPart(values, legend, columns[0])


def compare_sections(table: pd.DataFrame) -> list[Section]:
    if not layer_columns(table, "executed"):
        return []
    ratios = skip_ratios(table)
    figure = px.bar(x=ratios.index, y=ratios.values, labels={"x": "gated block", "y": "images that skip it"})
    figure.update_traces(hovertemplate="%{x}: skipped by %{y:.1%} of the images<extra></extra>")
    figure.update_layout(yaxis=percent_axis("images that skip the block", full=True))
    return [Section("Skip ratio per block", figure, caption=f"{no_gate_note(list(ratios.index))}.")]


def skip_control(entry: dict, model) -> Control:
    """Run or skip the block: a toggle of ``executed``."""
    return Control(
        entry["layer"],
        SKIP.forced_field,
        f"run {entry['layer']}",
        Widget.TOGGLE,
        bool(entry["executed"]),
        bool,
        help=f"gate probability {entry['probability']:.2f}; off skips the block (identity shortcut)",
    )


def skip_like(table: pd.DataFrame, bundled, target) -> Callable:
    """Each gated block of ``target`` runs with the execution rate of the bundled block at the same position."""
    layers = [c.split("/")[0] for c in layer_columns(table, "executed")]
    rates = {layer: float(table[f"{layer}/executed"].mean()) for layer in layers}
    blocks = lambda model: [name for name, _ in model.named_blocks()]  # noqa: E731
    source = {t: nearest_layer(t, blocks(target), layers, blocks(bundled)) for t in target.gate_names}
    return lambda rng: {t: {"executed": bool(rng.random() < rates[source[t]])} for t in target.gate_names}


register_view(
    KindView(
        SKIP,
        columns=lambda d: {f"{d['layer']}/executed": bool(d["executed"]), f"{d['layer']}/p": float(d["probability"])},
        inspect=lambda entries: [skip_strip(entries)],
        pattern=skip_pattern,
        compare=compare_sections,
        targets=lambda d: [AttributionTarget("gate probability", "probability")],
        control=skip_control,
        force_like=skip_like,
    )
)


def skip_ratios(table: pd.DataFrame) -> pd.Series:
    """Fraction of images that skip each gated block, in network order."""
    executed = table[layer_columns(table, "executed")]
    return 1 - executed.mean().rename(lambda c: c.split("/")[0])


def blocks_executed(table: pd.DataFrame) -> pd.Series:
    """Gated blocks executed per image."""
    return table[layer_columns(table, "executed")].sum(axis=1)


def scale_response(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, scales=(0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)
) -> pd.DataFrame:
    """Mean blocks executed and accuracy when the objects are shown smaller or larger."""
    rows = []
    for scale in scales:
        table = dataset_table(model, rescale(images, scale), labels)
        rows.append(
            {
                "scale": scale,
                "blocks_executed": blocks_executed(table).mean(),
                "accuracy": table["correct"].mean(),
                "macs": table["macs"].mean(),
            }
        )
    return pd.DataFrame(rows)


def main_skipnet(context: FigureContext) -> str:
    """The SkipNet the single-model figures show: the most accurate one that skips (mean MACs < 90% of dense)."""
    return main_model(context, "skipnet")


@register_figure("skipnet_skip_ratio", "skipnet", "Fraction of test images that skip each gated residual block.")
def skip_ratio_figure(context: FigureContext) -> plt.Figure:
    name = main_skipnet(context)
    ratios = skip_ratios(context.table(name))
    figure, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(range(len(ratios)), ratios.values, color="tab:blue")
    ax.set_xticks(range(len(ratios)), ratios.index, rotation=60, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("skip ratio")
    ax.set_title(f"{name}: skip ratio per block")
    return figure


@register_figure(
    "skipnet_easy_vs_hard",
    "skipnet",
    "Easy images (fewest blocks executed, top) and hard images (most blocks executed, bottom), with their "
    "mean brightness and contrast: in the paper easy images are brighter and clearer.",
)
def easy_hard_figure(context: FigureContext) -> plt.Figure:
    return easy_hard_gallery(context, main_skipnet(context))


@register_figure("skipnet_blocks_per_class", "skipnet", "Mean number of gated blocks executed per image, by class.")
def blocks_per_class_figure(context: FigureContext) -> plt.Figure:
    name = main_skipnet(context)
    table = context.table(name)
    per_class = blocks_executed(table).groupby(table["class"], observed=False).mean()
    figure, ax = plt.subplots(figsize=(5, 2.8))
    ax.barh(per_class.index.astype(str), per_class.values, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(f"blocks executed (of {len(layer_columns(table, 'executed'))} gated)")
    ax.set_title(f"{name}: blocks executed per class")
    return figure


@register_figure(
    "skipnet_input_scale",
    "skipnet",
    "Mean blocks executed (and accuracy) when the test objects are zoomed by a factor; the paper finds "
    "larger inputs need more blocks.",
)
def input_scale_figure(context: FigureContext) -> plt.Figure:
    name = main_skipnet(context)
    response = context.stored(name, "scale-response", lambda: scale_response(context.model(name), *context.images()))
    figure, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.plot(response["scale"], response["blocks_executed"], "o-", color="tab:blue")
    ax.set_xlabel("object scale")
    ax.set_ylabel("blocks executed", color="tab:blue")
    twin = ax.twinx()
    twin.plot(response["scale"], response["accuracy"] * 100, "s--", color="gray")
    twin.set_ylabel("accuracy (%)", color="gray")
    ax.set_title(f"{name}: input scale vs blocks executed")
    return figure


def sweep_point(name: str, models: dict) -> tuple[str, float | None]:
    """(series, alpha) of a SkipNet in the alpha sweep, from its training args: the paper's hybrid RL, RL with its
    own backbone learning rate, fine-tuned under the frozen policy of the run it started from (whose alpha it
    keeps, found through ``--init-from``) with or without gates anchored to that policy, or RL again from such a
    fine-tuned model. Fine-tuning distilled from a dense teacher is a series of its own."""
    args = training_args(models[name].meta)
    parent = Path(args.get("init_from") or "").stem
    parent_series, parent_alpha = sweep_point(parent, models) if parent in models and parent != name else (None, None)
    if args.get("ft_epochs"):
        series = (
            "+ fine-tuned, gates anchored to the policy"
            if args.get("ft_anchor")
            else "+ fine-tuned under the fixed policy"
        )
        return series + (", distilled from a teacher" if args.get("ft_teacher") else ""), parent_alpha
    if not args.get("rl_epochs"):
        return "supervised pre-training only", None
    if parent_series not in (None, "supervised pre-training only"):
        return "fine-tuned, then hybrid RL again", args.get("alpha")
    if args.get("rl_backbone_lr") is not None:
        return f"hybrid RL, backbone lr {args['rl_backbone_lr']:g}", args.get("alpha")
    return "hybrid RL (paper)", args.get("alpha")


@register_figure(
    "skipnet_alpha_sweep",
    "skipnet",
    "Accuracy vs mean MACs of SkipNets trained with different alpha (compute reward), one line per "
    "training variant, with the plain ResNet of the same depth; numbers from models.evaluate on the "
    "full test set.",
    test_images=False,
)
def alpha_sweep_figure(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(6, 3.6))
    models = context.models("skipnet")
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    labels: list[tuple[float, float, str, str]] = []  # placed last, without overlap
    for name, model in models.items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics:
            label, alpha = sweep_point(name, models)
            series.setdefault(label, []).append((metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, alpha))
    for label, points in sorted(series.items()):
        points.sort()
        line = ax.plot([m for m, _, _ in points], [a for _, a, _ in points], "o-", alpha=0.8, label=label)[0]
        labels += [(macs, acc, f"α={alpha:g}", line.get_color()) for macs, acc, alpha in points if alpha is not None]
    for name, model in context.models("baseline").items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics:
            ax.scatter(metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, color="black", marker="s")
            labels.append((metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, short_name(name), "black"))
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(
        fontsize=6, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2
    )  # below: off the points
    ax.set_title("SkipNet: accuracy vs compute over alpha")
    ax.margins(x=0.1, y=0.1)
    figure.tight_layout()
    place_labels(ax, labels, fontsize=6)
    return figure


register_figure(
    "skipnet_knob_tradeoff",
    "skipnet",
    "Accuracy vs mean MACs of the main SkipNet as its inference knob is swept (a few values, the same "
    "images), the trained operating point (star), its static variants, the dense ResNet of the same "
    "depth and the other bundled SkipNet models: what the knob buys against fixed alternatives.",
)(lambda context: knob_tradeoff(context, "skipnet"))
