"""CondConv in analysis: routing statistics over a dataset table, its Inspect and Compare views, and the
paper's figures (Yang et al. 2019): routing weights per image, mean routing per class with a
class-specificity number per layer, top classes per expert of the last layer.

The paper's observation to test: early CondConv layers route about the same for every class, late layers
route by class. ``class_specificity`` puts one number on that per layer.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.figures import FigureContext, main_model, register_figure
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
from routescope.models.condconv import ROUTING


def routing_heatmap(decisions: list[dict]) -> go.Figure:
    """Layers x experts heatmap of CondConv routing weights (sigmoid, not normalized)."""
    z = [d["weights"] for d in decisions]
    n = len(z[0]) if z else 0
    figure = go.Figure(
        go.Heatmap(
            z=z,
            y=[d["layer"] for d in decisions],
            x=[f"expert {e}" for e in range(n)],
            zmin=0,
            zmax=1,
            colorscale="Greens",
            texttemplate="%{z:.2f}",
        )
    )
    figure.update_yaxes(autorange="reversed")  # network order, top down
    return figure.update_layout(title="Routing weights", height=120 + 40 * len(z), **COMPACT)


def routing_layers(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(c.split("/")[0] for c in table.columns if "/expert" in c))


def routing_columns(table: pd.DataFrame, layer: str) -> list[str]:
    """The ``layer/expertE`` columns of one routing layer, in expert order."""
    return [c for c in table.columns if c.startswith(f"{layer}/expert")]


def routing_by_class(table: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Mean routing weight of each expert of ``layer``, per class (rows: class, columns: expert)."""
    columns = routing_columns(table, layer)
    return table.groupby("class", observed=False)[columns].mean().rename(columns=lambda c: c.split("/")[1])


def class_heatmap(means: pd.DataFrame) -> go.Figure:
    """Mean routing weight per class and expert, the colours stretched over the data's own range (the weights of
    a layer often differ by a few hundredths only: a fixed 0-1 scale would paint them all alike)."""
    low, high = float(np.nanmin(means.to_numpy())), float(np.nanmax(means.to_numpy()))
    figure = px.imshow(
        means,
        text_auto=".2f",
        color_continuous_scale="Greens",
        zmin=low,
        zmax=high if high > low else low + 1e-6,
        aspect="auto",
        labels={"x": "expert", "y": "class", "color": "weight"},
    )
    figure.update_layout(
        height=120 + 28 * len(means),
        coloraxis_colorbar=dict(title=f"mean weight<br>(scaled to<br>{low:.2f}–{high:.2f})"),
        **COMPACT,
    )
    return figure


def compare_sections(table: pd.DataFrame) -> list[Section]:
    return [
        Section(
            f"Mean routing weight per class: {layer}",
            class_heatmap(routing_by_class(table, layer)),
            caption="The colour scale spans this layer's own range of mean weights, not 0-1: compare the numbers.",
        )
        for layer in routing_layers(table)
    ]


def routing_pattern_part(table: pd.DataFrame) -> PatternPart | None:
    """The dominant expert (largest routing weight) of each routed block, in network order."""
    layers = routing_layers(table)
    if not layers:
        return None
    dominant = pd.DataFrame(
        {layer: table[routing_columns(table, layer)].to_numpy().argmax(axis=1) for layer in layers}, index=table.index
    )
    sep = "" if int(dominant.to_numpy().max(initial=0)) < 10 else "/"
    values = dominant.astype(str).agg(sep.join, axis=1)
    n = len(routing_columns(table, layers[0]))
    legend = (
        f"Experts: one digit per CondConv block, in network order ({', '.join(layers)}); each is the expert with the "
        f"largest routing weight in that block (0–{n - 1}; every expert still contributes with its own weight)."
    )
    return PatternPart(values, legend, routing_columns(table, layers[0])[0])


AS_ROUTED = "as routed"


def routing_control(entry: dict, model) -> Control:
    """Route the block fully to one expert (weight 1, the others 0), evenly to all, or as the router says."""
    weights = [float(w) for w in entry["weights"]]
    n = len(weights)
    options = (AS_ROUTED, *[f"only expert {e}" for e in range(n)], "all experts 0.5")

    def override(choice: str) -> list[float] | None:
        if choice == AS_ROUTED:
            return None
        if choice.startswith("all"):
            return [0.5] * n
        expert = int(choice.rsplit(" ", 1)[1])
        return [1.0 if e == expert else 0.0 for e in range(n)]

    value = AS_ROUTED
    if entry.get("forced"):
        value = next((o for o in options[1:] if override(o) == weights), AS_ROUTED)
    return Control(
        entry["layer"],
        ROUTING.forced_field,
        f"experts of {entry['layer']}",
        Widget.SELECT,
        value,
        override,
        options=options,
        help="routed: " + ", ".join(f"{w:.2f}" for w in weights),
    )


def route_like(table: pd.DataFrame, bundled, target) -> Callable:
    """Each routing block of ``target`` forced to one expert (weight 1, the others 0), drawn with the frequency at
    which the bundled block at the same position puts its largest weight on each expert (the bench's ``--scale
    paper``: a forced routing runs that expert's kernel alone). Which expert runs does not change the cost, so a
    target with more experts than ``bundled`` draws among the first ones."""
    layers = routing_layers(table)
    dominant = {
        layer: table[routing_columns(table, layer)].to_numpy().argmax(1).astype(int) for layer in layers
    }  # each image's dominant expert
    blocks = lambda model: [name for name, _ in model.named_blocks()]  # noqa: E731
    targets = target.routing_layers()
    source = {t: nearest_layer(t, blocks(target), layers, blocks(bundled)) for t in targets}
    experts = {t: target.get_submodule(t).router.fc.out_features for t in targets}

    def sample(rng) -> dict:
        out = {}
        for t in targets:
            expert = int(rng.choice(dominant[source[t]])) % experts[t]
            out[t] = {"weights": [1.0 if e == expert else 0.0 for e in range(experts[t])]}
        return out

    return sample


