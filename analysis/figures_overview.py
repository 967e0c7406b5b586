"""Cross-method figure: accuracy vs mean executed MACs of every checkpoint (the Pareto view)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.figure_registry import FigureContext, register_figure

METHOD_STYLE = {"baseline": ("black", "s"), "skipnet": ("tab:blue", "o"), "dsnet": ("tab:orange", "D"),
                "condconv": ("tab:green", "^"), "dgconv": ("tab:purple", "v"), "repr": ("tab:red", "P")}


@register_figure("overview_accuracy_vs_macs", "all",
                 "Test accuracy vs mean MACs executed per image for every model, as measured by models.evaluate "
                 "(full test set) and stored in each checkpoint's meta.")
def accuracy_vs_macs(context: FigureContext) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(5, 3.4))
    for name, model in context.models("all").items():
        metrics = model.meta.get("metrics", {})
        if "test_acc" not in metrics or "macs_mean" not in metrics:
            continue
        color, marker = METHOD_STYLE.get(model.meta["method"], ("gray", "x"))
        ax.scatter(metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100, color=color, marker=marker, label=model.meta["method"])
        ax.annotate(name, (metrics["macs_mean"] / 1e6, metrics["test_acc"] * 100), fontsize=6, xytext=(3, 3), textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, frameon=False)
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs compute of all models")
    return figure
