"""Why did the model decide this? captum attributions of the prediction and of a single routing decision.

A decision (a SkipNet gate probability, a DS-Net width probability, a CondConv routing weight, an exit's
confidence: whatever its kind's ``KindView.targets`` offers) is made a
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

from routescope.analysis.core.kinds import AttributionTarget
from routescope.models.trace import traced_forward


@dataclass
class Attribution:
    """A (H, W) relevance map, what it explains, and IG's convergence delta with the change of the explained output
    between the baseline and the image that the attributions should add up to (None for GradCAM)."""

    heatmap: np.ndarray
    target: str
    method: str
    delta: float | None
    output_change: float | None = None

    @property
    def relative_delta(self) -> float | None:
        """IG's completeness error as a share of the output change it explains (``delta / |f(x) - f(baseline)|``):
        near 0 the map accounts for the output, near 1 or more it is not to be trusted."""
        if self.delta is None or self.output_change is None:
            return None
        return self.delta / max(abs(self.output_change), 1e-12)


def decision_function(
    model: torch.nn.Module, layer: str, field: str, option: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> the recorded decision ``field`` of ``layer`` (one scalar per input; ``option`` picks one element of a
    vector field, e.g. a width choice or an expert)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        _, trace = traced_forward(model, x, keep_tensors=True)
        value = trace.tensor(layer, field)
        return value[:, option] if value.ndim == 2 else value.reshape(len(x))

    return forward


def _channel_sum(attribution: torch.Tensor) -> np.ndarray:
    return attribution.detach()[0].sum(0).cpu().numpy()


def integrated_gradients(
    forward: Callable, x: torch.Tensor, target: int | None = None, steps: int = 32
) -> tuple[np.ndarray, float, float]:
    """IG from an all-zeros baseline in normalized space (the data set's mean image): the map, the convergence delta
    (|sum of the attributions - (f(x) - f(baseline))|) and the output change f(x) - f(baseline) (captum's signed delta
    is the sum minus that change)."""
    x = x.detach().requires_grad_(True)
    attribution, delta = IntegratedGradients(forward).attribute(
        x,
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=steps,
        internal_batch_size=steps,
        return_convergence_delta=True,
    )
    signed = float(delta.reshape(-1)[0])
    return _channel_sum(attribution), abs(signed), float(attribution.detach().sum()) - signed


def explain_prediction(
    model: torch.nn.Module, x: torch.Tensor, target: int, method: str = "integrated_gradients"
) -> Attribution:
    """Relevance of each pixel for the logit of class ``target`` (x: one normalized image, 1xCxHxW)."""
    label = model.meta["classes"][target]
    if method == "gradcam":
        cam = LayerGradCam(model, model.pool).attribute(
            x, target=target, attribute_to_layer_input=True, relu_attributions=True
        )
        upsampled = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
        return Attribution(upsampled[0, 0].numpy(), f"class '{label}'", "GradCAM (last feature map)", None)
    heatmap, delta, change = integrated_gradients(model, x, target=target)
    return Attribution(heatmap, f"class '{label}'", "Integrated Gradients", delta, change)


def explain_decision(model: torch.nn.Module, x: torch.Tensor, layer: str, target: AttributionTarget) -> Attribution:
    """Relevance of each pixel for one decision value (a target its kind's view offers: a gate probability, a
    width probability, a routing weight, an exit's confidence)."""
    heatmap, delta, change = integrated_gradients(decision_function(model, layer, target.field, target.option), x)
    return Attribution(heatmap, f"{layer}: {target.label}", "Integrated Gradients", delta, change)
