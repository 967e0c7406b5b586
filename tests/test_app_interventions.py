"""AppTest of "Question the routing": every decision's control and the knob sliders change the intervened run
(MACs, forced decisions), a shared URL restores the view and a bad one is a message, the perturbation sweep,
the Compare page's knob sweep and routing patterns."""

import json

import pytest
import streamlit as st
import torch

from routescope.analysis.core.catalog import sample_images
from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint

from helpers import TINY_META, array_shape, chart_data, fingerprint, page, plotly_values, start

SAMPLE = sample_images()[0].name
TINY = {
    "skipnet": "skipnet_resnet8",
    "dsnet": "dsnet_resnet8",
    "early_exit": "early_exit_resnet8",
    "condconv": "condconv_resnet8",
}


@pytest.fixture
def dynamic_dir(tmp_path, monkeypatch):
    """Tiny random checkpoints of every method with decisions, named by method (plus the static ``tiny``)."""
    save_checkpoint(tmp_path / "tiny.pt", create_model("resnet8", in_chans=1), TINY_META)
    for method, arch in TINY.items():
        torch.manual_seed(0)
        save_checkpoint(
            tmp_path / f"{method}.pt",
            create_model(arch, in_chans=1).eval(),
            {**TINY_META, "name": method, "method": method},
        )
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    return tmp_path


def inspect_with(model: str, params: dict | None = None):
    at = start(params=params)
    at.sidebar.selectbox[0].set_value(model).run()
    assert not at.exception, at.exception
    return at


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def intervene(at, key: str = "img0"):
    at.toggle(key=f"{key}-intervene").set_value(True).run()
    assert not at.exception, at.exception
    return at


def changed(at) -> "pd.DataFrame":  # noqa: F821
    tables = [d.value for d in at.dataframe if "forced" in d.value.columns]
    return tables[0] if tables else None


def test_panel_is_closed_by_default(dynamic_dir):
    at = inspect_with("skipnet")
    assert [m.label for m in at.metric] == ["Prediction", "MACs executed"]
    assert not [t for t in at.toggle if t.key and "-ctl-" in t.key]


def test_toggle_a_gate_changes_macs_and_marks_it_forced(dynamic_dir):
    at = intervene(inspect_with("skipnet"))
    assert metric(at, "MACs (original)") == metric(at, "MACs (intervened)")
    assert changed(at) is None and any("No decision differs" in c.value for c in at.caption)
    gate = next(t for t in at.toggle if t.key and t.key.startswith("img0-ctl-"))
    layer = gate.key.removeprefix("img0-ctl-").rsplit("-", 1)[0]
    was = gate.value
    gate.set_value(not was).run()
    assert not at.exception, at.exception
    assert metric(at, "MACs (original)") != metric(at, "MACs (intervened)")
    table = changed(at)
    row = table[table["layer"] == layer].iloc[0]
    assert row["forced"] and row["original"] == str(was) and row["intervened"] == str(not was)
    assert at.toggle(key=gate.key).value is (not was), "the control shows the forced decision"
    assert f"{layer}.executed={json.dumps(not was)}" in at.query_params["override"], "the URL carries it"
    at.button(key="img0-reset").click().run()
    assert metric(at, "MACs (original)") == metric(at, "MACs (intervened)") and changed(at) is None


def test_knob_slider_moves_the_intervened_run(dynamic_dir):
    at = intervene(inspect_with("skipnet"))
    at.slider(key="img0-knob-threshold").set_value(1.0).run()  # no gate reaches 1: every gated block is skipped
    assert not at.exception, at.exception
    assert float(metric(at, "MACs (intervened)").split()[0]) < float(metric(at, "MACs (original)").split()[0])
    assert not any(t.value for t in at.toggle if t.key and t.key.startswith("img0-ctl-"))
    assert at.query_params["knob"] in ("threshold=1", ["threshold=1"])


