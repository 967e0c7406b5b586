"""A batch's rows grouped by a key on the device, with one host read: how many rows each key has.

Dynamic networks run each group of rows that took the same decision together (DS-Net's widths, CondConv's forced
experts). On a GPU the group sizes are the one value the host must wait for (the shapes of what runs next); the sort
and the reassembly stay on the device.
"""

from __future__ import annotations

import torch


def group_rows(keys: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, list[int]]:
    """``(order, sizes)``: ``order`` sorts the rows by key (stable: the rows of one key keep their order) and
    ``sizes[k]`` counts the rows of key ``k`` (the one host read)."""
    order = torch.sort(keys, stable=True).indices
    sizes = torch.zeros(num_keys, dtype=torch.long, device=keys.device)
    return order, sizes.index_add_(0, keys, torch.ones_like(keys)).tolist()


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """The permutation that puts rows taken in ``order`` back where they came from."""
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
