"""The optional hooks a RouteScope model may implement, each declared once with its meaning and its default.

Every model derives from ``RouteScopeModel`` (the backbones do; the methods derive from a backbone) and overrides
the hooks it needs, so shared code (cost, inference forms, evaluation, training, benchmarks, analysis) calls them
directly instead of probing with ``getattr``. Layer-level hooks are structural (``typing.Protocol``): the reusable
layers of ``models.layers`` implement them without importing anything from the rest of ``models``.

One name per idea: ``inference_form()`` is the model the exported inference runs (DGConv's grouped convs);
the *fast form* (``models.inference.fast_form``) folds BatchNorms, calls each module's ``prepare_fast_form()``
and marks the model ``is_fast_form``.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn as nn

Forward = Callable[[torch.Tensor], torch.Tensor]


class RouteScopeModel(nn.Module):
    """The base class of every RouteScope model: the optional model-level hooks and their defaults."""

    static_variants: str | None = None  # label prefix of the evaluation_variants() that are static networks
    benchmark_batch: int | None = None  # the batch tools.bench measures throughput at (None: its default)
    is_fast_form: bool = False  # set by models.inference.fast_form; save_checkpoint refuses such a model
    memory_format: str = "contiguous"  # of the weights (models.memory_format; the fast form measures it)

    def decision_layers(self) -> dict[str, str]:
        """``{layer: kind name}`` of every per-image decision the model can take (what overrides may name)."""
        return {}

    def costliest_path(self) -> dict[str, dict]:
        """Overrides (``{layer: {field: value}}``) under which an image runs every layer the model has: every block,
        the widest width, no early exit. The fast form measures the memory format on it, so that a random image's
        own decisions (noise leaving at the first exit) do not choose the layout for the layers real images reach;
        {} (the default): the model's work does not depend on its input."""
        return {}

    def knobs(self) -> dict[str, dict]:
        """Inference settings with their ranges: ``{name: {"low", "high", "default", "help"}}``; {} if none."""
        return {}

    def structure(self) -> list[dict]:
        """Per-model learned structure entries (kinds ``groups``, ``filters``) for the trace; [] if none."""
        return []

    def dense_counterpart(self) -> nn.Module | None:
        """The dense network of this model's family (what MAC ratios and benchmarks compare with); None: the model
        is its own dense network."""
        return None

    def keep_dense_counterpart(self, dense: nn.Module) -> None:
        """From now on ``dense_counterpart()`` returns ``dense`` (the fast form's, built once). An instance
        attribute, not a submodule: the state_dict gets no extra keys."""
        object.__setattr__(self, "dense_counterpart", lambda: dense)

    def evaluation_variants(self) -> dict[str, Forward]:
        """``{label: forward}`` that ``models.evaluation.evaluate`` also measures on the same images; {} if none."""
        return {}

    def benchmark_references(self) -> dict[str, Forward | tuple[Forward, Forward]]:
        """What ``tools.bench`` times the model against besides its dense counterpart (a forward, or a
        ``(subject, reference)`` pair); {} if none."""
        return {}

    def upcycle(self, dense_state: dict[str, torch.Tensor]) -> list[str]:
        """Derive weights from a dense checkpoint's tensors that matched no key (``models.train --init-from``);
        returns the names used ([]: nothing derived)."""
        return []

    def inference_form(self) -> nn.Module:
        """The model inference runs, before the fast form: a new model where the layout differs (DGConv's
        exported grouped convs), else ``self``."""
        return self


@runtime_checkable
class FoldsBatchNorm(Protocol):
    """A conv-like layer that takes the BatchNorm following it in: returns the fused layer (the fast form)."""

    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> nn.Module: ...


@runtime_checkable
class FoldsOwnBatchNorms(Protocol):
    """A module that folds its BatchNorms itself (DS-Net: per-width statistics); returns how many it folded."""

    def fold_batchnorms(self) -> int: ...


@runtime_checkable
class PreparesFastForm(Protocol):
    """A module with a cheaper inference computation, switched on in place by the fast form."""

    def prepare_fast_form(self) -> None: ...


@runtime_checkable
class RunsCompiled(Protocol):
    """A module that may run the compiled batch-1 kernels (``models.layers.fused``); False turns them off."""

    compiled: bool