def test_width_select_on_a_dsnet(dynamic_dir):
    at = intervene(inspect_with("dsnet"))
    widths = [s for s in at.selectbox if s.key and s.key.startswith("img0-ctl-")]
    assert widths and all(
        s.options
        == [
            f"{w:g}× ({round(w * int(s.options[-1].split()[3]))} of {s.options[-1].split()[3]} channels)"
            for w in (0.25, 0.5, 0.75, 1.0)
        ]
        for s in widths
    )
    target = 0.25 if widths[0].value != 0.25 else 1.0
    widths[0].set_value(target).run()
    assert not at.exception, at.exception
    assert metric(at, "MACs (original)") != metric(at, "MACs (intervened)")
    table = changed(at)
    assert table["forced"].any() and f"{target:g}" in set(table["intervened"])


def test_expert_select_on_a_condconv(dynamic_dir):
    at = intervene(inspect_with("condconv"))
    experts = [s for s in at.selectbox if s.key and s.key.startswith("img0-ctl-")]
    assert experts and experts[0].value == "as routed"
    experts[0].set_value("only expert 2").run()
    assert not at.exception, at.exception
    table = changed(at)
    assert table.iloc[0]["forced"] and table.iloc[0]["intervened"] == "[0, 0, 1, 0]"
    assert at.selectbox(key=experts[0].key).value == "only expert 2"


def test_force_and_refuse_an_exit(dynamic_dir):
    at = intervene(inspect_with("early_exit"))
    exits = [t for t in at.toggle if t.key and t.key.startswith("img0-ctl-")]
    final = next(t for t in exits if t.key == "img0-ctl-fc-exited")
    assert final.disabled, "the final exit cannot be refused"
    first = exits[0]
    assert first.key != final.key
    leave = not first.value
    first.set_value(leave).run()
    assert not at.exception, at.exception
    table = changed(at)
    assert table.iloc[0]["forced"] and table.iloc[0]["intervened"] == str(leave)
    if leave:
        assert float(metric(at, "MACs (intervened)").split()[0]) < float(metric(at, "MACs (original)").split()[0])


def test_url_restores_the_view(dynamic_dir):
    params = {
        "model": "skipnet",
        "image": sample_images()[1].name,
        "override": ["layer2.0.executed=false"],
        "knob": ["threshold=0.3"],
    }
    at = start(params=params)
    assert at.sidebar.selectbox[0].value == "skipnet"
    assert at.multiselect(key="inspect-samples").value == [sample_images()[1].name]
    assert at.toggle(key="img0-intervene").value and at.slider(key="img0-knob-threshold").value == 0.3
    assert at.toggle(key="img0-ctl-layer2.0-executed").value is False
    table = changed(at)
    assert table is None or table[table["layer"] == "layer2.0"]["forced"].all()
    assert not at.error and not at.warning


@pytest.mark.parametrize(
    "params, message",
    [
        ({"model": "nope"}, "not bundled"),
        ({"model": "skipnet", "image": "missing.png"}, "not a sample image"),
        ({"model": "skipnet", "override": ["layer9.9.executed=false"]}, "no decision at 'layer9.9'"),
        ({"model": "skipnet", "override": ["garbage"]}, "not LAYER.FIELD=VALUE"),
        ({"model": "skipnet", "knob": ["threshold=7"]}, "outside"),
        ({"model": "dsnet", "override": ["layer2.width=0.3"]}, "not one of"),
    ],
)
def test_bad_url_is_a_message(dynamic_dir, params, message):
    at = start(params=params)
    if "override" in params and "width" in params["override"][0]:
        intervene(at)  # a well-formed override the model refuses only when it runs
    messages = [m.value for m in [*at.error, *at.warning]]
    assert any(message in m for m in messages), messages


def test_perturbation_view(dynamic_dir):
    at = inspect_with("skipnet")
    at.toggle(key="img0-perturb").set_value(True).run()
    at.selectbox(key="img0-ptype").set_value("occlusion").run()
    assert not at.exception, at.exception
    (figure,) = [
        d for d in chart_data(at) if d["layout"].get("title", {}).get("text", "").startswith("Perturbation sweep")
    ]
    from routescope.app.resources import load_bundled

    probability, macs, decisions = figure["data"]
    assert macs["name"] == "MACs" and decisions["type"] == "heatmap"
    assert decisions["y"] == list(load_bundled("skipnet").decision_layers()), "one row per gated block"
    assert all(set(row) <= {"0", "1"} for row in decisions["text"]), "gate bits"
    assert len(plotly_values(probability["x"])) == 11 and array_shape(decisions["z"]) == (len(decisions["y"]), 11)


