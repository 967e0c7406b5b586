"""The declaration that makes ``sdn_exit.models.SDN`` a RouteScope plug-in: the only module of this package that
imports RouteScope. The entry point ``sdn_exit`` (pyproject.toml) names ``PLUGIN``.

Each internal classifier is an ``exit`` decision: the image leaves at the first one whose max softmax reaches the
``threshold`` knob. An exit point ENDS the forward pass (``exited`` is the kind's ending field): RouteScope's adapter
stops the model there and returns that classifier's logits, so the later blocks never run and the executed MACs are
only what ran. Forcing ``exited`` leaves (or passes) an exit whatever its confidence; the final classifier ``fc``
is always taken.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from routescope import DecisionPoint, ModelPlugin, Site

from .models import SDN

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
THRESHOLD = 0.9


def build(weights: str | Path | None) -> nn.Module:
    """The model with its trained weights, or seeded random ones."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SDN()
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def read_exit(site: Site) -> dict:
    """An internal classifier's confidence (max softmax) against the threshold."""
    confidence = site.output.softmax(1).amax(1)
    threshold = site.knob("threshold")
    return {"confidence": confidence, "exited": confidence >= threshold, "threshold": threshold}


def read_final(site: Site) -> dict:
    """The final classifier: every image that reaches it leaves there."""
    return {**read_exit(site), "exited": True}


class _Backbone(nn.Module):
    """The same ResNet without internal classifiers: the dense counterpart (``macs_full``)."""

    def __init__(self, model: SDN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, exits=False)[-1]


PLUGIN = ModelPlugin(
    name="sdn_resnet14",
    build=build,
    weights=WEIGHTS if WEIGHTS.is_file() else None,
    classes=FASHION_MNIST,
    input_size=(1, 28, 28),
    mean=(0.286,),
    std=(0.353,),
    dark_background=True,
    method="sdn",
    dataset="fashion-mnist",
    decisions=[
        *(DecisionPoint(module=f"exits.{i}", kind="exit", read=read_exit) for i in range(5)),
        DecisionPoint(module="fc", kind="exit", read=read_final),
    ],
    logits=lambda outputs: outputs[-1],
    dense=_Backbone,
    knobs={
        "threshold": {
            "low": 0.0,
            "high": 1.01,
            "default": THRESHOLD,
            "help": "an image leaves at the first internal classifier whose max softmax reaches this",
        }
    },
    cam_layer="pool",
    summary="Shallow-Deep Network (Kaya et al. 2019): internal classifiers, exit on confidence",
)
