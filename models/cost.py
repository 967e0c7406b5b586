"""Compute accounting: MACs (1 per multiply-add) counted by PyTorch's own ``FlopCounterMode`` (2 FLOPs per MAC)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .protocol import RouteScopeModel


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one real forward of ``model`` on ``x`` (whatever batch size ``x`` has)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def full_macs(model: RouteScopeModel, input_size: tuple[int, int, int]) -> int:
    """MACs of the same backbone executing everything at full width, without gates or routers.

    Dynamic models say what their dense counterpart is with ``dense_counterpart()``; a static model (None) is
    its own counterpart.
    """
    dense = model.dense_counterpart()
    dense = model if dense is None else dense
    device = next(dense.parameters()).device
    return count_macs(dense, torch.zeros(1, *input_size, device=device))