def test_compare_sweep_and_patterns(dynamic_dir):
    at = page("compare")
    at.sidebar.selectbox[0].set_value("skipnet").run()
    assert not at.exception, at.exception
    patterns = next(d.value for d in at.dataframe if "pattern" in d.value.columns and "images" in d.value.columns)
    assert patterns["images"].sum() == 500
    choice = at.selectbox(key="pattern-filter")
    choice.set_value(choice.options[1]).run()
    table = at.dataframe[-1].value
    assert len(table) == patterns["images"].iloc[0] and table["pattern"].nunique() == 1, "the table is filtered"
    assert any(d["layout"].get("title", {}).get("text", "").startswith("Decision map") for d in chart_data(at))
    at.number_input(key="sweep-count").set_value(3).run()
    at.toggle(key="sweep-run").set_value(True).run()
    assert not at.exception, at.exception
    (figure,) = [d for d in chart_data(at) if d["layout"].get("title", {}).get("text", "").startswith("Knob sweep")]
    assert len(plotly_values(figure["data"][0]["x"])) == 3 and figure["data"][1]["marker"]["symbol"] == "star"


def test_compare_without_decisions_is_a_note(dynamic_dir):
    at = page("compare")
    at.sidebar.selectbox[0].set_value("tiny").run()
    assert any("decides nothing per image" in c.value for c in at.caption)


def test_interventions_never_mutate_the_cached_model(dynamic_dir):
    from routescope.app.resources import load_bundled

    shared = {name: load_bundled(name) for name in TINY}
    before = {name: fingerprint(model) for name, model in shared.items()}
    for name in TINY:
        at = intervene(inspect_with(name))
        control = next(
            w for w in [*at.toggle, *at.selectbox] if w.key and w.key.startswith("img0-ctl-") and not w.disabled
        )
        control.set_value(not control.value if isinstance(control.value, bool) else control.options[-1]).run()
        for knob in [s for s in at.slider if s.key and "-knob-" in s.key]:
            knob.set_value(knob.max).run()
        at.toggle(key="img0-perturb").set_value(True).run()
        assert not at.exception, (name, at.exception)
    assert {name: load_bundled(name) for name in TINY} == shared
    assert {name: fingerprint(model) for name, model in shared.items()} == before


def test_refuse_the_exit_of_the_bundled_early_exit_model(tmp_path, monkeypatch):
    """With the trained early-exit ResNet (once bundled): refusing the exit an image took sends it on, with more
    MACs."""
    import shutil

    from routescope.analysis.core.catalog import PRETRAINED

    bundled = PRETRAINED / "early_exit_resnet20_fmnist.pt"
    if not bundled.exists():
        pytest.skip(
            "models/pretrained/early_exit_resnet20_fmnist.pt is not there yet (the tiny model covers the controls)"
        )
    shutil.copy(bundled, tmp_path / bundled.name)
    monkeypatch.setenv("ROUTESCOPE_MODELS", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = intervene(start())
    taken = next(t for t in at.toggle if t.key and t.key.startswith("img0-ctl-") and t.value)
    if taken.disabled:
        pytest.skip("the sample image leaves at the final exit: there is no early exit to refuse")
    taken.set_value(False).run()
    assert not at.exception, at.exception
    assert float(metric(at, "MACs (intervened)").split()[0]) > float(metric(at, "MACs (original)").split()[0])
    assert changed(at).iloc[0]["forced"]


def test_switching_model_starts_unforced_and_the_url_follows(dynamic_dir):
    at = intervene(inspect_with("skipnet"))
    gate = next(t for t in at.toggle if t.key and t.key.startswith("img0-ctl-"))
    gate.set_value(not gate.value).run()
    assert "override" in at.query_params
    at.multiselect(key="inspect-samples").set_value([sample_images()[0].name, sample_images()[1].name]).run()
    assert len(at.multiselect(key="inspect-samples").value) == 2, "the URL does not overwrite later picks"
    at.sidebar.selectbox[0].set_value("dsnet").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert metric(at, "MACs (original)") == metric(at, "MACs (intervened)") and changed(at) is None
    assert at.query_params["model"] == "dsnet" and "override" not in at.query_params
