"""The analysis side of "Question the routing": every decision kind's control maps to an override the model
accepts, interventions round-trip through their text (URL) form, routing patterns, the decision map, the
perturbations, the latency numbers and the knob trade-off figure."""

import numpy as np
import pandas as pd
import pytest
import torch

from routescope.analysis.core.catalog import PRETRAINED, sample_images
from routescope.analysis.core.figures import FIGURES, FigureContext, load_figure_modules
from routescope.analysis.core.images import load_model_input
from routescope.analysis.core.interventions import (
    changed_decisions,
    format_interventions,
    parse_interventions,
    parse_override,
)
from routescope.analysis.core.kinds import Widget, decision_controls, routing_pattern
from routescope.analysis.core.latency import dense_counterpart, paired_latency
from routescope.analysis.core.patterns import decision_map, pattern_summary
from routescope.analysis.core.perturb import PERTURBATIONS, perturbation_sweep, perturbed, pixels_tensor
from routescope.analysis.core.table import dataset_table, load_test_images
from routescope.analysis.core.trace import trace_batch
from routescope.models import create_model
from routescope.models.decisions import decision_kind

META = {
    "name": "t",
    "dataset": "fashion-mnist",
    "classes": [str(i) for i in range(10)],
    "input_size": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "dark_background": True,
}
ARCHS = ["skipnet_resnet8", "dsnet_resnet8", "condconv_resnet8", "early_exit_resnet8"]


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, in_chans=1).eval()
    model.meta = {**META, "method": arch.rsplit("_", 1)[0]}
    return model


def image(model):
    return load_model_input(sample_images()[0].read_bytes(), model.meta, "sample")


@pytest.mark.parametrize("arch", ARCHS)
def test_every_control_forces_what_it_says(arch):
    """Each enabled control, set to another option, gives an override that runs and is marked forced."""
    model = tiny(arch)
    x = image(model).tensor
    trace = trace_batch(model, x, ["x"], structure=False)[0]
    controls = decision_controls(trace["decisions"], model)
    assert {c.layer for c in controls} <= set(model.decision_layers()) and controls
    for control in [c for c in controls if not c.disabled]:
        assert control.field in decision_kind(model.decision_layers()[control.layer]).forcible
        other = (
            (not control.value)
            if control.widget is Widget.TOGGLE
            else next(o for o in control.options[::-1] if o != control.value)
        )
        forced = control.override(other)
        after = trace_batch(model, x, ["x"], structure=False, overrides={control.layer: {control.field: forced}})[0]
        entry = next(d for d in after["decisions"] if d["layer"] == control.layer)
        assert entry["forced"] is True and entry[control.field] == forced
        shown = next(c for c in decision_controls(after["decisions"], model) if c.layer == control.layer)
        assert shown.value == other, "the control shows the forced value"


def test_interventions_round_trip_and_bad_text():
    overrides = {
        "layer2.1": {"executed": False},
        "layer3.0": {"weights": [1.0, 0.0, 0.0, 0.0]},
        "layer2": {"width": 0.5},
    }
    assert parse_interventions(*format_interventions(overrides, {"threshold": 0.7})) == (overrides, {"threshold": 0.7})
    assert parse_override("layer2.1.executed=FALSE") == ("layer2.1", "executed", "FALSE")  # typed by the model's kind
    for bad in ("layer2.1.executed", "executed=true", "layer2.1.executed="):
        with pytest.raises(ValueError):
            parse_interventions([bad], [])
    with pytest.raises(ValueError):
        parse_interventions([], ["threshold=high"])


def test_changed_decisions_marks_forced_and_unreached():
    a = [{"layer": "e1", "kind": "exit", "exited": True}]
    b = [
        {"layer": "e1", "kind": "exit", "exited": False, "forced": True},
        {"layer": "fc", "kind": "exit", "exited": True},
    ]
    table = changed_decisions(a, b, {"exit": ("exited",)})
    assert table.to_dict("records") == [
        {"layer": "e1", "kind": "exit", "field": "exited", "original": "True", "intervened": "False", "forced": True},
        {
            "layer": "fc",
            "kind": "exit",
            "field": "exited",
            "original": "not reached",
            "intervened": "True",
            "forced": False,
        },
    ]


