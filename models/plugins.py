"""The plug-in contract: a model written outside RouteScope, in plain PyTorch, declared in a few lines.

A ``ModelPlugin`` says how to build the model (and load its weights), how images reach it (input size, channels,
normalization, classes) and where its per-image decisions are: a ``DecisionPoint`` per decision, naming a module
(its dotted path), a decision kind (a built-in one, ``skip``, ``width``, ``routing``, ``exit``, or a
``DecisionKind`` the plug-in declares) and how to read the decision from that module's input or output; optionally
how to force it. RouteScope wraps the model in ``models.plugin_model.PluginModel`` (the protocol of
``models.protocol``), so the analysis, the command line and the app work on it unchanged; the model's own code
imports nothing from RouteScope.

A plug-in package names its declarations in the entry point group ``routescope.models`` (``models.plugin_registry``
finds them), or a command names its module with ``--plugin module.path``. This module is the declaration only:
plain dataclasses, no hooks, no loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn as nn

from .decisions import DecisionKind, decision_kind, register_kind

ENTRY_POINT_GROUP = "routescope.models"


@dataclass(frozen=True)
class Site:
    """What a decision point sees when its module runs inside a trace: the module, its positional inputs, its output
    (None at an ``"input"`` point, which runs before the module), and this call's knob values."""

    module: nn.Module
    inputs: tuple
    output: Any
    knobs: Mapping[str, float]

    def knob(self, name: str) -> float:
        return float(self.knobs[name])


Read = Callable[[Site], dict[str, Any]]
Force = Callable[[Site, Any], Any]


@dataclass(frozen=True)
class DecisionPoint:
    """One per-image decision of a plug-in model.

    - ``module``: dotted path of the module whose input or output holds the decision (``model.get_submodule``);
    - ``kind``: a declared kind's name (``"skip"``, ``"width"``, ``"routing"``, ``"exit"``) or a ``DecisionKind`` the
      plug-in declares (registered with ``models.decisions.register_kind`` when the model is loaded);
    - ``read(site)``: the kind's fields for the samples of this call, e.g. ``{"executed": gate > 0.5,
      "probability": p}`` (tensors with one row per sample, or one value for all);
    - ``force(site, value)``: what replaces the module's output (``at="output"``) or its positional inputs
      (``at="input"``, a forward-pre-hook-style override) when an override forces the kind's field to ``value``;
      None: the decision can be forced only where the adapter acts on it itself (an ``ends`` point);
    - ``layer``: the name in the trace and in overrides (default: ``module``);
    - ``saves``: modules (disjoint) whose MACs need not run where the decision is off (``off``): a masking model's
      gated block; the trace's *decided* cost leaves out what they executed for those samples;
    - ``off(fields)``: which samples the decision turns off (default for ``skip``: not ``executed``);
    - ``ends``: a boolean field whose truth ends the forward pass with this module's output as the logits (default
      for ``exit``: ``exited``): the later modules never run (``models.plugin_model``).
    """

    module: str
    kind: str | DecisionKind
    read: Read
    force: Force | None = None
    at: Literal["output", "input"] = "output"
    layer: str | None = None
    saves: tuple[str, ...] = ()
    off: Callable[[dict[str, Any]], Any] | None = None
    ends: str | None = None

    @property
    def name(self) -> str:
        """The decision's layer name (what the trace records and overrides name)."""
        return self.layer or self.module

    @property
    def kind_name(self) -> str:
        return self.kind if isinstance(self.kind, str) else self.kind.name

    def declared_kind(self) -> DecisionKind:
        """The kind, registered if the plug-in declares it (a ``KeyError`` naming the declared kinds otherwise)."""
        return register_kind(self.kind) if isinstance(self.kind, DecisionKind) else decision_kind(self.kind)

    def ending_field(self) -> str | None:
        return self.ends if self.ends is not None else "exited" if self.kind_name == "exit" else None

    def off_samples(self, fields: dict[str, Any]) -> Any | None:
        """The samples this decision turns off (bool per sample), or None when it turns nothing off."""
        if self.off is not None:
            return self.off(fields)
        return ~torch.as_tensor(fields["executed"], dtype=torch.bool) if self.kind_name == "skip" else None


@dataclass(frozen=True)
class ModelPlugin:
    """A model from outside RouteScope: how to build it, how images reach it, where its decisions are.

    ``build(weights)`` returns the ``nn.Module`` with its weights loaded (``weights``: the declared path, a path the
    user gives, or None); the module's forward takes the normalized batch (N, C, H, W). ``logits(output)`` picks the
    logits from what its forward returns (default: the output itself). ``dense(model)``, if given, is the dense
    network of its family (what ``macs_full`` counts); else the model run without any decision acting.
    ``knobs`` are inference settings a ``read`` can use (``site.knob(name)``), in ``RouteScopeModel.knobs()`` form.
    ``cam_layer`` names the module GradCAM attributes to (the app's "Explain", the last feature map's pooling).
    """

    name: str
    build: Callable[[str | Path | None], nn.Module]
    classes: Sequence[str]
    input_size: tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    decisions: Sequence[DecisionPoint] = ()
    method: str = "plugin"
    dataset: str = "custom"
    weights: str | Path | None = None
    logits: Callable[[Any], torch.Tensor] | None = None
    dense: Callable[[nn.Module], nn.Module] | None = None
    knobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    crop_pct: float | None = None
    dark_background: bool | None = None
    cam_layer: str | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        names = [point.name for point in self.decisions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"plug-in {self.name!r}: decision layer(s) {', '.join(repeated)} declared twice")
        if len(self.input_size) != 3:
            raise ValueError(f"plug-in {self.name!r}: input_size is (channels, height, width), not {self.input_size}")

    def meta(self) -> dict:
        """The meta a RouteScope checkpoint carries (``models.checkpoint.META_KEYS``), from the declaration."""
        meta: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "dataset": self.dataset,
            "classes": list(self.classes),
            "input_size": list(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "metrics": {},
            "recipe": {"plugin": self.name},
        }
        if self.crop_pct is not None:
            meta["crop_pct"] = float(self.crop_pct)
        if self.dark_background is not None:
            meta["dark_background"] = bool(self.dark_background)
        return meta
