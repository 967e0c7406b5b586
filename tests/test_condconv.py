"""CondConv: the batched grouped conv against per-example and per-expert references, routing, MACs, training,
checkpoints."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers import randomize_batchnorm, run_args
from routescope.models.options import add_options
from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, save_checkpoint
from routescope.models.condconv import CondConvBlock, CondConvResNet
from routescope.models.layers.condconv import CondConv2d
from routescope.models.recipes.condconv import CondConvStage, CondConvOptions, condconv_recipe
from routescope.models.cost import count_macs, full_macs
from routescope.models.resnet import ResNet
from routescope.models.trace import traced_forward


def make(depth: int = 8, seed: int = 0, **kwargs) -> CondConvResNet:
    """A small CondConv ResNet with non-trivial BN (as after training), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(f"condconv_resnet{depth}", num_classes=10, in_chans=1, **kwargs)
    randomize_batchnorm(model)
    return model.eval()


def reference_loop(conv: CondConv2d, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
    """One F.conv2d per example with that example's combined kernel."""
    outs = []
    for b in range(len(x)):
        kernel = (routing[b, :, None] * conv.weight).sum(0).view(conv.weight_shape)
        bias = routing[b] @ conv.bias if conv.bias is not None else None
        outs.append(F.conv2d(x[b : b + 1], kernel, bias, conv.stride, conv.padding, groups=conv.groups))
    return torch.cat(outs)


def reference_experts(conv: CondConv2d, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
    """The mixture-of-experts form: sum_e a_e * conv(x, W_e) (E convolutions, what CondConv avoids)."""
    out = 0
    for e in range(conv.num_experts):
        bias = conv.bias[e] if conv.bias is not None else None
        y = F.conv2d(x, conv.experts[e], bias, conv.stride, conv.padding, groups=conv.groups)
        out = out + routing[:, e].view(-1, 1, 1, 1) * y
    return out


@pytest.mark.parametrize(
    "groups,stride,bias,batch", [(1, 1, False, 5), (2, 2, True, 3), (4, 1, True, 1), (1, 2, False, 1)]
)
@torch.no_grad()
def test_batched_conv_equals_loop_and_expert_mixture(groups, stride, bias, batch):
    conv = CondConv2d(8, 12, 3, stride, 1, groups=groups, num_experts=4, bias=bias)
    x = torch.randn(batch, 8, 9, 9)
    routing = torch.rand(batch, 4)
    y = conv(x, routing)
    assert y.shape == (batch, 12, 9 // stride + (9 % stride > 0), 9 // stride + (9 % stride > 0))
    torch.testing.assert_close(y, reference_loop(conv, x, routing), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, reference_experts(conv, x, routing), atol=1e-5, rtol=1e-5)
    assert conv.experts.shape == (4, 12, 8 // groups, 3, 3)
    assert conv.combined_kernel(routing).shape == (batch, 12, 8 // groups, 3, 3)


@pytest.mark.parametrize("groups,bias,folded", [(1, False, False), (2, True, False), (1, True, True)])
@torch.no_grad()
def test_one_expert_runs_its_kernel_alone_and_equals_the_one_hot_mixture(groups, bias, folded):
    conv = CondConv2d(8, 12, 3, 1, 1, groups=groups, num_experts=4, bias=bias)
    if folded:
        conv.fold_batchnorm(randomize_batchnorm(nn.BatchNorm2d(12)).eval())
    x = torch.randn(3, 8, 9, 9)
    one_hot = torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand(3, 4)
    torch.testing.assert_close(conv(x, 2), conv(x, one_hot), atol=1e-5, rtol=1e-5)
    with FlopCounterMode(display=False) as counter:
        conv(x, 2)
    assert counter.get_total_flops() // 2 == 3 * 12 * (8 // groups) * 9 * 9 * 9  # the conv, no mixture (E x P)
    with pytest.raises(ValueError, match="expert must be in 0..3"):
        conv(x, 4)


@torch.no_grad()
def test_a_block_forced_to_one_expert_runs_neither_router_nor_mixture():
    model = create_model("condconv_resnet20", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    layer = model.routing_layers()[0]
    one, mixed = {layer: {"weights": [0.0, 1.0, 0.0, 0.0]}}, {layer: {"weights": [0.0, 1.0, 0.0, 1e-9]}}
    logits_one, trace_one = traced_forward(model, x, overrides=one)
    logits_mixed, trace_mixed = traced_forward(model, x, overrides=mixed)
    torch.testing.assert_close(logits_one, logits_mixed, atol=1e-4, rtol=1e-4)  # the same kernel, up to 1e-9
    entry = next(d for d in trace_one.decisions[0] if d["layer"] == layer)
    assert entry["forced"] and entry["weights"] == [0.0, 1.0, 0.0, 0.0]
    block = model.get_submodule(layer)
    router = block.router.fc
    mixing = sum(conv.weight.numel() for conv in (block.conv1, block.conv2))  # (1, E) @ (E, P) per image and conv
    assert trace_mixed.macs[0] - trace_one.macs[0] == mixing, "forced to one expert: no mixture is computed"
    _, routed = traced_forward(model, x)
    assert routed.macs[0] - trace_mixed.macs[0] == router.in_features * router.out_features, "no router when forced"


@torch.no_grad()
def test_channels_last_inputs_and_model():
    conv = CondConv2d(6, 6, 3, 1, 1, groups=2, num_experts=8)
    x, routing = torch.randn(4, 6, 7, 7), torch.rand(4, 8)
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last), routing), conv(x, routing))
    model = make()
    x = torch.randn(3, 1, 28, 28)
    want = model(x)
    model.to(memory_format=torch.channels_last)  # what models.train does on CPU: needs no 5-D parameter
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-5, rtol=1e-5)


def test_bad_routing_shape_is_an_error():
    with pytest.raises(ValueError, match="routing"):
        CondConv2d(4, 4, 3, 1, 1, num_experts=4)(torch.randn(2, 4, 5, 5), torch.rand(2, 3))


def test_mixture_starts_like_a_kaiming_conv():
    for experts in (4, 8):
        torch.manual_seed(0)
        conv = CondConv2d(64, 64, 3, 1, 1, num_experts=experts)
        mixture = conv.combined_kernel(torch.full((1, experts), 0.5))
        assert mixture.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


@torch.no_grad()
def test_routing_is_sigmoid_per_block_and_deterministic_in_eval():
    model = make(num_experts=8, condconv_stages=[2, 3])
    assert model.routing_layers() == ["layer2.0", "layer3.0"]
    assert all(isinstance(model.get_submodule(name), CondConvBlock) for name in model.routing_layers())
    assert isinstance(model.layer1[0].conv1, nn.Conv2d) and isinstance(model.layer3[0].shortcut[0], nn.Conv2d)
    x = torch.randn(6, 1, 28, 28) * torch.linspace(0.2, 3, 6).view(-1, 1, 1, 1)
    out = model(x, return_routing=True)
    assert out.routing.shape == (6, 2, 8)
    assert bool((out.routing > 0).all() and (out.routing < 1).all())
    assert not torch.allclose(out.routing.sum(-1), torch.ones(6, 2))  # sigmoid, not softmax
    again = model(x, return_routing=True)
    assert torch.equal(out.logits, again.logits) and torch.equal(out.routing, again.routing)
    torch.testing.assert_close(model(x), out.logits)


@torch.no_grad()
def test_trace_records_routing_decisions():
    model = make(depth=20)
    x = torch.randn(4, 1, 28, 28)
    logits, trace = traced_forward(model, x)
    routing = model(x, return_routing=True).routing
    assert model.routing_layers() == ["layer3.0", "layer3.1", "layer3.2"]
    for i in range(4):
        decisions = trace.decisions[i]
        assert [d["layer"] for d in decisions] == model.routing_layers()
        assert all(d["kind"] == "routing" and len(d["weights"]) == 4 for d in decisions)
        torch.testing.assert_close(torch.tensor([d["weights"] for d in decisions]), routing[i])


@torch.no_grad()
def test_macs_agree_with_flop_counter_and_across_batch_sizes():
    model = make(num_experts=4, condconv_stages=(2, 3))
    x = torch.randn(5, 1, 28, 28)
    _, batched = traced_forward(model, x)
    for i in range(len(x)):
        _, single = traced_forward(model, x[i : i + 1])
        with FlopCounterMode(display=False) as counter:
            model(x[i : i + 1])
        assert counter.get_total_flops() == pytest.approx(2 * single.macs[0].item(), rel=0.01)
        assert batched.macs[i].item() == pytest.approx(single.macs[0].item(), rel=1e-9)
    # the executed MACs are the dense backbone's plus routing (Linear) and kernel combination ((1,E) @ (E,P))
    extra = 0
    for _, block in model.routing_blocks():
        extra += block.router.fc.in_features * 4
        extra += sum(4 * conv.weight.shape[1] for conv in (block.conv1, block.conv2))
    dense = full_macs(model, (1, 28, 28))
    assert batched.macs[0].item() == pytest.approx(dense + extra, rel=1e-9)
    assert count_macs(model, x[:1]) == pytest.approx(dense + extra, rel=1e-9)


def test_training_step_reaches_router_and_every_expert():
    model = make(num_experts=4).train()
    stage = condconv_recipe(run_args(epochs=1, lr=0.05, weight_decay=5e-4))[0]
    opt = stage.optimizer(model)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = stage.training_step(model, x, y)
    opt.zero_grad()
    out.loss.backward()
    for name, block in model.routing_blocks():
        assert block.router.fc.weight.grad.abs().sum() > 0, name
        for conv in (block.conv1, block.conv2):
            assert bool((conv.weight.grad.abs().sum(1) > 0).all()), f"{name}: an expert gets no gradient"
    opt.step()
    after = model.state_dict()
    assert not torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
    assert not torch.equal(before["layer3.0.router.fc.weight"], after["layer3.0.router.fc.weight"])


def test_recipe_is_one_supervised_stage_with_optional_expert_decay():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    add_options(parser, CondConvOptions)
    stages = condconv_recipe(parser.parse_args([]))
    assert len(stages) == 1 and isinstance(stages[0], CondConvStage) and stages[0].epochs == 3
    assert stages[0].expert_weight_decay == 5e-4
    stage = condconv_recipe(parser.parse_args(["--expert-weight-decay", "0"]))[0]
    groups = stage.optimizer(make()).param_groups
    experts = {id(m.weight) for m in make().modules() if isinstance(m, CondConv2d)}
    assert groups[0]["weight_decay"] == 0 and len(groups[0]["params"]) == 2 and groups[1]["weight_decay"] == 5e-4
    assert len(experts) == 2


def test_dense_counterpart_and_options():
    model = make(depth=20, num_experts=8)
    dense = model.dense_counterpart()
    assert type(dense) is ResNet and dense.depth == 20 and dense.widths == model.widths
    torch.testing.assert_close(dense.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    assert model.layer3[0].conv1.num_experts == 8
    with pytest.raises(ValueError):
        create_model("condconv_resnet8", condconv_stages=(4,))
    with pytest.raises(ValueError):
        create_model("condconv_resnet8", condconv_stages=())


@torch.no_grad()
def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path):
    model = make(condconv_stages=[2, 3], num_experts=8)
    x = torch.randn(3, 1, 28, 28)
    want = model(x, return_routing=True)
    meta = {
        "name": "cc",
        "method": model.method,
        "dataset": "fashion-mnist",
        "classes": [str(i) for i in range(10)],
        "input_size": [1, 28, 28],
        "mean": [0.5],
        "std": [0.5],
        "metrics": {},
        "recipe": {},
    }
    save_checkpoint(tmp_path / "cc.pt", model, meta)
    loaded = load_checkpoint(tmp_path / "cc.pt", form="train")
    assert (
        isinstance(loaded, CondConvResNet) and not loaded.training and loaded.routing_layers() == model.routing_layers()
    )
    got = loaded(x, return_routing=True)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.routing, want.routing)


def test_trainer_runs_condconv(fmnist_dir, tmp_path):
    """End to end through models.train (channels_last on CPU, recipe lookup, final evaluation)."""
    from routescope.models import train

    args = [
        "--model",
        "condconv_resnet8",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--limit-batches",
        "2",
        "--no-progress",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path),
        "--name",
        "cc",
        "--model-args",
        '{"num_experts": 4, "condconv_stages": [3]}',
    ]
    assert train.main(args) == 0
    model = load_checkpoint(tmp_path / "cc.pt")
    assert (
        model.meta["method"] == "condconv" and model.meta["metrics"]["macs_mean"] > model.meta["metrics"]["macs_full"]
    )


