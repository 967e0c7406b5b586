"""Interventions and knobs: a forced decision really runs the forced path, knobs move settings per call, and
neither touches the model."""

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from routescope.analysis import inspect, sweep
from routescope.analysis.core.catalog import PRETRAINED, sample_images
from routescope.analysis.core.table import load_test_images
from routescope.analysis.core.testsets import in_memory_test_set
from routescope.models import create_model, load_checkpoint
from routescope.models.trace import traced_forward

from helpers import routing_decisions

SKIPNET = PRETRAINED / "skipnet_resnet20_fmnist_a0.75_fta6kd.pt"


def forced_forward(model, x, overrides=None, knobs=None):
    """The traced forward under FlopCounterMode: (logits, trace, MACs PyTorch counted on that very forward)."""
    with FlopCounterMode(display=False) as counter:
        logits, trace = traced_forward(model, x, overrides=overrides, knobs=knobs)
    return logits, trace, counter.get_total_flops() // 2


def entries(trace, kind):
    return {d["layer"]: d for d in trace.decisions[0] if d["kind"] == kind}


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def block_macs(block, x_in) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        block.residual(x_in)
    return counter.get_total_flops() // 2


def test_skip_override_changes_macs_by_the_block_and_later_gates_respond(x):
    model = create_model("skipnet_resnet20", in_chans=1).eval()
    _, plain, plain_macs = forced_forward(model, x)
    assert all(d["executed"] for d in plain.decisions[0])  # gates start open
    _, forced, forced_macs = forced_forward(model, x, {"layer2.1": {"executed": False}})
    skip = entries(forced, "skip")
    assert skip["layer2.1"] == {**skip["layer2.1"], "executed": False, "forced": True}
    assert "forced" not in skip["layer2.2"]
    assert float(forced.macs[0]) == pytest.approx(forced_macs) and float(plain.macs[0]) == pytest.approx(plain_macs)
    block = dict(model.named_blocks())["layer2.1"]
    feature = torch.zeros(1, block.conv1.in_channels, 14, 14)
    assert plain_macs - forced_macs == block_macs(block, feature)
    # later decisions respond: in a trained SkipNet the later gates read a different input (and RNN state)
    trained = load_checkpoint(SKIPNET)
    image = _normalized(trained, load_test_images()[0][:1])
    _, plain, _ = forced_forward(trained, image)
    _, forced, forced_macs = forced_forward(
        trained, image, {"layer2.0": {"executed": not entries(plain, "skip")["layer2.0"]["executed"]}}
    )
    later = [layer for layer in trained.gate_names if layer > "layer2.0"]
    assert any(entries(forced, "skip")[g]["probability"] != entries(plain, "skip")[g]["probability"] for g in later)
    assert float(forced.macs[0]) == pytest.approx(forced_macs)


def test_width_override_runs_the_forced_width(x):
    model = create_model("dsnet_resnet20", in_chans=1).eval()
    _, plain, plain_macs = forced_forward(model, x)
    narrow = model.widths_choices[0]
    stage = model.gate_names[-1]
    _, forced, forced_macs = forced_forward(model, x, {stage: {"width": narrow}})
    entry = entries(forced, "width")[stage]
    assert (
        entry["forced"]
        and entry["width"] == narrow
        and entry["channels"] == model.stage_channels[int(stage[-1]) - 1][0]
    )
    assert float(forced.macs[0]) == pytest.approx(forced_macs)
    if entries(plain, "width")[stage]["width"] != narrow:
        assert forced_macs < plain_macs
    with pytest.raises(ValueError, match="not one of"):
        traced_forward(model, x, overrides={stage: {"width": 0.3}})


def test_routing_override_mixes_the_forced_experts(x):
    model = create_model("condconv_resnet8", in_chans=1).eval()
    layer = model.routing_layers()[0]
    experts = len(entries(traced_forward(model, x)[1], "routing")[layer]["weights"])
    one_hot = [1.0] + [0.0] * (experts - 1)
    logits, forced, forced_macs = forced_forward(model, x, {layer: {"weights": one_hot}})
    assert entries(forced, "routing")[layer]["weights"] == one_hot and entries(forced, "routing")[layer]["forced"]
    assert float(forced.macs[0]) == pytest.approx(forced_macs)
    block = dict(model.routing_blocks())[layer]
    with torch.no_grad():  # the block really ran with expert 0's kernel alone
        assert torch.allclose(block.conv1.combined_kernel(torch.tensor([one_hot]))[0], block.conv1.experts[0])
    with pytest.raises(ValueError, match="expert weights"):
        traced_forward(model, x, overrides={layer: {"weights": [1.0]}})


def confident_first_exit():
    model = create_model("early_exit_resnet20", in_chans=1).eval()
    with torch.no_grad():
        for i, head in enumerate(model.exits):
            head.fc.weight.zero_()
            head.fc.bias.zero_()
        model.exits[0].fc.bias[0] = 50.0
    return model