def test_routing_pattern_and_table_column():
    decisions = [
        {"layer": "a", "kind": "skip", "executed": True},
        {"layer": "b", "kind": "skip", "executed": False},
        {"layer": "l2", "kind": "width", "width": 0.5},
        {"layer": "l3", "kind": "width", "width": 1.0},
    ]
    assert routing_pattern(decisions) == "10 | 0.5/1"
    assert routing_pattern([]) == ""
    images, labels = load_test_images(limit=40)
    table = dataset_table(tiny("skipnet_resnet8"), images, labels)
    summary = pattern_summary(table)
    assert summary["images"].sum() == 40 and set(summary["pattern"]) == set(table["pattern"])
    assert "pattern" not in dataset_table(tiny_static(), images, labels).columns


def tiny_static():
    model = create_model("resnet8", in_chans=1).eval()
    model.meta = {**META, "method": "baseline"}
    return model


def test_decision_map_is_the_pca_of_the_decisions():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"a/p": rng.normal(size=50), "b/p": rng.normal(size=50), "macs": 1.0, "c/executed": rng.random(50) > 0.5}
    )
    coords = decision_map(table)
    assert coords.shape == (50, 2) and abs(np.corrcoef(coords["pc1"], coords["pc2"])[0, 1]) < 1e-6
    assert 0 < sum(coords.attrs["explained"]) <= 1
    assert decision_map(table.assign(**{"a/p": 0.0, "b/p": 0.0, "c/executed": True})) is None
    assert decision_map(table[["macs"]]) is None


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbations_keep_uint8_and_the_identity(name):
    pixels = pixels_tensor(image(tiny("skipnet_resnet8")).pixels)
    spec = PERTURBATIONS[name]
    out = perturbed(pixels, name, [spec.low, spec.high])
    assert out.dtype == torch.uint8 and out.shape == (2, *pixels.shape[1:])
    assert not torch.equal(out[0], out[1])
    if spec.identity is not None:
        assert torch.equal(perturbed(pixels, name, [spec.identity])[0], pixels[0])


def test_perturbation_sweep_rows():
    model = tiny("dsnet_resnet8")
    frame = perturbation_sweep(model, pixels_tensor(image(model).pixels), "noise", [0.0, 0.2, 0.4])
    assert list(frame["strength"]) == [0.0, 0.2, 0.4] and set(model.decision_layers()) <= set(frame.columns)
    assert frame["probability"].between(0, 1).all() and (frame["macs"] > 0).all()


def test_latency_numbers_and_dense_copy():
    model = tiny("skipnet_resnet8")
    x = image(model).tensor
    dense = dense_counterpart(model)
    pair = paired_latency(model, dense, x, {"layer2.0": {"executed": False}}, {"threshold": 0.4}, rounds=5, warmup=1)
    for measured in pair:
        assert (
            measured.runs == 5
            and 0 < measured.min_ms <= measured.q1_ms <= measured.median_ms <= measured.q3_ms <= measured.max_ms
        )
    assert dense is not model and dense_counterpart(tiny_static()) is not None
    with pytest.raises(ValueError):
        paired_latency(model, dense, x, {"nowhere": {"executed": False}})


def test_knob_tradeoff_figure_is_registered_for_methods_with_knobs():
    load_figure_modules()
    assert {"skipnet_knob_tradeoff", "dsnet_knob_tradeoff", "early_exit_knob_tradeoff"} <= set(FIGURES)
    names = ["dsnet_resnet20_fmnist", "resnet20_fmnist"]
    context = FigureContext({n: PRETRAINED / f"{n}.pt" for n in names})
    images, labels = load_test_images(limit=60)
    context._images = (images, labels)
    figure = FIGURES["dsnet_knob_tradeoff"].make(context)
    ax = figure.axes[0]
    labels_drawn = ax.get_legend_handles_labels()[1]
    assert "width_bias sweep" in labels_drawn and "static variant" in labels_drawn and "dense" in labels_drawn