@torch.no_grad()
def test_upcycled_experts_reproduce_the_dense_network_at_neutral_routing(tmp_path):
    """--init-from a plain ResNet: every expert is W * 2/E, so with routing 0.5 the CondConv net IS the dense net."""
    from routescope.models import train

    torch.manual_seed(1)
    dense = create_model("resnet8", num_classes=10, in_chans=1)
    randomize_batchnorm(dense)
    meta = {
        "name": "dense",
        "method": "baseline",
        "dataset": "fashion-mnist",
        "classes": [str(i) for i in range(10)],
        "input_size": [1, 28, 28],
        "mean": [0.5],
        "std": [0.5],
        "metrics": {},
        "recipe": {},
    }
    save_checkpoint(tmp_path / "dense.pt", dense, meta)
    model = make(num_experts=4)
    train.init_from(model, str(tmp_path / "dense.pt"))
    for name, block in model.routing_blocks():
        nn.init.zeros_(block.router.fc.weight)  # routing exactly sigmoid(0) = 0.5 for every example
        assert torch.allclose(block.conv1.experts[0], block.conv1.experts[3])
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), dense.eval()(x), atol=1e-5, rtol=1e-5)


def test_batched_plans_compute_the_same_and_are_measured_once_per_shape(monkeypatch):
    """A batch in chunks runs each example's own mixture and conv, as the whole batch does; which plan runs is
    measured once per shape in inference, and autograd and counting always run the whole batch at once."""
    from routescope.models.layers import plans
    from routescope.models.layers.condconv import CHUNKS

    layer = CondConv2d(8, 8, 3, padding=1).eval()
    x, routing = torch.randn(40, 8, 7, 7), torch.rand(40, 4)
    with torch.no_grad():
        whole = layer._mixed(x, routing)
        for n in CHUNKS:
            torch.testing.assert_close(layer._chunked(x, routing, n), whole, rtol=0, atol=1e-6)
    chosen = []
    monkeypatch.setattr(plans, "fastest", lambda options, device: chosen.append(sorted(options)) or "chunks of 16")
    with torch.no_grad():
        layer(x, routing), layer(x, routing)
        with FlopCounterMode(display=False):
            layer(x, routing)
    with torch.enable_grad():
        layer(x, routing)
    assert chosen == [["chunks of 16", "chunks of 32", "whole batch"]], "measured once; 40 examples: no chunk of 64"
    assert layer.plans.chosen == {("cpu", True, 40, 8, 7, 7): "chunks of 16"}
    monkeypatch.setattr(layer, "_chunked", lambda *args: pytest.fail("reference_plans runs the whole batch"))
    with torch.no_grad(), plans.reference_plans():
        torch.testing.assert_close(layer(x, routing), whole, rtol=0, atol=1e-6)
    layer.fold_batchnorm(torch.nn.BatchNorm2d(8).eval())
    assert layer.plans.chosen == {}, "new weights: measured again"


