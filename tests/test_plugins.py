"""Plug-in models (models.plugins, docs/plugins.md): the two installed examples (a masking ConvNet-AIG, an early-exit
SDN) discovered through their entry points, traced, forced, costed (executed and decided MACs, checked against
FlopCounterMode on their submodules), shared by threads; a plug-in kind of its own; the Python API; a module named
with --plugin on the command line; the app listing and inspecting a plug-in model."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import threading
from importlib.metadata import entry_points

import jsonschema
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import routescope
from routescope.analysis.core.catalog import sample_images
from routescope.analysis.schema import trace_schema
from routescope.models.decisions import DecisionKind
from routescope.models.plugin_registry import installed_plugins, load_plugin
from routescope.models.plugins import DecisionPoint, ModelPlugin, Site
from routescope.models.trace import Trace, traced_forward

from helpers import REPO, fingerprint, start, varied_images

AIG, SDN = "convnet_aig_resnet8", "sdn_resnet14"


@pytest.fixture(scope="module")
def aig():
    return load_plugin(AIG)


@pytest.fixture(scope="module")
def sdn():
    return load_plugin(SDN)


def macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one call, by PyTorch's own counter (2 FLOPs per MAC)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def inputs_of(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The input each named submodule receives in a plain forward of ``model`` on ``x``."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, inputs: tuple) -> None:
        seen.setdefault(name, inputs[0])

    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: keep(n, i)) for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


# --- discovery ----------------------------------------------------------------------------------------------------


def test_the_examples_are_found_through_their_entry_points():
    points = {p.name: p.value for p in entry_points(group="routescope.models")}
    assert points["convnet_aig"] == "convnet_aig.plugin:PLUGIN" and points["sdn_exit"] == "sdn_exit.plugin:PLUGIN"
    found = installed_plugins()
    assert found[AIG].group == "convnet_aig" and found[SDN].group == "sdn_exit"
    assert found[AIG].version == "0.1.0"


def test_the_example_models_import_nothing_of_routescope():
    """Only the declaration module of each example imports RouteScope; the model code is plain PyTorch (and the
    package's own ``models`` module, not RouteScope's)."""
    for package in ("convnet_aig", "sdn_exit"):
        tree = ast.parse((REPO / "examples" / package / package / "models.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "torch", "torch.nn", "torch.nn.functional"}, imported
    import convnet_aig.plugin

    assert convnet_aig.plugin.ConvNetAIG.__module__ == "convnet_aig.models"


# --- ConvNet-AIG: masked gates, executed vs decided cost ------------------------------------------------------------


def test_convnet_aig_records_its_gates_and_executes_every_block(aig):
    x = varied_images(6)
    logits, trace = traced_forward(aig, x)
    assert torch.allclose(logits, aig.model(x), atol=1e-6), "the adapter changes nothing it does not force"
    assert aig.decision_layers() == {f"blocks.{i}": "skip" for i in range(3)}
    full = macs(aig.model, x[:1])  # masking: every image computes every block and every gate
    assert trace.macs.round().tolist() == [full] * 6
    gates = [[d["executed"] for d in row] for row in trace.decisions]
    assert len({tuple(row) for row in gates}) > 1 and not all(all(row) for row in gates), gates
    residual = inputs_of(aig.model, x[:1], [f"blocks.{i}.residual" for i in range(3)])
    saved = [macs(aig.model.get_submodule(n), t) for n, t in residual.items()]
    for i, row in enumerate(gates):
        off = sum(cost for cost, on in zip(saved, row) if not on)
        assert trace.decided_macs[i].item() == pytest.approx(full - off, abs=1e-6), (i, row)


def test_convnet_aig_trace_records_validate_and_carry_both_costs(aig):
    records = routescope.trace(aig, sample_images()[:4])
    for record in records:
        jsonschema.validate(record, trace_schema())
        cost = record["cost"]
        assert cost["macs"] > cost["macs_full"], "masking costs more than the ungated ResNet (gates on top)"
        assert cost["macs_decided"] <= cost["macs"]


def test_forcing_a_gate_off_masks_that_block_and_saves_its_cost(aig):
    x = varied_images(4)
    with torch.no_grad():
        _, free = traced_forward(aig, x)
        logits, forced = traced_forward(aig, x, overrides={"blocks.1": {"executed": False}})
    inner = aig.model
    with torch.no_grad():  # by hand: block 1's residual branch multiplied by 0
        h = inner.blocks[0](inner.stem(x))[0]
        h = torch.relu(inner.blocks[1].shortcut(h))
        h = inner.blocks[2](h)[0]
        expected = inner.fc(torch.flatten(inner.pool(h), 1))
    assert torch.allclose(logits, expected, atol=1e-5)
    for row in forced.decisions:
        assert row[1] == {**row[1], "layer": "blocks.1", "executed": False, "forced": True}
    assert torch.equal(forced.macs, free.macs), "masked: the forced-off block still runs"
    residual = inputs_of(inner, x[:1], [f"blocks.{i}.residual" for i in range(3)])
    saved = [macs(inner.get_submodule(n), t) for n, t in residual.items()]
    for i, row in enumerate(forced.decisions):  # decided: executed minus every off block's residual, block 1's too
        off = sum(cost for cost, d in zip(saved, row) if not d["executed"])
        assert forced.decided_macs[i].item() == pytest.approx(forced.macs[i].item() - off)


# --- SDN: an exit ends the forward ----------------------------------------------------------------------------------


def _prefix_macs(sdn_model, x: torch.Tensor, exit_index: int) -> int:
    """MACs of stem, blocks 0..exit_index and internal classifiers 0..exit_index on one image."""
    total, h = macs(sdn_model.stem, x), sdn_model.stem(x)
    for i in range(exit_index + 1):
        total += macs(sdn_model.blocks[i], h)
        h = sdn_model.blocks[i](h)
        total += macs(sdn_model.exits[i], h)
    return total


def test_an_sdn_exit_stops_the_forward_and_counts_only_what_ran(sdn):
    x = varied_images(1)
    ran = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(sdn.model.blocks)]
    try:
        with torch.no_grad():
            logits, trace = traced_forward(sdn, x, overrides={"exits.2": {"exited": True}}, knobs={"threshold": 1.01})
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        expected = sdn.model(x)[2]
    assert ran == [0, 1, 2], "the blocks after the forced exit never run"
    assert torch.allclose(logits, expected, atol=1e-6), "the logits are that exit's"
    assert [(d["layer"], d["exited"], d.get("forced")) for d in trace.decisions[0]] == [
        ("exits.0", False, None),
        ("exits.1", False, None),
        ("exits.2", True, True),
    ]
    with torch.no_grad():
        assert trace.macs[0].item() == pytest.approx(_prefix_macs(sdn.model, x, 2))
    assert torch.equal(trace.decided_macs, trace.macs), "a true exit decides what it executes"


def test_sdn_threshold_knob_and_a_batch_that_leaves_at_different_exits(sdn):
    x = varied_images(8)
    with torch.no_grad():
        _, never = traced_forward(sdn, x, knobs={"threshold": 1.01})
        assert never.macs.round().tolist() == [macs(sdn.model, x[:1])] * 8, "no exit taken: every block and IC"
        assert [d["layer"] for d in never.decisions[0]] == [*(f"exits.{i}" for i in range(5)), "fc"]
        _, first = traced_forward(sdn, x, knobs={"threshold": 0.0})
        assert first.macs.round().tolist() == [_prefix_macs(sdn.model, x[:1], 0)] * 8
        threshold = sorted(row[0]["confidence"] for row in never.decisions)[4]  # half leave at the first exit
        logits, mixed = traced_forward(sdn, x, knobs={"threshold": threshold})
        for i in range(8):  # the batch gives each image what it gets alone
            alone_logits, alone = traced_forward(sdn, x[i : i + 1], knobs={"threshold": threshold})
            assert torch.allclose(logits[i], alone_logits[0], atol=1e-5)
            assert mixed.decisions[i] == alone.decisions[0] and mixed.macs[i] == alone.macs[0]
    visited = [len(row) for row in mixed.decisions]
    assert min(visited) == 1 and max(visited) > 1, visited


# --- hooks: inert outside a trace, per thread inside ----------------------------------------------------------------


def test_hooks_do_nothing_outside_a_trace_and_never_change_the_model(aig, sdn):
    x = varied_images(3)
    before = fingerprint(aig), fingerprint(sdn)
    with torch.no_grad():
        assert torch.equal(aig(x), aig.model(x)) and torch.equal(sdn(x), sdn.model(x)[-1])
        with Trace(3).active() as trace:  # a trace, but the inner model is called directly: no adapter run
            aig.model(x)
        assert trace.decisions == [[], [], []] and trace.unneeded is None
        traced_forward(aig, x, overrides={"blocks.0": {"executed": False}})
        traced_forward(sdn, x, overrides={"exits.0": {"exited": True}})
    assert (fingerprint(aig), fingerprint(sdn)) == before, "hooks registered once at load; nothing per call"


def test_two_threads_trace_one_model_at_once_with_different_forcing(aig):
    x = varied_images(4)
    forcing = {"off": {"blocks.0": {"executed": False}}, "on": {"blocks.0": {"executed": True}}}
    with torch.no_grad():
        expected = {k: traced_forward(aig, x, overrides=v) for k, v in forcing.items()}
    barrier, results, errors = threading.Barrier(2), {"off": [], "on": []}, []

    def work(which: str) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                with torch.no_grad():
                    results[which].append(traced_forward(aig, x, overrides=forcing[which]))
        except BaseException as e:  # noqa: B036 (reported to the main thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in forcing]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for which, runs in results.items():
        logits, trace = expected[which]
        for got_logits, got in runs:
            assert torch.equal(got_logits, logits) and got.decisions == trace.decisions
            assert torch.equal(got.macs, trace.macs) and torch.equal(got.decided_macs, trace.decided_macs)


# --- a plug-in's own decision kind, read at a module's input --------------------------------------------------------

BRANCH = DecisionKind(
    "branch",
    "test_plugin",
    "image",
    {"branch": ("integer", "which of two heads the router picked"), "score": ("number", "the router's score")},
    "a two-way branch picked per image",
    signature=lambda d: d["branch"],
    forcible=("branch",),
)


class TwoHeads(nn.Module):
    """Plain PyTorch: a router scores the image, ``pick`` takes head 0 or 1 per image from the score."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.router = nn.Linear(4, 1)
        self.heads = nn.ModuleList(nn.Linear(4, 10) for _ in range(2))
        self.pick = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x).mean((2, 3))
        score = self.pick(torch.sigmoid(self.router(h))[:, 0])
        return torch.where((score > 0.5)[:, None], self.heads[1](h), self.heads[0](h))


