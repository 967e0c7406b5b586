"""Perturbations of the uint8 image a model saw, swept over a strength: does the routing follow the content?

Each transformation takes uint8 images (N x C x H x W) and one strength and returns uint8 images of the same
size, so the model sees them exactly as it sees a test image (normalized with its own mean and std).
``perturbation_sweep`` traces one image at every strength and returns the decisions, the probability of the
original prediction and the MACs per strength (what the Inspect page plots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from routescope.analysis.core.charts import COMPACT
from routescope.analysis.core.kinds import grouped, routing_pattern
from routescope.analysis.core.units import MILLION
from routescope.models.data import normalize
from routescope.models.decisions import decision_kind
from routescope.models.trace import traced_forward


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Zoom the content of uint8 images by ``scale`` about the centre, keeping the size (zero fill)."""
    n, c, h, w = images.shape
    theta = torch.tensor([[1 / scale, 0, 0], [0, 1 / scale, 0]], dtype=torch.float32).expand(n, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, (n, c, h, w), align_corners=False)
    out = torch.nn.functional.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return _to_uint8(out)


def brightness(images: torch.Tensor, shift: float) -> torch.Tensor:
    """Add ``shift`` (a fraction of full scale, -1..1) to every pixel."""
    return _to_uint8(images.float() + 255 * shift)


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each image's deviation from its own mean by ``factor`` (0: flat grey, 1: unchanged)."""
    x = images.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _to_uint8(mean + factor * (x - mean))


def gaussian_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (a fraction of full scale), the same noise per seed so a
    sweep changes only the strength."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return _to_uint8(images.float() + 255 * sigma * noise)


def occlusion(images: torch.Tensor, position: float, size: float = 0.35) -> torch.Tensor:
    """A black square of side ``size`` (a fraction of the image) moved along the diagonal: ``position`` 0 is the
    top-left corner, 1 the bottom-right."""
    n, c, h, w = images.shape
    ph, pw = max(1, round(size * h)), max(1, round(size * w))
    top, left = round(position * (h - ph)), round(position * (w - pw))
    out = images.clone()
    out[:, :, top : top + ph, left : left + pw] = 0
    return out


@dataclass(frozen=True)
class Perturbation:
    """A transformation, the range of its strength and the strength that leaves the image unchanged."""

    label: str
    apply: Callable[[torch.Tensor, float], torch.Tensor]
    low: float
    high: float
    identity: float | None
    unit: str


PERTURBATIONS: dict[str, Perturbation] = {
    "brightness": Perturbation("brightness shift", brightness, -0.6, 0.6, 0.0, "fraction of full scale"),
    "contrast": Perturbation("contrast factor", contrast, 0.0, 2.0, 1.0, "x deviation from the mean"),
    "noise": Perturbation("Gaussian noise sigma", gaussian_noise, 0.0, 0.5, 0.0, "fraction of full scale"),
    "occlusion": Perturbation("occluding patch position", occlusion, 0.0, 1.0, None, "along the diagonal"),
    "scale": Perturbation("object scale", rescale, 0.5, 1.5, 1.0, "zoom about the centre"),
}


def pixels_tensor(pixels: np.ndarray) -> torch.Tensor:
    """The (H, W) or (H, W, 3) uint8 picture a ``ModelInput`` holds, as a 1 x C x H x W uint8 tensor."""
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).to(torch.uint8)


def decision_values(decisions: list[dict]) -> dict[str, float]:
    """``{layer: signature value}`` of the numeric parts of an image's routing (skip bit, width, dominant expert);
    a kind whose signature is not a number (the exit taken) is left to the pattern column."""
    out = {}
    for kind, entries in grouped(decisions).items():
        signature = decision_kind(kind).signature
        for entry in entries if signature is not None else []:
            value = signature(entry)
            if isinstance(value, (int, float)):  # bools are ints
                out[entry["layer"]] = float(value)
    return out


