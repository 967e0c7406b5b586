"""The uniform-group ResNet, DGConv's hand-set control: its MACs, its start from a dense checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from routescope.models import create_model, load_checkpoint
from routescope.models.cost import count_macs, full_macs
from routescope.models.errors import UsageError
from routescope.models.train import init_from

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained"


def test_macs_match_the_dgconv_flagship():
    """(2, 4, 1) groups per stage: the MACs of dgconv_resnet20_fmnist_b0.6_e8 (within 2%, here exactly)."""
    model = create_model("grouped_resnet20", num_classes=10, in_chans=1).eval()
    dgconv = load_checkpoint(PRETRAINED / "dgconv_resnet20_fmnist_b0.6_e8.pt")
    target = dgconv.meta["metrics"]["macs_mean"]
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == pytest.approx(target, rel=0.02)
    assert full_macs(model, (1, 28, 28)) == dgconv.meta["metrics"]["macs_full"]


def test_groups_are_the_stages_and_downsampling_convs_stay_dense():
    model = create_model("grouped_resnet20", groups=(2, 4, 1))
    groups = {name: m.groups for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert groups["layer1.0.conv1"] == 2 and groups["layer2.1.conv2"] == 4 and groups["layer3.1.conv1"] == 1
    assert groups["layer2.0.conv1"] == 1 and groups["layer2.0.conv2"] == 4
    with pytest.raises(UsageError, match="divisor"):
        create_model("grouped_resnet20", groups=(3, 1, 1))


def test_starts_from_the_block_diagonal_of_the_dense_kernels():
    """A grouped conv started from a dense one computes the dense conv with the off-diagonal blocks zeroed."""
    model = create_model("grouped_resnet20", num_classes=10, in_chans=1)
    init_from(model, str(PRETRAINED / "resnet20_fmnist.pt"))
    dense = load_checkpoint(PRETRAINED / "resnet20_fmnist.pt", form="train").state_dict()["layer2.1.conv1.weight"]
    conv = model.layer2[1].conv1
    mask = torch.block_diag(*[torch.ones(8, 8)] * 4)[:, :, None, None]
    x = torch.randn(2, 32, 7, 7)
    assert torch.allclose(conv(x), F.conv2d(x, dense * mask, padding=1), atol=1e-5)