def test_channels_last_inputs_get_channels_last_kernels_with_the_same_outputs():
    """In a channels-last fast form the mixed kernels and single experts are made channels-last (no reorder per
    call), from a copy of the experts that follows every change of the weights; the outputs do not change."""
    layer = CondConv2d(8, 6, 3, padding=1, num_experts=3).eval()
    x = torch.randn(4, 8, 7, 7)
    xl = x.contiguous(memory_format=torch.channels_last)
    routing = torch.rand(4, 3)
    with torch.no_grad():
        for run in (lambda t: layer._mixed(t[:1], routing[:1]), lambda t: layer.expert_forward(t, 2)):
            torch.testing.assert_close(run(xl), run(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer._mixed(xl, routing), layer._mixed(x, routing), rtol=1e-5, atol=1e-5)
        assert layer.kernels_channels_last(xl) and not layer.kernels_channels_last(x)
        kernel = layer.kernel(layer.flat_experts(True)[1], True)
        assert kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()
        torch.testing.assert_close(kernel, layer.experts[1])
        layer.weight.mul_(2.0)
        torch.testing.assert_close(layer.kernel(layer.flat_experts(True)[1], True), layer.experts[1])
    with torch.enable_grad():
        assert not layer.kernels_channels_last(xl), "autograd reaches the parameter itself"
