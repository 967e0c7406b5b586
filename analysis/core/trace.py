"""The routing trace (docs/trace.md): one JSON-ready dict per image, from one real (traced) forward pass."""

from __future__ import annotations

from functools import lru_cache

import torch

from routescope.models.cost import full_macs
from routescope.models.protocol import RouteScopeModel
from routescope.models.trace import traced_forward


def model_summary(model: torch.nn.Module) -> dict:
    meta = model.meta
    return {"name": meta["name"], "method": meta["method"], "dataset": meta["dataset"]}


@lru_cache(maxsize=32)
def _dense_macs(model: torch.nn.Module) -> int:
    return full_macs(model, tuple(model.meta["input_size"]))


def dense_macs(model: torch.nn.Module) -> int:
    """``cost.macs_full``: the dense backbone's MACs, from the meta when measured, else counted once."""
    measured = model.meta.get("metrics", {}).get("macs_full")
    return int(measured) if measured else _dense_macs(model)


def model_structure(model: RouteScopeModel) -> list[dict]:
    """Per-model learned structure (DGConv groups, RePr filter overlaps); empty for other methods."""
    return model.structure()


def trace_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    names: list[str],
    structure: bool = True,
    top: int = 5,
    overrides: dict | None = None,
    knobs: dict | None = None,
) -> list[dict]:
    """Routing traces for a batch ``x`` (normalized like the model's data) named ``names``, with decisions forced
    by ``overrides`` and settings moved by ``knobs`` (``models.trace.traced_forward``)."""
    logits, trace = traced_forward(model, x, overrides=overrides, knobs=knobs)
    probabilities = logits.softmax(1).cpu()
    classes = model.meta["classes"]
    shared = {"model": model_summary(model)}
    per_model = model_structure(model) if structure else None
    full = dense_macs(model)
    decided = trace.decided_macs
    out = []
    for i, name in enumerate(names):
        p, order = probabilities[i].sort(descending=True)
        record = {
            "image": name,
            **shared,
            "prediction": {
                "index": int(order[0]),
                "label": classes[int(order[0])],
                "probability": round(float(p[0]), 6),
            },
            "top": [
                {"index": int(k), "label": classes[int(k)], "probability": round(float(q), 6)}
                for q, k in zip(p[:top], order[:top])
            ],
            "cost": {
                "macs": int(round(float(trace.macs[i]))),
                "macs_full": full,
                **({} if decided is None else {"macs_decided": int(round(float(decided[i])))}),
            },
            "decisions": trace.decisions[i],
        }
        if per_model is not None:
            record["structure"] = per_model
        out.append(record)
    return out
