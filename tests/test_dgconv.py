"""DGConv: the Kronecker mask and its groups, straight-through gates, the budget, export to real grouped convs."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers import randomize_batchnorm, run_args
from routescope.models.options import add_options
from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from routescope.models.cost import count_macs, full_macs
from routescope.models.data import FASHION_MNIST
from routescope.models.dgconv import DGConvResNet
from routescope.models.layers.dgconv import DGConv2d, GroupedConv2d, group_index, kron_mask
from routescope.models.layers import plans
from routescope.models.recipes.dgconv import BudgetedStage, DGConvOptions, budget_loss, dgconv_recipe
from routescope.models.trace import traced_forward

META = {
    "name": "g",
    "method": "dgconv",
    "dataset": "fashion-mnist",
    "classes": list(FASHION_MNIST.classes),
    "input_size": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "metrics": {},
    "recipe": {},
}


def components(mask: torch.Tensor) -> list[int]:
    """Connected components of a 0/1 adjacency matrix, numbered by first channel (a reference for group_index)."""
    n = mask.shape[0]
    label = [-1] * n
    count = 0
    for start in range(n):
        if label[start] >= 0:
            continue
        stack = [start]
        label[start] = count
        while stack:
            i = stack.pop()
            for j in mask[i].nonzero().flatten().tolist():
                if label[j] < 0:
                    label[j] = count
                    stack.append(j)
        count += 1
    return label


@torch.no_grad()
def set_gates(layer: DGConv2d, gates) -> DGConv2d:
    """theta = +-(0.1..1) with the signs of ``gates``."""
    g = torch.as_tensor(gates, dtype=torch.float)
    layer.theta.copy_((2 * g - 1) * torch.empty_like(g).uniform_(0.1, 1.0))
    return layer


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float)


@torch.no_grad()
def make(depth: int = 8, widths=(16, 32, 64), seed: int = 0) -> DGConvResNet:
    """A G-ResNet with random gates, non-trivial BN statistics and non-zero residual branches, in eval mode."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(create_model(f"dgconv_resnet{depth}", num_classes=10, in_chans=1, widths=widths))
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.theta.normal_(0.0, 1.0)
    return model.eval()


# --- the mask and its groups ------------------------------------------------------------------------------


def test_kron_mask_hand_written_c4():
    eye, ones = torch.eye(4), torch.ones(4, 4)
    expected = {
        (0, 0): (eye, [0, 1, 2, 3]),
        (1, 0): (t([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]), [0, 1, 0, 1]),  # interleaved
        (0, 1): (t([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]), [0, 0, 1, 1]),  # contiguous
        (1, 1): (ones, [0, 0, 0, 0]),
    }
    for gates, (mask, groups) in expected.items():
        layer = set_gates(DGConv2d(4), gates)
        assert torch.equal(kron_mask(t(gates)), mask) and torch.equal(layer.mask(), mask), gates
        assert layer.group_of_channel() == groups == components(mask)
        assert layer.groups() == len(set(groups)) and layer.nnz() == int(mask.sum())


def test_kron_mask_hand_written_c8():
    a, b = [1, 0, 1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0, 0, 0]
    c, d = [0, 0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1, 0, 1]
    layer = set_gates(DGConv2d(8), (0, 1, 0))  # I2 (x) ones2 (x) I2
    assert torch.equal(layer.mask(), t([a, b, a, b, c, d, c, d]))
    assert layer.group_of_channel() == [0, 1, 0, 1, 2, 3, 2, 3] and layer.groups() == 4 and layer.nnz() == 16
    layer = set_gates(DGConv2d(8), (1, 0, 0))  # ones2 (x) I4: channel i with i + 4
    assert torch.equal(layer.mask(), torch.eye(4).repeat(2, 2))
    assert layer.group_of_channel() == [0, 1, 2, 3, 0, 1, 2, 3] and layer.groups() == 4
    layer = set_gates(DGConv2d(8), (0, 1, 1))  # I2 (x) ones4: two contiguous groups
    assert torch.equal(layer.mask(), torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)))
    assert layer.group_of_channel() == [0, 0, 0, 0, 1, 1, 1, 1] and layer.nnz() == 8 * 4


@pytest.mark.parametrize("channels", (1, 4, 16, 64))
def test_all_off_is_depthwise_all_on_is_dense(channels):
    k = channels.bit_length() - 1
    off, on = set_gates(DGConv2d(channels), [0] * k), set_gates(DGConv2d(channels), [1] * k)
    assert torch.equal(off.mask(), torch.eye(channels)) and off.groups() == channels and off.nnz() == channels
    assert off.group_of_channel() == list(range(channels))
    assert torch.equal(on.mask(), torch.ones(channels, channels)) and on.groups() == 1 and on.nnz() == channels**2
    assert on.group_of_channel() == [0] * channels