def read_branch(site: Site) -> dict:
    score = site.inputs[0]
    return {"branch": (score > 0.5).long(), "score": score}


def force_branch(site: Site, branch: int) -> tuple:
    return (torch.full_like(site.inputs[0], 1.0 if branch else 0.0),)


BRANCHING = ModelPlugin(
    name="two_heads",
    build=lambda weights: TwoHeads(),
    classes=[str(i) for i in range(10)],
    input_size=(1, 8, 8),
    mean=(0.5,),
    std=(0.25,),
    decisions=[DecisionPoint("pick", BRANCH, read_branch, force_branch, at="input", layer="router")],
)


def test_a_plugin_declares_a_kind_of_its_own_read_at_an_input(monkeypatch):
    from routescope.models import decisions

    monkeypatch.setattr(decisions, "_KINDS", dict(decisions._KINDS))  # the kind stays this test's (the schema file)
    model = routescope.load(BRANCHING)
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        logits, trace = traced_forward(model, x)
        forced_logits, forced = traced_forward(model, x, overrides={"router": {"branch": "1"}})
        h = model.model.body(x).mean((2, 3))
    assert model.decision_layers() == {"router": "branch"}
    assert [row[0]["kind"] for row in trace.decisions] == ["branch"] * 6
    assert all(row[0]["branch"] == 1 and row[0]["forced"] for row in forced.decisions)
    assert torch.allclose(forced_logits, model.model.heads[1](h), atol=1e-6)
    record = routescope.trace(model, x[:1])[0]
    jsonschema.validate(record, trace_schema())  # the kind joins the schema once registered
    with pytest.raises(ValueError, match="router"):
        traced_forward(model, x, overrides={"router": {"score": 1}})


