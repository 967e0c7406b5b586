"""Why did the model decide this? captum attributions of the prediction and of a single routing decision.

A decision (a SkipNet gate probability, a DS-Net width probability, a CondConv routing weight) is made a
differentiable function of the input by running the model inside a ``Trace(keep_tensors=True)`` and
reading the recorded tensor, so Integrated Gradients explains the decision exactly as the model
computes it at inference (true skipping included: along the IG path the executed blocks may change).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

from models.trace import traced_forward

DECISION_FIELDS = {"skip": "probability", "width": "probabilities", "routing": "weights"}


@dataclass
class Attribution:
    """A (H, W) relevance map, what it explains, and IG's convergence delta (None for GradCAM)."""

    heatmap: np.ndarray
    target: str
    method: str
    delta: float | None


def decision_function(model: torch.nn.Module, layer: str, kind: str, option: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> the recorded decision value of ``layer`` (one scalar per input; ``option`` picks a width/expert)."""
    field = DECISION_FIELDS[kind]

    def forward(x: torch.Tensor) -> torch.Tensor:
        _, trace = traced_forward(model, x, keep_tensors=True)
        value = trace.tensor(layer, field)
        return value[:, option] if value.ndim == 2 else value.reshape(len(x))

    return forward


def _channel_sum(attribution: torch.Tensor) -> np.ndarray:
    return attribution.detach()[0].sum(0).cpu().numpy()


def integrated_gradients(forward: Callable, x: torch.Tensor, target: int | None = None, steps: int = 32) -> tuple[np.ndarray, float]:
    """IG from an all-zeros baseline in normalized space (the data set's mean image)."""
    x = x.detach().requires_grad_(True)
    attribution, delta = IntegratedGradients(forward).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=steps, internal_batch_size=steps, return_convergence_delta=True)
    return _channel_sum(attribution), float(delta.abs().max())


def explain_prediction(model: torch.nn.Module, x: torch.Tensor, target: int, method: str = "integrated_gradients") -> Attribution:
    """Relevance of each pixel for the logit of class ``target`` (x: one normalized image, 1xCxHxW)."""
    label = model.meta["classes"][target]
    if method == "gradcam":
        cam = LayerGradCam(model, model.pool).attribute(x, target=target, attribute_to_layer_input=True, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
        return Attribution(upsampled[0, 0].numpy(), f"class '{label}'", "GradCAM (last feature map)", None)
    heatmap, delta = integrated_gradients(model, x, target=target)
    return Attribution(heatmap, f"class '{label}'", "Integrated Gradients", delta)


def explain_decision(model: torch.nn.Module, x: torch.Tensor, layer: str, kind: str, option: int | None = None) -> Attribution:
    """Relevance of each pixel for one decision: a gate probability, a width probability or a routing weight."""
    heatmap, delta = integrated_gradients(decision_function(model, layer, kind, option), x)
    what = {"skip": "gate probability", "width": f"probability of width choice {option}", "routing": f"routing weight of expert {option}"}
    return Attribution(heatmap, f"{layer}: {what[kind]}", "Integrated Gradients", delta)
