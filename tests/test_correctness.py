"""Results that must not depend on how a model is called: the grad mode, the override's spelling, the inference
form, the timing path or the device (issue "Correct on every page, input and device")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools import bench, device_check
from routescope.analysis import inspect as inspect_cli
from routescope.analysis.core.catalog import bundled_checkpoints
from routescope.analysis.core.latency import paired_latency
from routescope.models import load_checkpoint
from routescope.models.decisions import decision_kinds
from routescope.models.devices import default_device, resolve_device
from routescope.models.errors import UsageError
from routescope.models.layers.fused import fused_ops, runs_compiled
from routescope.models.trace import check_interventions, forced_forward, traced_forward

from helpers import every_bundled_checkpoint, flagships

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained"
SKIPNET = PRETRAINED / "skipnet_resnet20_fmnist_a0.75_fta6kd.pt"
SAMPLE = Path(__file__).resolve().parent.parent / "models" / "assets" / "samples"


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_flagships_cover_every_decision_kind(loaded_checkpoint):
    kinds = set()
    for path in flagships().values():
        model = loaded_checkpoint(path)
        kinds |= set(model.decision_layers().values())
    assert kinds == set(decision_kinds("image"))


@pytest.mark.parametrize("name", list(flagships()))
def test_macs_are_the_same_in_every_grad_mode(name, images, loaded_checkpoint):
    """``inference_mode`` hands composite ops (conv2d, linear) to the counter undecomposed: they must still count."""
    model = loaded_checkpoint(flagships()[name])
    counted = {}
    for mode in (torch.inference_mode, torch.no_grad, torch.enable_grad):
        with mode():
            logits, trace = traced_forward(model, images)
        counted[mode.__name__] = (trace.macs.tolist(), [[d["layer"] for d in ds] for ds in trace.decisions])
    grad = counted["enable_grad"]
    assert min(grad[0]) > 1e6, "a forward of these nets is millions of MACs"
    assert counted["inference_mode"] == grad and counted["no_grad"] == grad


@pytest.mark.parametrize(
    "text,executed",
    [
        ("True", True),
        ("False", False),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("FALSE", False),
    ],
)
def test_override_spellings_force_what_they_say(text, executed, capsys):
    """The string "False" is truthy in Python: the CLI forced the block on. Every spelling goes through one parser
    and is typed as the kind declares the field."""
    sample = sorted(SAMPLE.glob("*.png"))[0]
    code = inspect_cli.main(
        ["--checkpoint", str(SKIPNET), str(sample), "--no-structure", "--override", f"layer2.1.executed={text}"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    entry = next(d for d in record["decisions"] if d["layer"] == "layer2.1")
    assert entry["executed"] is executed and entry["forced"] is True


@pytest.mark.parametrize(
    "override,named",
    [
        ("layer2.1.executed=junk", "layer2.1.executed"),
        ("layer2.1.executed=0.5", "layer2.1.executed"),
        ("layer2.1.executed=[1]", "layer2.1.executed"),
    ],
)
def test_override_of_the_wrong_type_is_a_clear_error(override, named, capsys):
    code = inspect_cli.main(["--checkpoint", str(SKIPNET), "x.png", "--override", override])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "true or false" in err


def test_typed_overrides_for_every_forcible_field():
    model = load_checkpoint(flagships()["dsnet_resnet20_fmnist_sn12_grid4_hw6"])
    layer = next(iter(model.decision_layers()))
    assert check_interventions(model, {layer: {"width": "0.5"}}, {})[0] == {layer: {"width": 0.5}}
    with pytest.raises(ValueError, match=f"{layer}.width takes a number"):
        check_interventions(model, {layer: {"width": "wide"}}, {})
    condconv = load_checkpoint(flagships()["condconv_resnet20_fmnist"])
    layer = next(iter(condconv.decision_layers()))
    assert check_interventions(condconv, {layer: {"weights": "[1, 0, 0, 0]"}}, {})[0][layer]["weights"] == [
        1.0,
        0,
        0,
        0,
    ]
    with pytest.raises(ValueError, match="list of numbers"):
        check_interventions(condconv, {layer: {"weights": "[true]"}}, {})
    with pytest.raises(ValueError, match="knob threshold takes a number"):
        check_interventions(load_checkpoint(SKIPNET), {}, {"threshold": "high"})


@pytest.mark.parametrize("name", every_bundled_checkpoint())
def test_structure_is_the_same_in_both_forms(name, loaded_checkpoint):
    """Folding BatchNorm built new convs and lost the buffers RePr records its dropped filters in."""
    path = bundled_checkpoints()[name]
    fast, train = loaded_checkpoint(path), loaded_checkpoint(path, form="train")
    a, b = fast.structure(), train.structure()
    assert [{k: v for k, v in e.items() if k != "overlap"} for e in a] == [
        {k: v for k, v in e.items() if k != "overlap"} for e in b
    ]
    for x, y in zip(a, b):
        assert x.get("overlap", []) == pytest.approx(y.get("overlap", []), abs=1e-5)


def test_repr_fast_form_reports_its_dropped_filters():
    dropped = {e["layer"]: e["dropped"] for e in load_checkpoint(PRETRAINED / "repr_convnet3_fmnist.pt").structure()}
    assert len(dropped["conv2"]) == 5 and len(dropped["conv3"]) == 14


def test_app_latency_times_the_fast_batch1_path(monkeypatch):
    """The app timed a recording trace, which turns off the batch-1 fast path that ``tools.bench`` times."""
    model = load_checkpoint(SKIPNET)
    calls = []
    original = type(model)._forward_one
    monkeypatch.setattr(type(model), "_forward_one", lambda self, *a: calls.append(1) or original(self, *a))
    x = torch.randn(1, 1, 28, 28)
    measured, dense = paired_latency(
        model, model.dense_counterpart(), x, {"layer2.1": {"executed": "false"}}, rounds=2, warmup=1
    )
    assert len(calls) == 3 and measured.runs == dense.runs == 2 and measured.median_ms > 0
    calls.clear()
    bench.batch_one_pass(model, [x])()
    assert calls == [1], "the bench times the same path"


def test_compiled_kernels_only_on_cpu_float32():
    assert runs_compiled(torch.zeros(1))
    for tensor in (torch.zeros(1, device="meta"), torch.zeros(1, dtype=torch.float64)):
        assert not runs_compiled(tensor)


@pytest.mark.skipif(not fused_ops(), reason="no C++ compiler for the compiled kernels")
def test_condconv_off_the_cpu_takes_the_pytorch_path():
    """The compiled operators exist for CPU tensors only; a model on another device (here: meta, which like CUDA has
    no kernel for them) must not call them. Shapes are all the meta device can check."""
    model = load_checkpoint(flagships()["condconv_resnet20_fmnist"]).to("meta")
    assert model(torch.zeros(1, 1, 28, 28, device="meta")).shape == (1, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (python -m tools.device_check does this)")
@pytest.mark.parametrize("name", list(flagships()))
def test_flagships_on_cuda_agree_with_the_cpu(name):
    cpu, gpu = load_checkpoint(flagships()[name]), load_checkpoint(flagships()[name], map_location="cuda")
    x = torch.randn(8, 1, 28, 28)
    for i in range(len(x)):  # batch 1: the compiled kernels' path on the CPU, PyTorch's on the GPU
        assert forced_forward(cpu, x[i : i + 1]).argmax() == forced_forward(gpu, x[i : i + 1].cuda()).argmax().cpu()
    (a, ta), (b, tb) = traced_forward(cpu, x), traced_forward(gpu, x)
    assert torch.equal(a.argmax(1), b.argmax(1)) and ta.macs.tolist() == pytest.approx(tb.macs.tolist(), rel=1e-6)


def test_device_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("ROUTESCOPE_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    for bad in ("nonsense", "tpu"):
        with pytest.raises(UsageError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "command",
    [
        [
            "models.evaluate",
            "--checkpoint",
            str(SKIPNET),
            "--dataset",
            "fashion-mnist-subset",
            "--limit",
            "50",
            "--json",
        ],
        ["analysis.inspect", "--checkpoint", str(SKIPNET), str(sorted(SAMPLE.glob("*.png"))[0])],
        ["analysis.sweep", "--checkpoint", str(SKIPNET), "--knob", "threshold", "--values", "0.5", "--json"],
        [
            "tools.bench",
            "--checkpoint",
            str(PRETRAINED / "repr_convnet3_fmnist.pt"),
            "--images",
            "4",
            "--rounds",
            "1",
            "--batch",
            "8",
        ],
        [
            "tools.device_check",
            "--checkpoint",
            str(PRETRAINED / "repr_convnet3_fmnist.pt"),
            "--singles",
            "2",
            "--rounds",
            "1",
            "--batch",
            "8",
        ],
    ],
)
def test_every_command_that_runs_a_model_takes_a_device(command, capsys):
    import importlib

    main = importlib.import_module(command[0]).main
    assert main(command[1:] + ["--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(command[1:] + ["--device", "nonsense"]) == 2
    assert "device 'nonsense'" in capsys.readouterr().err


def test_figures_take_a_device(tmp_path, capsys):
    from routescope.analysis import figures

    assert figures.main(["--out", str(tmp_path), "--device", "nonsense"]) == 2
    assert "device 'nonsense'" in capsys.readouterr().err


def test_device_check_compares_and_saves(tmp_path):
    out = tmp_path / "check.json"
    assert (
        device_check.main(
            [
                "--device",
                "cpu",
                "--checkpoint",
                str(SKIPNET),
                "--singles",
                "4",
                "--rounds",
                "1",
                "--batch",
                "16",
                "--save",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["rows"][0]
    assert row["agreement"] == 1.0 and row["same_decisions"] == 1.0 and row["macs_rel_diff"] == 0.0


def test_evaluate_limit_is_the_number_of_images(capsys):
    """``--limit N`` evaluates N images, not the first batch of 500 that holds them."""
    from routescope.models import evaluate

    assert evaluate.main(["--checkpoint", str(SKIPNET), "--limit", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_test"] == 50