def test_group_of_channel_is_connected_components_of_the_mask():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        gates = torch.randint(0, 2, (5,), generator=g).float()
        mask = kron_mask(gates)
        groups = group_index(gates).tolist()
        assert groups == components(mask)
        sizes = torch.bincount(torch.tensor(groups))
        assert len(sizes) == 2 ** int(5 - gates.sum()) and (sizes == 2 ** int(gates.sum())).all()
        assert int(mask.sum()) == 32 * int(torch.prod(1 + gates))


def test_power_of_two_channels_required():
    with pytest.raises(ValueError, match="power-of-two"):
        DGConv2d(24)
    with pytest.raises(ValueError, match="power-of-two"):
        create_model("dgconv_resnet8", widths=(16, 24, 64))


def test_theta_comes_from_torch_rng():
    torch.manual_seed(5)
    a = DGConv2d(16).theta.detach().clone()
    torch.manual_seed(5)
    b = DGConv2d(16).theta.detach().clone()
    assert torch.equal(a, b) and (a > 0).all()  # default init U(0, 1): every gate on (dense start)
    assert (DGConv2d(16, gate_init=0.0, gate_noise=1e-8).theta.abs() <= 1e-8).all()  # the reference's +-eps


def test_gates_train_without_momentum():
    model = create_model("dgconv_resnet8", in_chans=1)
    optimizer = BudgetedStage(1, 0.1, gate_lr_scale=0.5).optimizer(model)
    (gates,) = [g for g in optimizer.param_groups if g["momentum"] == 0.0]
    assert len(gates["params"]) == len(model.dg_layers()) and gates["lr"] == 0.05 and gates["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


# --- straight-through gates ----------------------------------------------------------------------------


@pytest.mark.parametrize("ste", ("sigmoid", "identity"))
def test_ste_gradients_reach_theta(ste):
    layer = set_gates(DGConv2d(8, ste=ste), (1, 0, 1))
    x = torch.randn(2, 8, 5, 5)
    y = layer.forward_masked(x)
    assert torch.allclose(y, F.conv2d(x, layer.weight * layer.mask()[:, :, None, None], padding=1))  # forward is hard
    y.square().mean().backward()
    assert layer.theta.grad is not None and torch.isfinite(layer.theta.grad).all() and (layer.theta.grad != 0).all()
    layer.theta.grad = None
    layer.nnz_ste().backward()  # d/dtheta_k of C * prod(1 + g): C * prod_{j != k} (1 + g_j) * surrogate'(theta_k)
    theta = layer.theta.detach()
    surrogate = torch.sigmoid(theta) * (1 - torch.sigmoid(theta)) if ste == "sigmoid" else (theta.abs() <= 1).float()
    g = (theta > 0).float()
    expected = torch.stack([8 * torch.prod(torch.cat([1 + g[:k], 1 + g[k + 1 :]])) for k in range(3)]) * surrogate
    assert torch.allclose(layer.theta.grad, expected)


@pytest.mark.parametrize("gates", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1), (1, 0, 0, 1), (1, 1, 0, 0)])
def test_grouped_forms_equal_the_masked_layer(gates):
    layer = set_gates(DGConv2d(16, stride=2, bias=True), gates)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 16, 9, 9)
    masked, grouped = layer.forward_masked(x), layer.forward_grouped(x)
    exported = GroupedConv2d.from_dgconv(layer)
    assert masked.shape == (3, 16, 5, 5)
    assert torch.allclose(grouped, masked, atol=1e-5) and torch.allclose(exported(x), masked, atol=1e-5)
    assert exported.conv.groups == layer.groups() and exported.conv.weight.numel() == layer.nnz() * 9
    assert torch.equal(exported.dense_weight(), layer.dense_weight())
    assert (exported.perm is None) == (gates in [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1)])  # contiguous: no gather
    assert exported.group_of_channel() == layer.group_of_channel() and torch.equal(exported.mask(), layer.mask())