register_view(
    KindView(
        ROUTING,
        columns=lambda d: {f"{d['layer']}/expert{e}": float(w) for e, w in enumerate(d["weights"])},
        inspect=lambda entries: [routing_heatmap(entries)],
        pattern=routing_pattern_part,
        compare=compare_sections,
        targets=lambda d: [
            AttributionTarget(f"routing weight of expert {e}", "weights", e) for e in range(len(d["weights"]))
        ],
        control=routing_control,
        force_like=route_like,
    )
)


def routing_by_image(table: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Routing weights of ``layer`` (rows: images grouped by class in class order, columns: experts)."""
    ordered = table.sort_values("class", kind="stable")  # categorical: sorted in class order
    return ordered[routing_columns(table, layer)].rename(columns=lambda c: c.split("/")[1])


def class_specificity(table: pd.DataFrame) -> pd.Series:
    """Per routing layer: the spread over classes (population std) of each expert's mean weight, averaged
    over experts. Near 0: every class routes alike (class-agnostic); larger: routing depends on the class."""
    return pd.Series(
        {layer: float(routing_by_class(table, layer).std(ddof=0).mean()) for layer in routing_layers(table)},
        name="class_specificity",
        dtype=float,
    )


def top_classes_per_expert(table: pd.DataFrame, layer: str, k: int = 3) -> pd.DataFrame:
    """For each expert of ``layer``, the ``k`` classes whose images give it the highest mean weight
    (long format: expert, rank, class, weight)."""
    by_class = routing_by_class(table, layer)
    rows = [
        {"expert": expert, "rank": rank, "class": str(cls), "weight": float(weight)}
        for expert in by_class.columns
        for rank, (cls, weight) in enumerate(by_class[expert].dropna().nlargest(k).items(), 1)
    ]
    return pd.DataFrame(rows, columns=["expert", "rank", "class", "weight"])


def main_condconv(context: FigureContext) -> str:
    return main_model(context, "condconv")


@register_figure(
    "condconv_routing_per_image",
    "condconv",
    "Routing weight of every expert (columns) for every test image (rows, grouped by class), one panel per "
    "CondConv layer; sigmoid weights, 0 (white) to 1 (dark).",
)
def routing_per_image_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    layers = routing_layers(table)
    counts = table["class"].value_counts(sort=False).reindex(table["class"].cat.categories, fill_value=0)
    bounds = np.cumsum(counts.to_numpy())
    centres = bounds - counts.to_numpy() / 2
    figure, axes = plt.subplots(
        1, len(layers), figsize=(1.2 + 1.3 * len(layers), 4.5), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, layer in zip(axes[0], layers):
        weights = routing_by_image(table, layer)
        image = ax.imshow(weights.to_numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        for bound in bounds[:-1]:
            ax.axhline(bound - 0.5, color="black", linewidth=0.4)
        ax.set_xticks(range(len(weights.columns)), [c.removeprefix("expert") for c in weights.columns], fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
        ax.set_title(layer, fontsize=8)
    axes[0][0].set_yticks(centres - 0.5, counts.index.astype(str), fontsize=6)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.6, label="routing weight")
    figure.suptitle(f"{name}: routing weights per image", fontsize=9)
    return figure


@register_figure(
    "condconv_routing_by_class",
    "condconv",
    "Mean routing weight of each expert per class, one heatmap per CondConv layer. Each title gives the layer's "
    "class specificity: the std over classes of an expert's mean weight, averaged over experts (0 = every "
    "class routes alike); the paper finds early layers class-agnostic and late ones class-specific.",
)
def routing_by_class_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    specificity = class_specificity(table)
    layers = list(specificity.index)
    figure, axes = plt.subplots(
        1, len(layers), figsize=(1.4 + 1.5 * len(layers), 3.4), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, layer in zip(axes[0], layers):
        by_class = routing_by_class(table, layer)
        image = ax.imshow(by_class.to_numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1)
        ax.set_xticks(range(len(by_class.columns)), [c.removeprefix("expert") for c in by_class.columns], fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
        ax.set_title(f"{layer}\nspecificity {specificity[layer]:.3f}", fontsize=8)
    axes[0][0].set_yticks(range(len(by_class.index)), by_class.index.astype(str), fontsize=6)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.7, label="mean routing weight")
    figure.suptitle(f"{name}: mean routing weight per class", fontsize=9)
    return figure


@register_figure(
    "condconv_top_classes_per_expert",
    "condconv",
    "For each expert of the last CondConv layer, the three classes whose images give it the highest mean "
    "routing weight.",
)
def top_classes_figure(context: FigureContext) -> plt.Figure:
    name = main_condconv(context)
    table = context.table(name)
    layer = routing_layers(table)[-1]
    top = top_classes_per_expert(table, layer, k=3)
    experts = list(dict.fromkeys(top["expert"]))
    columns = min(4, len(experts))
    rows = -(-len(experts) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 1.3 * rows + 0.5), squeeze=False, sharex=True, layout="constrained"
    )
    for ax in axes.flat[len(experts) :]:
        ax.axis("off")
    for ax, expert in zip(axes.flat, experts):
        ranked = top[top["expert"] == expert]
        ax.barh(ranked["class"], ranked["weight"], color="tab:green")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=6)
        ax.set_title(expert, fontsize=8)
    figure.supxlabel("mean routing weight", fontsize=7)
    figure.suptitle(f"{name}: top classes per expert in {layer}", fontsize=9)
    return figure
