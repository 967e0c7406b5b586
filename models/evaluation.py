"""Accuracy and executed MACs of a model over a data set (``python -m models.evaluate`` prints them; training
measures them at the end of each run)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .cost import full_macs
from .data import DatasetInfo, collate_batch, normalize
from .devices import model_device
from .protocol import RouteScopeModel
from .trace import traced_forward


@torch.no_grad()
def accuracy_and_macs(
    forward: Callable[[torch.Tensor], torch.Tensor],
    data,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    limit: int | None = None,
    batch_size: int = 500,
    progress: bool = True,
    knobs: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness and executed MACs (from the trace) of ``forward`` over ``data`` (uint8 images,
    standardized with ``mean`` / ``std``), with inference settings ``knobs`` if given."""
    if limit is not None:
        data = Subset(data, range(min(limit, len(data))))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    correct, macs = [], []
    for images, labels in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        logits, trace = traced_forward(forward, normalize(images, mean, std).to(device), knobs=knobs)
        correct.append(logits.argmax(1).cpu() == labels)
        macs.append(trace.macs)
    return torch.cat(correct), torch.cat(macs)


@torch.no_grad()
def evaluate(
    model: RouteScopeModel,
    data,
    info: DatasetInfo,
    limit: int | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> dict:
    """Accuracy and per-image executed MACs over ``data`` (the first ``limit`` images if given).

    A model that declares ``evaluation_variants()`` (DS-Net: each static width) also gets the accuracy and
    mean MACs of each variant under ``"variants"``, so its results table compares them on the same images.
    """
    model.eval()
    device = model_device(model)
    correct, macs = accuracy_and_macs(model, data, info.mean, info.std, device, limit, batch_size, progress)
    dense = full_macs(model, info.input_size)
    metrics = {
        "test_acc": round(correct.float().mean().item(), 5),
        "n_test": len(correct),
        "macs_mean": round(macs.mean().item()),
        "macs_min": round(macs.min().item()),
        "macs_max": round(macs.max().item()),
        "macs_full": dense,
        "mac_ratio": round(macs.mean().item() / dense, 4),
        "params": sum(p.numel() for p in model.parameters()),
    }
    variants = model.evaluation_variants()
    if variants:
        metrics["variants"] = {}
        for label, forward in variants.items():
            v_correct, v_macs = accuracy_and_macs(
                forward, data, info.mean, info.std, device, limit, batch_size, progress
            )
            metrics["variants"][label] = {
                "test_acc": round(v_correct.float().mean().item(), 5),
                "macs_mean": round(v_macs.mean().item()),
                "mac_ratio": round(v_macs.mean().item() / dense, 4),
            }
    return metrics
