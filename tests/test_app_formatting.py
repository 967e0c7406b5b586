"""How the app writes its numbers and its signs (issue 29): one format per column in every table (no raw MAC counts),
a legend for the routing patterns, cost deltas coloured the inverse way, latency differences inside the noise said
to be none, and Integrated Gradients' convergence delta judged against the output it explains."""

import json

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import torch

from routescope.analysis.core.latency import NO_DIFFERENCE, Latency
from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint

from helpers import TINY_META, chart_data, page, start

GREEN, GRAY, RED = 1, 2, 0  # st.metric's colours (Metric.color)


def column_formats(table) -> dict[str, dict]:
    """``{column: its config}`` of an AppTest dataframe (label, type_config with the number format)."""
    return json.loads(table.proto.columns or "{}")


@pytest.fixture
def dynamic_dir(tmp_path, monkeypatch):
    """A SkipNet and a DS-Net (tiny, random) beside the static ``tiny``."""
    save_checkpoint(tmp_path / "tiny.pt", create_model("resnet8", in_chans=1), TINY_META)
    for method in ("skipnet", "dsnet"):
        torch.manual_seed(0)
        model = create_model(f"{method}_resnet8", in_chans=1).eval()
        save_checkpoint(tmp_path / f"{method}.pt", model, {**TINY_META, "name": method, "method": method})
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    return tmp_path


# --- the formats themselves ---------------------------------------------------------------------------------------


def test_one_format_per_column_scaled_to_its_unit():
    from routescope.app.formatting import shown, table_height

    frame = pd.DataFrame(
        {
            "macs_mean": [20193136.0],
            "accuracy": [0.9422],
            "mac_ratio": [0.65],
            "throughput": [6364.5503],
            "latency_ms": [1.23456],
            "params": [275877],
            "layer1.1/p": [0.123456789],
            "other": [0.948051948051948],
        }
    )
    data, config = shown(frame)
    assert data.iloc[0].to_dict() == {
        "macs_mean": 20.19,
        "accuracy": 94.2,
        "mac_ratio": 65.0,
        "throughput": 6365.0,
        "latency_ms": 1.235,
        "params": 0.28,
        "layer1.1/p": 0.123,
        "other": 0.9481,
    }
    formats = {c: v["type_config"]["format"] for c, v in config.items()}
    assert formats["macs_mean"] == "%.2f M" and config["macs_mean"]["label"] == "mean MACs"
    assert formats["accuracy"] == "%.1f%%" and formats["mac_ratio"] == "%.0f%%"
    assert formats["latency_ms"] == "%.2f ms" and formats["throughput"] == "localized"
    assert frame["macs_mean"].iloc[0] == 20193136.0, "the caller's frame (downloads) keeps the raw numbers"
    assert table_height(4) == 35 * 5 + 3, "a header and four rows: no empty row"
    assert table_height(500, most=8) == table_height(8)


def test_cost_and_latency_deltas_read_the_right_way():
    from routescope.app.formatting import cost_delta, latency_delta

    assert cost_delta(20.19e6, 31.02e6) == ("-35% vs the dense 31.02 M", "inverse")  # cheaper: green, pointing down
    assert cost_delta(31.83e6, 31.02e6) == ("+3% vs the dense 31.02 M", "inverse")  # dearer: red, pointing up
    assert cost_delta(31.02e6, 31.02e6) == ("same as the dense 31.02 M", "off")
    noisy, dense = Latency(1.23, 1.0, 2.14, 0.9, 3.0, 16), Latency(1.40, 1.2, 1.9, 1.1, 2.5, 16)
    assert latency_delta(noisy, dense) == (f"{NO_DIFFERENCE} from the dense 1.40 ms", "off")
    fast = Latency(1.0, 0.95, 1.05, 0.9, 1.2, 16)
    assert latency_delta(fast, dense) == ("-29% vs the dense 1.40 ms", "inverse")


# --- on the pages -------------------------------------------------------------------------------------------------


def test_compare_tables_show_millions_not_mac_counts(models_dir):
    at = page("compare")
    assert not at.exception, at.exception
    table = at.dataframe[-1]  # the per-image table
    formats = column_formats(table)
    assert formats["macs"]["type_config"]["format"] == "%.2f M"
    assert formats["confidence"]["type_config"]["format"] == "%.1f%%"
    for frame in (d.value for d in at.dataframe):
        for column in [c for c in frame.columns if str(c).startswith("macs")]:
            assert frame[column].abs().max() < 1e4, f"{column} shows raw MAC counts"
    mean = next(m for m in at.metric if m.label == "Mean MACs / image")
    assert mean.value.endswith(" M") and mean.proto.color == GRAY, "a static model costs what the dense one does"


