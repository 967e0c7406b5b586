"""Which memory layout a 4-D tensor is in, for layers that make weights of their own to match it.

A fast form may run channels-last (``models.memory_format``); a layer that builds a kernel at run time (CondConv's
mixtures, DGConv's dense plan) makes it in its input's or weights' layout, so that the convolution does not reorder
it on every call. A tensor that is both layouts (one channel, or 1 x 1 spatial) counts as contiguous.
"""

from __future__ import annotations

import torch


def channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is channels-last and not also plain contiguous."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def layout_of(t: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` or ``torch.contiguous_format``, as ``t`` is laid out."""
    return torch.channels_last if channels_last(t) else torch.contiguous_format
