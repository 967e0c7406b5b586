"""The declaration that makes ``convnet_aig.models.ConvNetAIG`` a RouteScope plug-in: the only module of this package
that imports RouteScope. The entry point ``convnet_aig`` (pyproject.toml) names ``PLUGIN``.

Each block's gate is a ``skip`` decision, read from the gate's logits and forced by replacing them. The model masks,
so the block's residual branch runs whatever the gate says: ``saves`` names it, and RouteScope's decided cost leaves
out what it executed for the images whose gate was off.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from routescope import DecisionPoint, ModelPlugin, Site

from .models import ConvNetAIG

WEIGHTS = Path(__file__).with_name("weights.pt")  # from train.py; random weights (seed 0) without it
FASHION_MNIST = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def build(weights: str | Path | None) -> nn.Module:
    """The model with its trained weights, or seeded random ones."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ConvNetAIG()
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def read_gate(site: Site) -> dict:
    """The gate's logits (off, on): the block runs where "on" wins."""
    logits = site.output
    return {"executed": logits.argmax(1) == 1, "probability": logits.softmax(1)[:, 1]}


def force_gate(site: Site, executed: bool) -> torch.Tensor:
    """Logits that make the gate's argmax the forced choice."""
    choice = torch.tensor([-1e4, 1e4] if executed else [1e4, -1e4], dtype=site.output.dtype, device=site.output.device)
    return choice.expand_as(site.output)


class _Ungated(nn.Module):
    """The same ResNet with every block run and no gate computed: the dense counterpart (``macs_full``)."""

    def __init__(self, model: ConvNetAIG) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, gated=False)


PLUGIN = ModelPlugin(
    name="convnet_aig_resnet8",
    build=build,
    weights=WEIGHTS if WEIGHTS.is_file() else None,
    classes=FASHION_MNIST,
    input_size=(1, 28, 28),
    mean=(0.286,),
    std=(0.353,),
    dark_background=True,
    method="convnet_aig",
    dataset="fashion-mnist",
    decisions=[
        DecisionPoint(
            module=f"blocks.{i}.gate",
            kind="skip",
            read=read_gate,
            force=force_gate,
            layer=f"blocks.{i}",
            saves=(f"blocks.{i}.residual",),
        )
        for i in range(3)
    ],
    dense=_Ungated,
    cam_layer="pool",
    summary="ConvNet-AIG (Veit & Belongie 2018): a gate per block, masked execution",
)
