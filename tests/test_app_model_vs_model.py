"""Model against model: Inspect's two models side by side and its compact table of every bundled model, Compare's
second model on the same test set, and the knob sweep's adaptive grid (AppTest and unit tests)."""

from __future__ import annotations

import math

import pandas as pd

from helpers import page

INSPECT_TIMEOUT = 600


def _inspect(mode: str):
    at = page("inspect")
    at.radio(key="inspect-mode").set_value(mode).run(timeout=INSPECT_TIMEOUT)
    assert not at.exception, at.exception
    return at


def test_two_models_side_by_side_align_their_decisions_by_layer():
    from routescope.analysis.core.catalog import featured

    at = _inspect("Side by side")
    assert at.radio(key="side-what").value == "Two models, one image"
    flagship = featured()["skipnet"]["flagship"]
    control = featured()["skipnet"]["controls"][0]
    assert at.selectbox(key="side-model-b").value == control  # the flagship's control beside it
    markdown = " ".join(m.value for m in at.markdown)
    assert flagship in markdown and control in markdown
    tables = [t.value for t in at.dataframe]
    cost = next(t for t in tables if "model" in t.columns and "predicted" in t.columns)
    assert list(cost["model"]) == [flagship, control]
    aligned = next(t for t in tables if "layer" in t.columns and "differs" in t.columns)
    assert {flagship, control} <= set(aligned.columns)
    assert (aligned[control] == "–").all()  # the dense control decides nothing
    # two images on one model is still there
    at.radio(key="side-what").set_value("Two images, one model").run(timeout=INSPECT_TIMEOUT)
    assert not at.exception, at.exception
    assert any(m.value.startswith("**Image 2:") for m in at.markdown)


def test_across_all_models_is_one_compact_table_with_a_card_on_demand():
    from routescope.analysis.core.catalog import bundled_checkpoints, featured_names

    at = _inspect("Across all bundled models")
    table = next(t.value for t in at.dataframe if "decisions" in t.value.columns)
    bundled = bundled_checkpoints()
    assert len(table) == len(bundled)
    assert list(table["model"][:3]) == [n for n in featured_names() if n in bundled][:3]
    assert {"predicted", "confidence", "macs", "mac_ratio", "decisions"} <= set(table.columns)
    assert not at.subheader or all(s.value not in bundled for s in at.subheader)  # no card until asked
    name = featured_names()[0]
    at.selectbox(key="across-card").set_value(name).run(timeout=INSPECT_TIMEOUT)
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader if s.value in bundled] == [name]


# --- the adaptive sweep grid --------------------------------------------------------------------------------------


def _step(value: float) -> dict:
    """A curve flat everywhere but a steep change between 0.8 and 0.9 (saturated gates)."""
    level = min(max((value - 0.8) / 0.1, 0.0), 1.0)
    return {"macs_mean": 10e6 + 20e6 * level, "accuracy": 0.15 + 0.8 * level}


def test_the_adaptive_grid_samples_where_the_curve_changes():
    from routescope.analysis.core.sweeps import adaptive_values

    rows = adaptive_values(_step, 0.0, 1.0, budget=11)
    values = [r["value"] for r in rows]
    assert len(values) == 11 and values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    inside = [v for v in values if 0.75 <= v <= 1.0]
    assert len(inside) >= 7, values  # a linear grid puts 3 there
    assert any(0.8 < v < 0.9 for v in values)


def test_a_step_at_the_end_does_not_take_every_point():
    """SkipNet's threshold: MACs fall over 0-0.25, then stay flat until a cliff at exactly 1 (no gate reaches it).
    Bisection toward the cliff alone would spend the budget on 0.875, 0.9375, ... 0.9961."""
    from routescope.analysis.core.sweeps import adaptive_values

    def skipnet_like(value: float) -> dict:
        if value >= 1.0:
            return {"macs_mean": 3e6, "accuracy": 0.15}
        return {"macs_mean": 31e6 - 11e6 * min(value / 0.25, 1.0), "accuracy": 0.95}

    values = [r["value"] for r in adaptive_values(skipnet_like, 0.0, 1.0, budget=11)]
    assert any(0.0 < v < 0.25 for v in values), values  # the broad change gets points too
    assert any(0.95 < v < 1.0 for v in values), values  # and the cliff is still closed in on


