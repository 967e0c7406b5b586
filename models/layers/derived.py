"""A tensor a layer makes from one of its weights at inference (a reordered or expanded copy), made again when the
weight changes.

The weight changes in place (``fold_batchnorm``, ``load_state_dict``: its version counter moves) or is swapped for
new storage (``Module.to``: a device, dtype or memory format; its data pointer moves). The copy lives in an object of
its own, not in the module's attributes, so making it does not change the module's state: the app shares one model
between sessions, and its tests fingerprint the module to prove that a request never mutates it.
"""

from __future__ import annotations

from typing import Callable

import torch


class DerivedWeight:
    """``get(weight, make)``: ``make(weight)``, kept until ``weight`` changes."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._value: torch.Tensor | tuple | None = None

    def get(self, weight: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor | tuple]) -> torch.Tensor | tuple:
        # an inference tensor (made under torch.inference_mode) keeps no version counter: its storage alone
        key = (weight.data_ptr(), -1 if weight.is_inference() else weight._version)
        if key != self._key:
            self._value, self._key = make(weight), key
        return self._value