# --- the Python API -------------------------------------------------------------------------------------------------


def test_api_load_trace_and_table(aig):
    from PIL import Image

    assert routescope.load(f"plugin:{SDN}").meta["name"] == SDN
    assert routescope.load(AIG).meta["method"] == "convnet_aig"
    path = sample_images()[0]
    from_path = routescope.trace(aig, path)[0]
    from_pil = routescope.trace(aig, Image.open(path))[0]
    assert from_path["image"] == str(path) and from_path["decisions"] == from_pil["decisions"]
    pixels = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    by_tensor = routescope.trace(aig, pixels)
    assert len(by_tensor) == 5 and all("macs_decided" in r["cost"] for r in by_tensor)
    table = routescope.table(aig, images=pixels, labels=torch.tensor([0, 1, 2, 3, -1]))
    assert len(table) == 5 and {"macs", "macs_decided", "blocks.0/executed", "pattern"} <= set(table.columns)
    assert (table["macs_decided"] <= table["macs"]).all()


def test_importing_routescope_is_cheap():
    code = "import sys, routescope; print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_outside_code_with_its_own_models_package_uses_routescope(tmp_path):
    """A research repository with its own top-level ``models`` package imports routescope and traces a model."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    script = textwrap.dedent(
        f"""
        import models
        import routescope
        model = routescope.load({SDN!r})
        record = routescope.trace(model, {str(sample_images()[0])!r})[0]
        assert models.MINE and record["decisions"], record
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