def test_exit_override_refuses_and_forces_exits(x):
    model = confident_first_exit()
    first, third = model.exit_names[0], model.exit_names[2]
    _, plain, plain_macs = forced_forward(model, x)
    assert [d["layer"] for d in plain.decisions[0]] == [first]
    _, refused, refused_macs = forced_forward(model, x, {first: {"exited": False}})
    visited = refused.decisions[0]
    assert visited[0]["forced"] and not visited[0]["exited"] and visited[-1]["layer"] == "fc"  # later exits respond
    assert float(refused.macs[0]) == pytest.approx(refused_macs) and refused_macs > plain_macs
    _, taken, taken_macs = forced_forward(model, x, {first: {"exited": False}, third: {"exited": True}})
    assert [d["layer"] for d in taken.decisions[0]] == list(model.exit_names[:3])
    assert plain_macs < taken_macs < refused_macs and float(taken.macs[0]) == pytest.approx(taken_macs)
    with pytest.raises(ValueError, match="cannot be refused"):
        traced_forward(model, x, overrides={first: {"exited": False}, "fc": {"exited": False}})


def test_unknown_layers_fields_and_knobs_are_refused(x):
    model = create_model("skipnet_resnet8", in_chans=1).eval()
    with pytest.raises(ValueError, match="no decision at"):
        traced_forward(model, x, overrides={"layer9.9": {"executed": False}})
    with pytest.raises(ValueError, match="can force executed"):
        traced_forward(model, x, overrides={model.gate_names[0]: {"width": 0.5}})
    with pytest.raises(ValueError, match="unknown knob"):
        traced_forward(model, x, knobs={"temperature": 2})
    with pytest.raises(ValueError, match="outside"):
        traced_forward(model, x, knobs={"threshold": 2})
    assert create_model("resnet8", in_chans=1).knobs() == {} and create_model("condconv_resnet8").knobs() == {}


def test_knobs_at_their_default_reproduce_the_model():
    images, labels = load_test_images()
    for name in ("skipnet_resnet20_fmnist_a0.75_fta6kd", "dsnet_resnet20_fmnist_grid4_hw6_long"):
        model = load_checkpoint(PRETRAINED / f"{name}.pt")
        ((knob, spec),) = model.knobs().items()
        test_set = in_memory_test_set(images[:200], labels[:200], model.meta)
        table = sweep.knob_sweep(model, knob, [spec["default"]], test_set)
        plain = sweep.knob_sweep(model, knob, [spec["default"]], test_set)
        _, trace = traced_forward(model, _normalized(model, images[:200]))
        assert table["macs_mean"][0] == pytest.approx(trace.macs.mean().item()) == pytest.approx(plain["macs_mean"][0])


def _normalized(model, images):
    from routescope.models.data import normalize

    return normalize(images, model.meta["mean"], model.meta["std"])


def test_knobs_move_the_cost_monotonically():
    images, labels = load_test_images()
    model = load_checkpoint(PRETRAINED / "dsnet_resnet20_fmnist_grid4_hw6_long.pt")
    table = sweep.knob_sweep(
        model, "width_bias", [-5, 0, 5], in_memory_test_set(images[:100], labels[:100], model.meta)
    )
    assert table["macs_mean"].is_monotonic_increasing and table["macs_mean"].iloc[0] < table["macs_mean"].iloc[-1]
    skipnet = load_checkpoint(SKIPNET)
    table = sweep.knob_sweep(
        skipnet, "threshold", [0.0, 0.5, 1.0], in_memory_test_set(images[:100], labels[:100], skipnet.meta)
    )
    assert table["macs_mean"].is_monotonic_decreasing and table["macs_mean"].iloc[0] > table["macs_mean"].iloc[-1]


def test_interventions_never_mutate_the_model(x):
    model = load_checkpoint(SKIPNET)
    state = copy.deepcopy(model.state_dict())
    traced_forward(
        model,
        _normalized(model, torch.zeros(1, 1, 28, 28, dtype=torch.uint8)),
        overrides={"layer2.1": {"executed": False}},
        knobs={"threshold": 0.9},
    )
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "overrides") and model.knobs()["threshold"]["default"] == 0.5


def test_inspect_cli_prints_the_intervened_trace(capsys):
    image = str(next(p for p in sample_images() if p.name == "bag-1.png"))
    assert (
        inspect.main(
            [
                "--checkpoint",
                str(SKIPNET),
                image,
                "--no-structure",
                "--override",
                "layer2.1.executed=false",
                "--knob",
                "threshold=0.6",
            ]
        )
        == 0
    )
    import json

    record = json.loads(capsys.readouterr().out)
    layer = next(d for d in record["decisions"] if d["layer"] == "layer2.1")
    assert layer["executed"] is False and layer["forced"] is True
    assert inspect.main(["--checkpoint", str(SKIPNET), image, "--override", "layer2.1.executed"]) == 2
    assert "LAYER.FIELD=VALUE" in capsys.readouterr().err