@pytest.mark.parametrize("gates", [(1, 0, 0, 1), (0, 0, 1, 1)])
def test_each_execution_plan_is_the_same_function_and_counting_sees_the_grouped_one(gates, monkeypatch):
    """Inference picks the faster exact plan per input shape, once; the MAC counter always runs the grouped conv."""
    layer = GroupedConv2d.from_dgconv(set_gates(DGConv2d(16, bias=True), gates)).eval()
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        grouped, dense = layer._grouped(x), layer._dense_conv(x, layer.conv)
    assert torch.allclose(grouped, dense, atol=1e-5)
    measured = []
    monkeypatch.setattr(plans, "fastest", lambda options, device: measured.append(sorted(options)) or "dense")
    with torch.no_grad():
        assert torch.equal(layer(x), dense) and torch.equal(layer(x), dense)
        layer(x[:1])
    assert measured == [["dense", "grouped"]] * 2, "once per input shape"
    assert set(layer.plans.chosen) == {("cpu", True, 2, 16, 7, 7), ("cpu", True, 1, 16, 7, 7)}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        assert torch.equal(layer(x), grouped)
    assert counter.get_total_flops() == 2 * 2 * layer.conv.weight.numel() * 7 * 7
    assert torch.equal(layer(x), grouped), "with gradients (training, attributions): the grouped conv"


# --- the G-ResNet and its export --------------------------------------------------------------------------


def test_which_convs_are_dgconv():
    model = create_model("dgconv_resnet8", in_chans=1)
    assert model.method == "dgconv" and isinstance(model, DGConvResNet)
    names = [name for name, _ in model.dg_layers()]
    assert names == ["layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2"]
    assert type(model.layer2[0].conv1) is nn.Conv2d  # C_in != C_out: stays plain
    assert [layer.area for _, layer in model.dg_layers()] == [1.0, 1.0, 0.25, 0.0625]
    assert len(create_model("dgconv_resnet20").dg_layers()) == 3 * 6 - 2
    strided = create_model("dgconv_resnet8", widths=(8, 8, 8))  # equal widths: the strided conv1 is DGConv too
    assert isinstance(strided.layer2[0].conv1, DGConv2d) and strided.layer2[0].conv1.stride == (2, 2)


@pytest.mark.parametrize("widths", [(16, 32, 64), (8, 8, 8)])
def test_export_equals_masked_model(widths, monkeypatch):
    model = make(widths=widths)
    x = torch.randn(4, 1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exported = model.inference_form()
    after = model.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(v, before[k]) for k, v in after.items())
    assert not any(isinstance(m, DGConv2d) for m in exported.modules())
    assert sum(isinstance(m, GroupedConv2d) for m in exported.modules()) == len(model.dg_layers())
    assert {layer.groups() for _, layer in model.dg_layers()} != {1}  # the random gates really group
    with torch.no_grad():
        on_the_fly, out, dense = model(x), exported(x), model.dense_counterpart().eval()(x)
        monkeypatch.setattr(DGConv2d, "forward", DGConv2d.forward_masked)
        masked = model(x)
    assert torch.allclose(out, masked, atol=1e-5) and torch.allclose(on_the_fly, masked, atol=1e-5)
    assert torch.allclose(dense, masked, atol=1e-5)
    monkeypatch.undo()
    # fewer parameters and MACs, exactly as the complexity says
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    removed = sum(layer.theta.numel() + layer.weight.numel() - layer.nnz() * 9 for _, layer in model.dg_layers())
    assert params(exported) == params(model) - removed < params(model.dense_counterpart())
    macs, dense_macs = count_macs(exported, x[:1]), full_macs(model, (1, 28, 28))
    assert macs < dense_macs and count_macs(model, x[:1]) == macs  # eval mode of the trainable model is grouped too
    saved = (model.dense_complexity("macs") - model.complexity("macs").item()) * 28 * 28
    assert dense_macs - macs == pytest.approx(saved)


def test_flop_counter_equals_trace_of_exported():
    exported = make().inference_form().eval()
    x = torch.randn(3, 1, 28, 28)
    _, trace = traced_forward(exported, x)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        exported(x)
    assert counter.get_total_flops() == pytest.approx(2 * float(trace.macs.sum()))
    assert trace.decisions == [[], [], []]  # the structure is per model, not per image
    assert count_macs(exported, x[:1]) == pytest.approx(float(trace.macs[0]))


def test_structure_survives_export():
    model = make()
    exported = model.inference_form()
    s = model.structure()
    assert s == exported.structure()
    assert [e["layer"] for e in s] == [name for name, _ in model.dg_layers()]
    e = s[2]
    assert e["kind"] == "groups" and e["groups"] == len(set(e["group_of_channel"])) and len(e["group_of_channel"]) == 32
    assert "mask" not in e
    with_mask = exported.structure(mask=True)
    for entry, (name, mask) in zip(with_mask, model.masks().items()):
        assert entry["layer"] == name and torch.equal(torch.tensor(entry["mask"]).float(), mask)
    assert exported.inference_form().structure() == s  # exporting twice is harmless


