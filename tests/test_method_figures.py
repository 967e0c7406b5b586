"""DS-Net, CondConv and DGConv figures and the analysis behind them, on tiny depth-8 checkpoints."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import routescope.analysis.methods.condconv  # noqa: F401  (registers the figures)
import routescope.analysis.methods.dgconv  # noqa: F401
import routescope.analysis.methods.dsnet  # noqa: F401
from routescope.analysis.core.figures import FIGURES, FigureContext, matching_baselines, write_figures
from routescope.analysis.core.table import load_test_images
from routescope.analysis.methods.dgconv import budget_table, group_entries, groups_table, mask_from_groups
from routescope.analysis.methods.condconv import (
    class_specificity,
    routing_by_image,
    routing_layers,
    top_classes_per_expert,
)
from routescope.analysis.methods.dsnet import (
    dynamic_point,
    mean_width_by_class,
    stage_widths,
    static_width_table,
    width_distribution,
)
from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint
from routescope.models.data import FASHION_MNIST, normalize

CLASSES = list(FASHION_MNIST.classes)
MEAN, STD = [0.286], [0.353]


def with_meta(
    model: torch.nn.Module, name: str, test_acc: float, mac_ratio: float, macs_mean: float, **args
) -> torch.nn.Module:
    """The meta ``models.train`` + ``models.evaluate`` would write (metrics made up, recipe args as given)."""
    model.meta = {
        "name": name,
        "method": model.method,
        "dataset": "fashion-mnist",
        "classes": CLASSES,
        "input_size": [1, 28, 28],
        "mean": MEAN,
        "std": STD,
        "dark_background": True,
        "metrics": {"test_acc": test_acc, "mac_ratio": mac_ratio, "macs_mean": macs_mean, "macs_full": 2e6},
        "recipe": {"args": args},
    }
    return model.eval()


@torch.no_grad()
def spread_widths(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Large random width heads centred on ``x`` (bias = minus the mean logits), so real images pick several widths."""
    for gate in model.gates.values():
        gate.width.weight.normal_(0.0, 3.0)
    for i, name in enumerate(model.gate_names):
        model.gates[name].width.bias -= model.eval()(x, return_gates=True).width_logits[:, i].mean(0)
    return model


@torch.no_grad()
def tiny_models(images: torch.Tensor) -> dict[str, torch.nn.Module]:
    """Two DS-Nets (one whose gates disagree across images), a CondConv, two DGConvs (budgets), two plain ResNets."""
    torch.manual_seed(0)
    mixed = spread_widths(create_model("dsnet_resnet8", num_classes=10, in_chans=1), normalize(images, MEAN, STD))
    condconv = create_model("condconv_resnet8", num_classes=10, in_chans=1, condconv_stages=(2, 3))
    for _, block in condconv.routing_blocks():
        block.router.fc.weight.normal_(0.0, 2.0)
    dgconv = {}
    for budget in (0.25, 0.5):
        model = create_model("dgconv_resnet8", num_classes=10, in_chans=1)
        for _, layer in model.dg_layers():  # some gates off: 2..C groups
            layer.theta.copy_(torch.linspace(-1.0, 1.0, layer.theta.numel()) - budget)
        name = f"tiny_dgconv_b{budget}"
        dgconv[name] = with_meta(
            model, name, 0.5 + budget, budget, budget * 2e6, budget=budget, epochs=int(budget * 16)
        )
    return {
        "tiny_dsnet_mixed": with_meta(mixed, "tiny_dsnet_mixed", 0.4, 0.6, 1.2e6),
        "tiny_dsnet_wide": with_meta(
            create_model("dsnet_resnet8", num_classes=10, in_chans=1), "tiny_dsnet_wide", 0.5, 1.0, 2e6
        ),
        "tiny_condconv": with_meta(condconv, "tiny_condconv", 0.5, 1.01, 2.02e6),
        **dgconv,
        "tiny_resnet8": with_meta(create_model("resnet8", num_classes=10, in_chans=1), "tiny_resnet8", 0.8, 1.0, 2e6),
        "tiny_resnet14": with_meta(
            create_model("resnet14", num_classes=10, in_chans=1), "tiny_resnet14", 0.85, 1.0, 3e6
        ),
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, images) -> dict:
    folder = tmp_path_factory.mktemp("method_models")
    paths = {}
    for name, model in tiny_models(images[0]).items():
        save_checkpoint(folder / f"{name}.pt", model, model.meta)
        paths[name] = folder / f"{name}.pt"
    return paths


@pytest.fixture(scope="module")
def images():
    return load_test_images("fashion-mnist-subset", limit=100)


@pytest.fixture(scope="module")
def context(checkpoints, images) -> FigureContext:
    """Every tiny checkpoint, on 100 of the bundled test images (preset, so no figure loads all 500)."""
    return FigureContext(dict(checkpoints), _images=images)


def test_static_width_table_one_row_per_width_with_macs_growing(context, images):
    model = context.model("tiny_dsnet_mixed")
    static = static_width_table(model, *images)
    assert list(static["width"]) == list(model.widths_choices)
    assert static["macs"].is_monotonic_increasing and static["macs"].nunique() == len(static)
    assert static["accuracy"].between(0, 1).all()
    dynamic = dynamic_point(context.table("tiny_dsnet_mixed"))
    assert static["macs"].min() <= dynamic["macs"] <= static["macs"].max() * 1.01  # only the width heads come on top
    wide = context.model("tiny_dsnet_wide")  # untrained gates pick the widest width: the widest static subnet's cost
    widest = static_width_table(wide, *images)["macs"].iloc[-1]
    assert widest <= dynamic_point(context.table("tiny_dsnet_wide"))["macs"] <= widest * 1.01