# --- the command line -----------------------------------------------------------------------------------------------

DECLARATION = """
import torch
import torch.nn as nn
from routescope import DecisionPoint, ModelPlugin


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = nn.Linear(4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.fc(h) * (torch.sigmoid(self.gate(h)) > 0.5)


def read(site):
    p = torch.sigmoid(site.output[:, 0])
    return {"executed": p > 0.5, "probability": p}


def build(weights):
    torch.manual_seed(0)
    return Net()


PLUGIN = ModelPlugin(
    name="cli_net", build=build, classes=[str(i) for i in range(10)], input_size=(1, 28, 28), mean=(0.3,), std=(0.3,),
    decisions=[DecisionPoint("gate", "skip", read, layer="fc", saves=("fc",))],
)
"""


def test_a_plugin_module_named_on_the_command_line(tmp_path, monkeypatch, capsys):
    from routescope.analysis import inspect, table

    (tmp_path / "my_declaration.py").write_text(DECLARATION)
    monkeypatch.syspath_prepend(str(tmp_path))
    image = str(sample_images()[0])
    assert inspect.main(["--plugin", "my_declaration", image]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"]["name"] == "cli_net" and record["decisions"][0]["layer"] == "fc"
    assert record["cost"]["macs_decided"] <= record["cost"]["macs"]
    assert inspect.main(["--plugin", "my_declaration", "--checkpoint", SDN, "--knob", "threshold=0", image]) == 0
    assert [d["layer"] for d in json.loads(capsys.readouterr().out)["decisions"]] == ["exits.0"]
    assert inspect.main(["--plugin", "no_such_module_here", image]) == 2
    assert "--plugin no_such_module_here" in capsys.readouterr().err
    assert inspect.main([image]) == 2 and "--checkpoint is required" in capsys.readouterr().err
    out = tmp_path / "t.parquet"
    folder = sample_images()[0].parent
    args = ["--plugin", "my_declaration", "--dataset", "folder", "--data-dir", str(folder), "--out", str(out)]
    assert table.main([*args, "--store", str(tmp_path / "store"), "--no-progress"]) == 0
    import pandas as pd

    assert "macs_decided" in pd.read_parquet(out).columns


# --- the app --------------------------------------------------------------------------------------------------------


def test_the_app_lists_installed_plugins_and_inspects_one(models_dir):
    at = start()
    sources = at.sidebar.radio(key="model-source").options
    assert "plug-in: convnet_aig" in sources and "plug-in: sdn_exit" in sources
    at.sidebar.radio(key="model-source").set_value("plug-in: convnet_aig").run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="model-plugin").value == AIG
    assert [m.label for m in at.metric] == ["Prediction", "MACs executed", "MACs decided"]
    assert any("plug-in `convnet_aig`" in c.value for c in at.caption)
    assert at.query_params["model"] in (AIG, [AIG])
    at.toggle(key="img0-intervene").set_value(True).run()
    assert not at.exception, at.exception
    at.sidebar.radio(key="model-source").set_value("plug-in: sdn_exit").run()
    assert not at.exception and at.sidebar.selectbox(key="model-plugin").value == SDN


def test_a_link_opens_a_plugin_model_and_uploaded_code_stays_refused(models_dir):
    from streamlit.testing.v1 import AppTest

    from helpers import APP, TIMEOUT

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = SDN
    at.run()
    assert not at.exception and at.sidebar.radio(key="model-source").value == "plug-in: sdn_exit"
    at.sidebar.radio(key="model-source").set_value("Upload a checkpoint").run()
    code = f"from routescope import ModelPlugin\nPLUGIN = None  # {AIG}\n".encode()
    at.sidebar.file_uploader[0].set_value(("plugin.py", code, "text/x-python")).run()
    assert not at.exception and len(at.sidebar.error) == 1
    assert "not a PyTorch file" in at.sidebar.error[0].value
