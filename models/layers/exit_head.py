"""Exit heads: the small classifiers an early-exit network attaches after chosen blocks.

``sdn`` is the internal classifier of Shallow-Deep Networks (Kaya et al., ICML 2019): the feature map is
reduced to 4x4 by a learned mix of max and average pooling (``alpha * max + (1 - alpha) * avg``,
``alpha`` one learned scalar per head, as in the SDN code), then one linear layer. ``pool`` is the
cheapest head: global average pooling and a linear layer. Pooling executes no multiply-adds, so a head
costs only its linear layer (a few thousand MACs here).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .fused import fused_ops, runs_compiled

EXIT_HEADS = ("sdn", "pool")


class ExitHead(nn.Module):
    """Feature map (N, C, H, W) -> class logits (N, classes)."""

    def __init__(self, channels: int, num_classes: int, kind: str = "sdn", reduced: int = 4) -> None:
        super().__init__()
        if kind not in EXIT_HEADS:
            raise UsageError(f"exit head must be one of {', '.join(EXIT_HEADS)}, not {kind!r}")
        self.kind, self.reduced = kind, reduced if kind == "sdn" else 1
        if kind == "sdn":
            self.alpha = nn.Parameter(torch.rand(1))
        self.fc = nn.Linear(channels * self.reduced * self.reduced, num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "pool":
            return F.adaptive_avg_pool2d(x, 1)
        if x.shape[-2:] == (self.reduced, self.reduced):
            return x
        # a map smaller than reduced x reduced (a small input to a deep network) is spread over it, so the
        # linear layer always sees the same number of features
        size = (self.reduced, self.reduced)
        return self.alpha * F.adaptive_max_pool2d(x, size) + (1 - self.alpha) * F.adaptive_avg_pool2d(x, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    compiled = False  # batch-1 ``decide`` runs the compiled kernel (``models.layers.fused``), set by the fast form

    def prepare_fast_form(self) -> None:
        self.compiled = fused_ops() and self.fc.weight.dtype == torch.float32

    def decide(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(logits, confidence)`` of one image (batch 1): the head and its max softmax."""
        if self.compiled and runs_compiled(x):
            alpha = float(self.alpha) if self.kind == "sdn" else 0.0
            return torch.ops.routescope.exit_head(x, alpha, self.fc.weight, self.fc.bias, self.reduced)
        z = self(x)
        return z, float(z.softmax(1).amax())