def test_width_statistics_per_stage_and_class(context):
    model, table = context.model("tiny_dsnet_mixed"), context.table("tiny_dsnet_mixed")
    widths = stage_widths(table)
    assert list(widths.columns) == list(model.gate_names) and widths.isin(model.widths_choices).all().all()
    assert width_distribution(table).gt(0).sum(axis=1).min() > 1, "the mixed gates should pick several widths"
    per_class = mean_width_by_class(table)
    assert list(per_class.index) == CLASSES and list(per_class.columns) == list(model.gate_names)
    assert per_class.stack().between(min(model.widths_choices), 1.0).all()


def synthetic_routing_table() -> pd.DataFrame:
    """Two layers, 3 experts, 4 images per class: ``early`` routes alike for every class, ``late`` by class."""
    labels = np.repeat(np.arange(len(CLASSES)), 4)
    table = pd.DataFrame({"class": pd.Categorical([CLASSES[i] for i in labels], categories=CLASSES)})
    for e in range(3):
        table[f"early/expert{e}"] = 0.5
        table[f"late/expert{e}"] = (labels % 3 == e).astype(float) * 0.9 + 0.05
    return table.sample(frac=1.0, random_state=0)


def test_class_specificity_separates_class_agnostic_from_class_specific_layers():
    specificity = class_specificity(synthetic_routing_table())
    assert list(specificity.index) == ["early", "late"]
    assert specificity["early"] == pytest.approx(0.0) and specificity["late"] > 0.3


def test_top_classes_per_expert_and_routing_by_image():
    table = synthetic_routing_table()
    top = top_classes_per_expert(table, "late", k=3)
    assert len(top) == 3 * 3 and list(top["rank"]) == [1, 2, 3] * 3
    favoured = {e: {CLASSES[i] for i in range(len(CLASSES)) if i % 3 == e} for e in range(3)}
    assert all(row["class"] in favoured[int(row["expert"][-1])] for _, row in top.iterrows())
    assert all((g["weight"].diff().dropna() <= 0).all() for _, g in top.groupby("expert"))
    by_image = routing_by_image(table, "late")
    assert list(by_image.columns) == ["expert0", "expert1", "expert2"] and len(by_image) == len(table)
    assert table.loc[by_image.index, "class"].cat.codes.is_monotonic_increasing


def test_routing_statistics_of_a_condconv_model(context):
    model, table = context.model("tiny_condconv"), context.table("tiny_condconv")
    assert routing_layers(table) == model.routing_layers()
    specificity = class_specificity(table)
    assert (
        list(specificity.index) == model.routing_layers()
        and (specificity >= 0).all()
        and np.isfinite(specificity).all()
    )
    assert len(top_classes_per_expert(table, model.routing_layers()[-1], k=2)) == 2 * model.num_experts


def test_group_structure_of_exported_dgconv(context):
    """``load_checkpoint`` exports DGConv to grouped convs; the structure entries still give every mask."""
    model = context.model("tiny_dgconv_b0.5")
    entries = group_entries(model)
    assert [e["layer"] for e in entries] == [name for name, _ in model.dg_layers()]
    for entry, (_, layer) in zip(entries, model.dg_layers()):
        assert np.array_equal(mask_from_groups(entry["group_of_channel"]), layer.mask().numpy())
        assert mask_from_groups(entry["group_of_channel"]).sum() == entry["nnz"]
    table = groups_table(context.models("dgconv"))
    assert len(table) == 2 * len(entries) and set(table["budget"]) == {0.25, 0.5}
    assert table.groupby("model")["groups"].apply(lambda g: g.nunique() > 1).all()
    points = budget_table(context.models("dgconv"))
    assert list(points["budget"]) == [0.25, 0.5] and points["macs"].is_monotonic_increasing
    assert list(points["epochs"]) == [4, 8], "runs of different lengths are drawn as separate lines"
    baselines = matching_baselines(context.models("baseline"), model)
    assert list(baselines) == ["tiny_resnet8"]


def draw_all(context: FigureContext, method: str) -> list[str]:
    """Draw every registered figure of ``method``; their names."""
    names = []
    for spec in FIGURES.values():
        if spec.method == method:
            figure = spec.make(context)
            assert isinstance(figure, plt.Figure) and figure.axes, spec.name
            plt.close(figure)
            names.append(spec.name)
    return names


@pytest.mark.parametrize(
    "method", ["condconv", "dgconv"]
)  # DS-Net's are drawn by test_write_figures_writes_pdf_and_png
def test_every_figure_of_the_method_is_drawn(context, method):
    assert len(draw_all(context, method)) >= 3


@pytest.mark.parametrize(
    "method, name", [("dsnet", "tiny_dsnet_wide"), ("condconv", "tiny_condconv"), ("dgconv", "tiny_dgconv_b0.25")]
)
def test_figures_with_a_single_model_of_the_method(checkpoints, images, method, name):
    """One checkpoint (the DS-Net always at full width): no comparison to draw, but every figure still draws."""
    context = FigureContext({name: checkpoints[name]}, _images=images)
    assert context.model(name).meta["method"] == method
    assert len(draw_all(context, method)) >= 3


def test_write_figures_writes_pdf_and_png(context, tmp_path):
    names = {spec.name for spec in FIGURES.values() if spec.method == "dsnet"}
    assert len(names) >= 4
    written = write_figures(context, tmp_path, only="dsnet", progress=False)
    assert {p.name for p in written} >= {f"{n}.{fmt}" for n in names for fmt in ("pdf", "png")}
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