# --- budgeted training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ("hinge", "power"))
def test_budget_penalty_alone_lowers_complexity(form):
    torch.manual_seed(0)
    model = create_model("dgconv_resnet8", in_chans=1)  # dense start: every gate on
    thetas = [layer.theta for _, layer in model.dg_layers()]
    optimizer = torch.optim.SGD(thetas, lr=1.0)
    ratios = []
    for _ in range(8):
        ratio = model.complexity_ratio()
        ratios.append(ratio.item())
        loss = budget_loss(torch.tensor(1.0), ratio, budget=0.25, weight=1.0, form=form)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ratios[0] == 1.0 and ratios[-1] < 0.5
    assert all(b <= a for a, b in zip(ratios, ratios[1:]))
    under = model.complexity_ratio()  # under budget: no pull on the gates
    for p in thetas:
        p.grad = None
    budget_loss(torch.tensor(1.0), under, budget=under.item() + 0.01, weight=1.0, form=form).backward()
    assert all(p.grad is None or not p.grad.any() for p in thetas)


def test_recipe_reads_options_and_step_trains_gates():
    parser = argparse.ArgumentParser()
    add_options(parser, DGConvOptions)
    args = parser.parse_args(
        ["--budget", "0.3", "--budget-weight", "2", "--budget-loss", "power", "--gate-lr-scale", "3"]
    )
    args.epochs, args.lr, args.weight_decay = 1, 0.05, 5e-4
    (stage,) = dgconv_recipe(args)
    assert isinstance(stage, BudgetedStage) and (stage.budget, stage.budget_weight, stage.budget_loss) == (
        0.3,
        2.0,
        "power",
    )
    assert stage.gate_lr_scale == 3.0
    (default,) = dgconv_recipe(run_args(epochs=1, lr=0.1))
    assert default.budget == 0.5 and default.budget_loss == "hinge" and default.complexity == "macs"
    model = create_model("dgconv_resnet8", in_chans=1).train()
    y = torch.randint(0, 10, (8,))
    out = stage.training_step(model, torch.randn(8, 1, 28, 28), y)
    assert out.logits.shape == (8, 10) and out.loss >= F.cross_entropy(out.logits, y)
    out.loss.backward()
    assert all(layer.theta.grad is not None and layer.theta.grad.abs().sum() > 0 for _, layer in model.dg_layers())
    with pytest.raises(ValueError):
        BudgetedStage(1, 0.1, budget=1.5)


def test_checkpoint_roundtrip_loads_exported_form(tmp_path):
    model = make()
    save_checkpoint(tmp_path / "g.pt", model, META)
    state = read_checkpoint(tmp_path / "g.pt")["state_dict"]
    assert "layer2.0.conv2.theta" in state and state["layer2.0.conv2.weight"].shape == (32, 32, 3, 3)
    loaded = load_checkpoint(tmp_path / "g.pt")
    assert isinstance(loaded, DGConvResNet) and not loaded.training and loaded.method == "dgconv"
    assert not any(isinstance(m, DGConv2d) for m in loaded.modules())
    assert loaded.meta == META and loaded.arch == "dgconv_resnet8" and loaded.arch_config == model.arch_config
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.inference_form()(x), atol=1e-5, rtol=1e-5)  # BN folded too
    assert loaded.structure() == model.structure()
    plain = count_macs(create_model("resnet8", in_chans=1), x[:1])
    assert full_macs(loaded, (1, 28, 28)) == full_macs(model, (1, 28, 28)) == plain


def test_training_run_and_inspect(fmnist_dir, tmp_path):
    from routescope.analysis.core.trace import trace_batch
    from routescope.models import train

    args = [
        "--model",
        "dgconv_resnet8",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--limit-batches",
        "2",
        "--no-progress",
        "--lr",
        "0.05",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path),
        "--name",
        "g",
    ]
    assert train.main(args) == 0
    model = load_checkpoint(tmp_path / "g.pt")
    metrics = model.meta["metrics"]
    assert model.meta["method"] == "dgconv" and metrics["macs_mean"] <= metrics["macs_full"]
    assert metrics["params"] == sum(p.numel() for p in model.parameters()), "metrics describe the exported model"
    (record,) = trace_batch(model, torch.randn(1, 1, 28, 28), ["x.png"])
    assert record["decisions"] == [] and [e["layer"] for e in record["structure"]][0] == "layer1.0.conv1"
    assert record["cost"]["macs_full"] == metrics["macs_full"]
