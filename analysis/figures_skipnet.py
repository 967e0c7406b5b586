"""SkipNet figures (Wang et al. 2018): skip ratio per block, easy vs hard images, blocks per class,
input scale vs blocks executed, accuracy vs MACs over the alpha sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd

from analysis.dataset_table import easy_and_hard, layer_columns
from analysis.figure_registry import FigureContext, main_model, register_figure
from analysis.skipping import blocks_executed, scale_response, skip_ratios
from models.checkpoint import training_args


def main_skipnet(context: FigureContext) -> str:
    """The SkipNet the single-model figures show: the most accurate one that skips (mean MACs < 90% of dense)."""
    return main_model(context, "skipnet")


def easy_hard_gallery(context: FigureContext, name: str, describe: Callable[[pd.Series], str] | None = None,
                      k: int = 8) -> plt.Figure:
    """Two rows of ``k`` test images, fewest MACs (easy) above most MACs (hard), with their mean brightness and
    contrast; ``describe(row)`` labels each image (default: class and MACs). Shared by every dynamic method."""
    table = context.table(name)
    images, _ = context.images()
    easy, hard = easy_and_hard(table, k)
    describe = describe or (lambda item: f"{item['class']}\n{item['macs'] / 1e6:.1f}M")
    figure, axes = plt.subplots(2, k, figsize=(k, 2.6), squeeze=False)
    for row, (title, subset) in enumerate((("easy", easy), ("hard", hard))):
        for ax in axes[row]:
            ax.axis("off")
        for ax, (index, item) in zip(axes[row], subset.iterrows()):
            ax.imshow(images[index].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(describe(item), fontsize=6)
        axes[row][0].text(-0.3, 0.5, f"{title}\nbright {subset['brightness'].mean():.2f}\ncontrast {subset['contrast'].mean():.2f}",
                          transform=axes[row][0].transAxes, ha="right", va="center", fontsize=7)
    figure.suptitle(f"{name}: easy vs hard images", fontsize=9)
    return figure


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


@register_figure("skipnet_easy_vs_hard", "skipnet",
                 "Easy images (fewest blocks executed, top) and hard images (most blocks executed, bottom), with their "
                 "mean brightness and contrast: in the paper easy images are brighter and clearer.")
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


@register_figure("skipnet_input_scale", "skipnet",
                 "Mean blocks executed (and accuracy) when the test objects are zoomed by a factor; the paper finds "
                 "larger inputs need more blocks.")
def input_scale_figure(context: FigureContext) -> plt.Figure:
    name = main_skipnet(context)
    response = scale_response(context.model(name), *context.images())
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
        series = "+ fine-tuned, gates anchored to the policy" if args.get("ft_anchor") else "+ fine-tuned under the fixed policy"
        return series + (", distilled from a teacher" if args.get("ft_teacher") else ""), parent_alpha
    if not args.get("rl_epochs"):
        return "supervised pre-training only", None
    if parent_series not in (None, "supervised pre-training only"):
        return "fine-tuned, then hybrid RL again", args.get("alpha")
    if args.get("rl_backbone_lr") is not None:
        return f"hybrid RL, backbone lr {args['rl_backbone_lr']:g}", args.get("alpha")
    return "hybrid RL (paper)", args.get("alpha")


@register_figure("skipnet_alpha_sweep", "skipnet",
                 "Accuracy vs mean MACs of SkipNets trained with different alpha (compute reward), one line per "
                 "training variant, with the plain ResNet of the same depth; numbers from models.evaluate on the "
                 "full test set.")
def alpha_sweep_figure(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(6, 3.6))
    models = context.models("skipnet")
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for name, model in models.items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics:
            label, alpha = sweep_point(name, models)
            series.setdefault(label, []).append((metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, alpha))
    for label, points in sorted(series.items()):
        points.sort()
        line = ax.plot([m for m, _, _ in points], [a for _, a, _ in points], "o-", alpha=0.8, label=label)[0]
        for macs, acc, alpha in points:
            if alpha is not None:
                ax.annotate(f"α={alpha:g}", (macs, acc), fontsize=6, xytext=(3, 3), textcoords="offset points", color=line.get_color())
    for name, model in context.models("baseline").items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" in metrics:
            ax.scatter(metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, color="black", marker="s")
            ax.annotate(name, (metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=6, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)  # below: off the points
    ax.set_title("SkipNet: accuracy vs compute over alpha")
    return figure