def test_routing_patterns_have_a_legend_and_readable_widths(dynamic_dir):
    at = page("compare")
    at.sidebar.selectbox[0].set_value("skipnet").run()
    assert not at.exception, at.exception
    legend = next(c.value for c in at.caption if c.value.startswith("**How to read a pattern.**"))
    assert "1 = block executed, 0 = skipped" in legend and "layer1.0 has no gate (it always runs)" in legend
    assert "in network order (layer2.0, layer3.0)" in legend, "ResNet-8: one block per stage, the first ungated"
    skip = next(s for s in at.caption if "has no gate" in s.value and "not shown" in s.value)
    assert skip.value.startswith("layer1.0"), "the skip-ratio chart says which block it leaves out"

    at.sidebar.selectbox[0].set_value("dsnet").run()
    assert not at.exception, at.exception
    legend = next(c.value for c in at.caption if c.value.startswith("**How to read a pattern.**"))
    assert "fraction of the stage's channels" in legend
    patterns = next(d.value for d in at.dataframe if "images" in d.value.columns)
    assert all(p.count("/") == 1 for p in patterns["pattern"]), "one width per stage, always /-separated"
    stages = {float(w) for p in patterns["pattern"] for w in p.split("/")}
    assert stages <= {0.25, 0.5, 0.75, 1.0}, "widths, not choice indices"


def test_width_gate_columns_are_labelled_with_widths(dynamic_dir):
    at = start()
    at.sidebar.selectbox[0].set_value("dsnet").run()
    assert not at.exception, at.exception
    (gates,) = [d for d in chart_data(at) if d["layout"].get("title", {}).get("text") == "Width-gate probabilities"]
    assert gates["data"][0]["x"] == ["0.25× width", "0.5× width", "0.75× width", "1× width"]


def test_mac_savings_are_green_and_point_down(dynamic_dir):
    at = start()
    at.sidebar.selectbox[0].set_value("skipnet").run()
    at.toggle(key="img0-intervene").set_value(True).run()
    for gate in [t for t in at.toggle if t.key and t.key.startswith("img0-ctl-")]:
        gate.set_value(False).run()  # skip every gated block: the intervened run saves MACs
    assert not at.exception, at.exception
    card = next(m for m in at.metric if m.label == "MACs (intervened)")
    assert card.delta.startswith("-") and card.delta.endswith("vs the dense " + card.delta.split("dense ")[1])
    assert card.proto.color == GREEN, "fewer MACs is good: green, the arrow pointing down (inverse colours)"


@pytest.mark.parametrize(
    "timed, words, colour",
    [
        ((Latency(1.23, 1.0, 2.14, 0.9, 3.0, 16), Latency(1.40, 1.2, 1.9, 1.1, 2.5, 16)), NO_DIFFERENCE, GRAY),
        ((Latency(1.0, 0.95, 1.05, 0.9, 1.2, 16), Latency(1.40, 1.2, 1.9, 1.1, 2.5, 16)), "-29% vs the dense", GREEN),
    ],
)
def test_latency_inside_the_noise_is_no_measurable_difference(dynamic_dir, monkeypatch, timed, words, colour):
    from routescope import app
    import routescope.app.resources  # noqa: F401

    monkeypatch.setattr(app.resources, "paired_latency", lambda *args, **kwargs: timed)
    at = start()
    at.sidebar.selectbox[0].set_value("skipnet").run()
    at.toggle(key="img0-intervene").set_value(True).run()
    assert not at.exception, at.exception
    cards = [m for m in at.metric if m.label.startswith("Latency")]
    assert len(cards) == 2 and all(words in m.delta and m.proto.color == colour for m in cards), cards
    assert any("Interquartile range 1.00" in c.value or "Interquartile range 0.95" in c.value for c in at.caption)


@pytest.mark.parametrize("delta, warned", [(0.68, True), (0.01, False)])
def test_integrated_gradients_warns_when_its_delta_is_large(models_dir, monkeypatch, delta, warned):
    from routescope.analysis.core import attributions

    def explained(model, x, target, method="integrated_gradients"):
        heatmap = np.linspace(-1, 1, 28 * 28).reshape(28, 28)
        return attributions.Attribution(heatmap, "class 'x'", "Integrated Gradients", delta, 2.0)

    monkeypatch.setattr(attributions, "explain_prediction", explained)
    at = start()
    at.toggle(key="img0-explain").set_value(True).run()
    assert not at.exception, at.exception
    assert any(f"Convergence delta {delta:.2g} against an output change of 2" in c.value for c in at.caption)
    assert any("Read this map with care" in w.value for w in at.warning) == warned
    (figure,) = [d for d in chart_data(at) if "Integrated Gradients" in d["layout"].get("title", {}).get("text", "")]
    kinds = [t["type"] for t in figure["data"]]
    assert kinds == ["heatmap"] * 3, "the input in grey, the map over it, the map alone"