def perturbed(pixels: torch.Tensor, name: str, strengths: Sequence[float]) -> torch.Tensor:
    """The uint8 image ``pixels`` (1 x C x H x W) under perturbation ``name`` at each strength, as one batch."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    return torch.cat([PERTURBATIONS[name].apply(pixels, float(s)) for s in strengths])


@torch.no_grad()
def perturbation_sweep(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    name: str,
    strengths: Sequence[float],
    target: int | None = None,
    overrides: dict | None = None,
    knobs: dict | None = None,
) -> pd.DataFrame:
    """One row per strength: ``strength, predicted, probability`` (of class ``target``, default the unperturbed
    prediction), ``macs``, ``pattern`` and one column per decision layer (its signature value), from one traced
    batch of every perturbed copy of the uint8 image ``pixels`` (1 x C x H x W)."""
    perturbation = PERTURBATIONS[name]
    meta = model.meta
    batch = perturbed(pixels, name, strengths)
    if target is None:
        logits, _ = traced_forward(
            model, normalize(pixels, meta["mean"], meta["std"]), overrides=overrides, knobs=knobs
        )
        target = int(logits.argmax(1))
    logits, trace = traced_forward(model, normalize(batch, meta["mean"], meta["std"]), overrides=overrides, knobs=knobs)
    probabilities = logits.softmax(1)
    rows = []
    for i, strength in enumerate(strengths):
        rows.append(
            {
                "strength": float(strength),
                "predicted": meta["classes"][int(probabilities[i].argmax())],
                "probability": float(probabilities[i, target]),
                "macs": float(trace.macs[i]),
                "pattern": routing_pattern(trace.decisions[i]),
                **decision_values(trace.decisions[i]),
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs.update(target=meta["classes"][target], perturbation=perturbation.label)
    return frame


def perturbation_figure(frame: pd.DataFrame) -> go.Figure:
    """Probability of the original prediction and MACs (top), each decision layer's value (bottom: a heatmap row per
    layer, the value written in each cell), vs strength."""
    layers = [c for c in frame.columns if c not in ("strength", "predicted", "probability", "macs", "pattern")]
    figure = make_subplots(
        rows=2 if layers else 1,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        specs=[[{"secondary_y": True}]] + ([[{}]] if layers else []),
    )
    hover = [f"predicted {p}<br>pattern {q or '-'}" for p, q in zip(frame["predicted"], frame["pattern"])]
    figure.add_trace(
        go.Scatter(
            x=frame["strength"],
            y=frame["probability"],
            name=f"p({frame.attrs.get('target', 'class')})",
            mode="lines+markers",
            hovertext=hover,
            hovertemplate="p = %{y:.1%}<br>%{hovertext}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=frame["strength"],
            y=frame["macs"] / MILLION,
            name="MACs",
            mode="lines+markers",
            line=dict(dash="dot"),
            hovertemplate="%{y:.2f} M MACs<extra></extra>",
        ),
        row=1,
        col=1,
        secondary_y=True,
    )
    if layers:  # one row per decision layer: its signature value (text) on one absolute colour scale, so an
        # all-0 row and an all-1 row look different (0/1 gates, widths, expert indices: the value, not its rank)
        values = frame[layers].to_numpy(dtype=float).T
        low, high = min(0.0, float(np.nanmin(values))), max(1.0, float(np.nanmax(values)))
        figure.add_trace(
            go.Heatmap(
                x=frame["strength"],
                y=layers,
                z=values,
                zmin=low,
                zmax=high,
                text=[[f"{v:g}" for v in row] for row in values],
                texttemplate="%{text}",
                colorscale="Blues",
                colorbar=dict(title="decision<br>value", len=0.45, y=0.22, thickness=12),
                xgap=1,
                ygap=1,
                name="decisions",
                hovertemplate="%{y} at %{x}: %{text}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    figure.update_yaxes(title_text="probability", range=[0, 1], tickformat=".0%", row=1, col=1, secondary_y=False)
    figure.update_yaxes(title_text="MACs (millions)", ticksuffix=" M", tickformat=".1f", row=1, col=1, secondary_y=True)
    if layers:
        figure.update_yaxes(title_text="decision", autorange="reversed", row=2, col=1)
    figure.update_xaxes(title_text=frame.attrs.get("perturbation", "strength"), row=2 if layers else 1, col=1)
    return figure.update_layout(
        title=f"Perturbation sweep: {frame.attrs.get('perturbation', '')}",
        height=330 + 22 * len(layers) if layers else 300,
        **COMPACT,
    )
