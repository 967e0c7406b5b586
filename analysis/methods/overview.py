"""Cross-method figure: accuracy vs mean executed MACs of every checkpoint, with the Pareto front."""

from __future__ import annotations

import matplotlib.pyplot as plt

from routescope.analysis.core.figures import FigureContext, place_labels, register_figure, short_name
from routescope.analysis.core.pareto import models_frame, pareto_front

MARKERS = "oD^vPXh*"


def method_style(methods: list[str]) -> dict[str, tuple]:
    """Colour and marker per method, the plain baseline in black squares (no per-method table to keep)."""
    dynamic = [m for m in sorted(methods) if m != "baseline"]
    style = {m: (plt.cm.tab10.colors[i % 10], MARKERS[i % len(MARKERS)]) for i, m in enumerate(dynamic)}
    return {**style, "baseline": ("black", "s")}


@register_figure(
    "overview_accuracy_vs_macs",
    "all",
    "Test accuracy vs mean MACs executed per image for every model, as measured by models.evaluate "
    "(full test set) and stored in each checkpoint's meta; the dashed line joins the models no other "
    "model beats on both (the Pareto front), per data set.",
    test_images=False,
)
def accuracy_vs_macs(context: FigureContext) -> plt.Figure:
    frame = models_frame(context.checkpoints.values())
    figure, ax = plt.subplots(figsize=(5.5, 3.8))
    style = method_style(list(frame["method"].unique()) if not frame.empty else [])
    for method, rows in frame.groupby("method", sort=True):
        color, marker = style[method]
        ax.scatter(rows["macs_mean"] / 1e6, rows["test_acc"] * 100, color=color, marker=marker, label=method)
    for _, rows in frame.groupby("dataset"):
        front = pareto_front(rows)
        ax.step(
            front["macs_mean"] / 1e6, front["test_acc"] * 100, where="post", color="gray", linestyle="--", linewidth=0.8
        )
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs compute of all models")
    if not frame.empty:
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    # labels last, once the axes are laid out; the most accurate first: they win the space
    order = frame.sort_values("test_acc", ascending=False)
    hidden = place_labels(
        ax, [(r.macs_mean / 1e6, r.test_acc * 100, short_name(r.name)) for r in order.itertuples()], fontsize=5
    )
    if hidden:
        ax.text(
            0.01,
            0.01,
            f"{hidden} labels left out where they would overlap",
            transform=ax.transAxes,
            fontsize=5,
            color="gray",
        )
    return figure