def test_the_adaptive_grid_stops_after_the_current_value_keeping_the_rest():
    from routescope.analysis.core.sweeps import adaptive_values

    done: list[dict] = []
    rows = adaptive_values(_step, 0.0, 1.0, budget=11, stop=lambda: len(done) >= 3, done=done.append)
    assert [r["value"] for r in rows] == [0.0, 0.25, 0.5] == [r["value"] for r in done]


def test_a_knob_that_changes_nothing_is_flat():
    from routescope.analysis.core.sweeps import COLUMNS, adaptive_values, flat_sweep

    rows = adaptive_values(lambda v: {"macs_mean": 20e6, "accuracy": 0.94}, 0.0, 1.0, budget=7)
    assert len(rows) == 7
    gaps = pd.Series([r["value"] for r in rows]).diff().dropna()
    assert gaps.max() <= 0.25 + 1e-9  # a flat curve fills the widest gaps
    assert flat_sweep(pd.DataFrame(rows, columns=COLUMNS))
    assert not flat_sweep(pd.DataFrame(adaptive_values(_step, 0.0, 1.0, budget=7), columns=COLUMNS))


def test_the_accuracy_axis_zooms_to_the_data():
    from routescope.analysis.core.tradeoff import accuracy_range

    low, high, hidden = accuracy_range([[0.93, 0.94, 0.15], [0.935], [math.nan]])
    assert 83 <= low < 93 and 94 < high < 95 and hidden == 1
    low, high, hidden = accuracy_range([[0.90, 0.94]])
    assert low < 90 and hidden == 0


def test_the_compare_page_warns_when_the_knob_changes_nothing(monkeypatch):
    """The sweep on Compare: an adaptive sweep whose values all give the same MACs says so."""
    from routescope.analysis.core import sweeps

    def flat(model, knob, images, budget=11, low=None, high=None, stop=None, done=None, root=None):
        rows = [{"value": v, "accuracy": 0.9, "macs_mean": 1e6, "macs_min": 1e6, "macs_max": 1e6} for v in (0, 0.5, 1)]
        for row in rows:
            if done:
                done(row)
        return pd.DataFrame(rows, columns=sweeps.COLUMNS)

    import routescope.app.resources as resources

    monkeypatch.setattr(resources, "adaptive_sweep", flat)
    at = page("compare")
    at.number_input(key="sweep-count").set_value(3).run()
    assert any("one value traces" in c.value for c in at.caption)  # the estimate, before it starts
    at.toggle(key="sweep-run").set_value(True).run()
    assert not at.exception, at.exception
    assert any("changes nothing" in w.value for w in at.warning)


def test_the_training_page_opens_on_the_flagship_chain_with_whole_epochs():
    from routescope.analysis.core.catalog import featured

    flagship = featured()["skipnet"]["flagship"]
    at = page("training")
    assert at.selectbox(key="training-file").value.endswith(f"{flagship}.metrics.jsonl")
    import json

    from helpers import PRETRAINED

    chain = json.loads((PRETRAINED / "manifest.json").read_text())[flagship]["chain"]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    loss = next(c for c in charts if "Training loss" in json.dumps(c["layout"].get("title", "")))
    stages = {trace["name"] for trace in loss["data"]}
    assert {s.split(": ")[0] for s in stages} == set(chain)  # every run of the chain, first run first
    assert loss["layout"]["xaxis"]["tickformat"] == "d"
    assert any("%" in m.value for m in at.metric if m.label == "Test accuracy")
