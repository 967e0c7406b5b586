"""Host reads of device values: what makes a GPU wait, counted on any device.

On an accelerator every read of a tensor's value by Python (``.item()``, ``.tolist()``, ``bool(t)``, ``nonzero``,
indexing with a boolean mask, ``.cpu()``) blocks until the queued kernels have run: in a dynamic network's hot loop,
one such read per block is what keeps a GPU launch-bound. ``HostReads`` counts these calls at the Python level
(a ``TorchFunctionMode``), so the CPU tests can hold each method's batched path to its budget (one read per
decision point that needs sizes on the host) without a GPU; ``torch.cuda.set_sync_debug_mode`` says the same on
a GPU, where ``tools.device_check`` reports both.

``synchronize`` waits for a device's queue, for timing code that must measure work and not its launch;
``alternating`` times several calls round by round with it (the one timing loop of the app, the benches, the
layers' measured plans and the fast form's memory format).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode

# Tensor methods and functions whose result needs the device's values on the host.
READS = frozenset(
    {
        "item",
        "tolist",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "nonzero",
        "unique",
        "unique_consecutive",
        "cpu",
        "numpy",
        "masked_select",
        "bincount",
        "repeat_interleave",
    }
)


def _is_mask_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostReads(TorchFunctionMode):
    """``with HostReads() as reads: model(x)``; then ``reads.total`` and ``reads.calls`` (name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.calls[name] += 1
        elif name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
            if _is_mask_index(args[1]):
                self.calls[f"{name} with a mask"] += 1
        return func(*args, **(kwargs or {}))


def synchronize(device: torch.device | str | None) -> None:
    """Wait until ``device`` has run everything queued (a no-op on the CPU and for None)."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def alternating(
    sides: Sequence[Callable[[], object]], rounds: int, device: torch.device | str | None = None
) -> list[list[float]]:
    """Seconds of each side's call per round, the sides timed round by round in ABBA order: the side that goes first
    swaps every round, so cache state and clock drift fall on both alike. ``device``: synchronised (CUDA) before each
    clock reading, so the time is the work's, not its launch's."""
    times: list[list[float]] = [[] for _ in sides]
    for r in range(rounds):
        for side in range(len(sides)) if r % 2 == 0 else reversed(range(len(sides))):
            synchronize(device)
            tic = time.perf_counter()
            sides[side]()
            synchronize(device)
            times[side].append(time.perf_counter() - tic)
    return times
