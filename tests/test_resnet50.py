"""The ImageNet ResNet-50 backbone (bottleneck blocks, four stages, 7x7 stem) of the paper-scale bench: torchvision's
layout exactly, and SkipNet, DS-Net and early exit on it behave as on the CIFAR ResNets (fast form = training form,
trace MACs = FlopCounterMode, forced decisions run the forced path). Small inputs keep these tests quick."""

import copy

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from routescope.analysis.core.scaling import block_positions, nearest_layer
from routescope.models import create_model
from routescope.models.inference import fast_form
from routescope.models.layers.slimmable import SlimBatchNorm2d
from routescope.models.resnet import Bottleneck
from routescope.models.trace import forced_forward, traced_forward

from helpers import randomize_batchnorm, routing_decisions

DYNAMIC = ("skipnet_resnet50", "dsnet_resnet50", "early_exit_resnet50")


@torch.no_grad()
def trained_looking(name: str, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name, num_classes=10, **cfg).eval())
    for m in model.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0)
    return model


def test_resnet50_is_torchvisions_layout():
    model = create_model("resnet50")
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision.models.resnet50
    blocks = model.named_blocks()
    assert [len(stage) for stage in model.stages()] == [3, 4, 6, 3] and all(
        isinstance(b, Bottleneck) for _, b in blocks
    )
    assert blocks[-1][0] == "layer4.2" and model.fc.in_features == 2048
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    assert 4.05e9 < flops.get_total_flops() / 2 < 4.15e9  # the 4.1 GMACs of the paper's Table 1


@pytest.mark.parametrize("name", DYNAMIC)
def test_methods_on_resnet50_fast_form_and_macs(name):
    model = trained_looking(name)
    fast = fast_form(copy.deepcopy(model))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want, want_trace = traced_forward(model, x)
        got, got_trace = traced_forward(fast, x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert routing_decisions(got_trace) == routing_decisions(want_trace)
        torch.testing.assert_close(got_trace.macs, want_trace.macs, rtol=0, atol=0)
        with FlopCounterMode(display=False) as flops:
            fast(x[:1])
        assert got_trace.macs[0].item() == pytest.approx(flops.get_total_flops() / 2)
        dense = fast.dense_counterpart()
        assert type(dense).__name__ == "ResNet" and len(dense.stages()) == 4


def test_forcing_on_resnet50_runs_the_forced_path():
    x = torch.randn(1, 3, 64, 64)
    skipnet = fast_form(trained_looking("skipnet_resnet50"))
    all_off = {name: {"executed": False} for name in skipnet.gate_names}
    _, trace = traced_forward(skipnet, x, overrides=all_off)
    _, dense_trace = traced_forward(skipnet, x, overrides={name: {"executed": True} for name in skipnet.gate_names})
    assert trace.macs[0] < 0.3 * dense_trace.macs[0]  # only the stem, layer1.0 and the projection shortcuts ran
    dsnet = fast_form(trained_looking("dsnet_resnet50"))
    narrow = {name: {"width": 0.25} for name in dsnet.gate_names}
    _, trace = traced_forward(dsnet, x, overrides=narrow)
    assert [d["width"] for d in trace.decisions[0]] == [0.25, 0.25, 0.25]
    torch.testing.assert_close(forced_forward(dsnet, x, narrow), dsnet(x, width=0.25), rtol=1e-5, atol=1e-5)


def test_dsnet_resnet50_static_subnet_is_a_plain_resnet50():
    model = trained_looking("dsnet_resnet50", attention=False)
    x = torch.randn(2, 3, 64, 64)
    subnet = model.static_subnet(0.5).eval()
    assert subnet.widths == (64, 64, 128, 256) and subnet.fc.in_features == 1024  # layer1 stays full width
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), model(x, width=0.5), rtol=1e-5, atol=1e-5)


def test_decisions_carry_over_by_stage_aware_depth():
    resnet20 = [f"layer{s}.{j}" for s in (1, 2, 3) for j in range(3)]
    resnet50 = [name for name, _ in create_model("resnet50").named_blocks()]
    assert block_positions(resnet20)["layer2.1"] == pytest.approx(5 / 9)
    assert block_positions(resnet50)["layer4.2"] == 1.0 and block_positions(resnet50)["layer2.1"] == pytest.approx(
        3 / 8
    )
    assert nearest_layer("layer3.2", resnet20, resnet50, resnet50) == "layer4.2"
    assert nearest_layer("layer2.1", resnet50, resnet20, resnet20) == "layer1.2"  # 3/8 is nearest to 1/3
    assert nearest_layer("fc", resnet20, resnet50, resnet50) == "fc"


def test_paper_scale_row_on_resnet50():
    from tools import bench
    from routescope.analysis.core.catalog import PRETRAINED
    from routescope.models.checkpoint import load_checkpoint

    bundled = load_checkpoint(PRETRAINED / "early_exit_resnet20_fmnist.pt")
    row = bench.paper_scale_row(bundled, "resnet50", images=2, rounds=1, size=64)
    assert row["model"].startswith("early_exit_resnet50 at 64x64") and row["vs"] == "dense resnet50, same form"
    assert 0.0 < row["mac_ratio"] < 1.0 and row["batch"] == 1
    assert np.isfinite(row["latency_ratio"])
    assert bench.paper_scale_row(load_checkpoint(PRETRAINED / "dgconv_resnet20_fmnist_b0.6_e8.pt"), "resnet50") is None


def test_width_mix_carries_over_to_resnet50_stages():
    from routescope.analysis.core.catalog import PRETRAINED
    from routescope.analysis.core.kinds import kind_view
    from routescope.analysis.core.table import dataset_table, load_test_images
    from routescope.models.checkpoint import load_checkpoint

    bundled = load_checkpoint(PRETRAINED / "dsnet_resnet20_fmnist_grid4_hw6_long.pt")
    table = dataset_table(bundled, *load_test_images())
    target = create_model("dsnet_resnet50", num_classes=10)
    sample = kind_view("width").force_like(table, bundled, target)
    rng = np.random.default_rng(0)
    draws = [sample(rng) for _ in range(400)]
    assert set(draws[0]) == {"layer2", "layer3", "layer4"}
    for stage, source in (("layer2", "layer2"), ("layer4", "layer3")):
        assert np.mean([d[stage]["width"] for d in draws]) == pytest.approx(table[f"{source}/width"].mean(), abs=0.05)