def test_sweep_cli_json(capsys):
    import json

    assert sweep.main(["--checkpoint", str(SKIPNET), "--knob", "threshold", "--values", "0.3,0.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["value"] for r in rows] == [0.3, 0.5]
    assert set(rows[0]) == {"value", "accuracy", "macs_mean", "macs_min", "macs_max"}
    assert sweep.main(["--checkpoint", str(SKIPNET), "--knob", "nope", "--values", "1"]) == 2


def _per_image_overrides(model, n: int) -> list[dict]:
    """A different forced decision at every decision layer for each of ``n`` images (the final exit left free)."""
    out = []
    for i in range(n):
        overrides = {}
        for j, (layer, kind) in enumerate(model.decision_layers().items()):
            if kind == "skip":
                overrides[layer] = {"executed": (i + j) % 2 == 0}
            elif kind == "width":
                overrides[layer] = {"width": model.widths_choices[(i + j) % len(model.widths_choices)]}
            elif kind == "routing":
                experts = model.get_submodule(layer).conv1.num_experts
                chosen = ((i + j) % experts, (i + j + 1) % experts)  # two experts: alone, too, it runs the mixture
                overrides[layer] = {"weights": [0.5 if e in chosen else 0.0 for e in range(experts)]}
            elif kind == "exit" and layer != "fc" and j <= i % 5 + 2:  # later exits: never reached
                overrides[layer] = {"exited": j == i % 5 + 2}
        out.append(overrides)
    return out


@pytest.mark.parametrize(
    "name",
    [
        "skipnet_resnet20_fmnist_a0.75_fta6kd",
        "dsnet_resnet20_fmnist_sn12_grid4_hw6",
        "condconv_resnet20_fmnist",
        "early_exit_resnet20_fmnist",
    ],
)
def test_per_row_overrides_force_each_image_as_alone(name):
    """A batch forced image by image (``PerRow``, what the bench's batched rows use) computes, decides and counts
    what each image forced alone does, and a plain forced forward takes the same values."""
    from routescope.models.trace import PerRow, check_interventions
    from routescope.models.trace import forced_forward as plain_forced_forward

    model = load_checkpoint(PRETRAINED / f"{name}.pt")
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    singles = _per_image_overrides(model, len(x))
    batch = PerRow.combine(singles)
    logits, trace = traced_forward(model, x, overrides=batch)
    for i in range(len(x)):
        one, one_trace = traced_forward(model, x[i : i + 1], overrides=singles[i])
        torch.testing.assert_close(logits[i : i + 1], one, atol=1e-4, rtol=1e-5)
        assert routing_decisions(trace)[i] == routing_decisions(one_trace)[0]
        assert trace.macs[i].item() == pytest.approx(one_trace.macs[0].item(), rel=1e-9)
    with torch.inference_mode():
        torch.testing.assert_close(plain_forced_forward(model, x, batch), logits, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="one value for each"):
        traced_forward(model, x[:2], overrides=batch)
    layer = next(iter(batch))
    field = next(iter(batch[layer]))
    with pytest.raises(ValueError, match=layer):
        check_interventions(model, {layer: {field: PerRow(["nonsense"] * len(x))}}, None)
    some = {layer: {field: PerRow([batch[layer][field][0]] + [None] * (len(x) - 1))}}
    with pytest.raises(ValueError, match="every row that reaches it"):
        traced_forward(model, x, overrides=some)


def test_per_row_one_expert_each_runs_each_experts_images_together():
    """CondConv forced onto one expert per image (what the bench's batched rows force): each expert's images run
    its kernel alone, as each image forced alone does (``CondConv2d.expert_forward``), with the same MACs."""
    from routescope.models.layers.condconv import CondConv2d
    from routescope.models.trace import PerRow

    model = load_checkpoint(PRETRAINED / "condconv_resnet20_fmnist.pt")
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    layers = [name for name, kind in model.decision_layers().items() if kind == "routing"]
    singles = [
        {layer: {"weights": [float(e == (i + j) % 4) for e in range(4)]} for j, layer in enumerate(layers)}
        for i in range(6)
    ]
    mixed = []
    original = CondConv2d._mixed
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CondConv2d, "_mixed", lambda self, *a: mixed.append(1) or original(self, *a))
        logits, trace = traced_forward(model, x, overrides=PerRow.combine(singles))
    assert not mixed, "no kernel mixture runs: each image's one expert"
    for i in range(len(x)):
        one, one_trace = traced_forward(model, x[i : i + 1], overrides=singles[i])
        torch.testing.assert_close(logits[i : i + 1], one, atol=1e-4, rtol=1e-5)
        assert routing_decisions(trace)[i] == routing_decisions(one_trace)[0]
        assert trace.macs[i].item() == pytest.approx(one_trace.macs[0].item(), rel=1e-9)
