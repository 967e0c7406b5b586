"""Per-input record of one forward pass: the decisions each dynamic layer took and the MACs really executed.

``traced_forward(model, x)`` runs the model inside a ``Trace``. Dynamic layers find the active trace with
``current_trace()`` and call ``record``; a layer that runs on part of the batch wraps that work in
``trace.subset(rows)``. MACs are counted at the ATen level with the formulas of
``torch.utils.flop_counter`` (the same ones ``FlopCounterMode`` uses, 2 FLOPs = 1 MAC), each op's
count being split evenly over the samples it ran on, so a skipped block or a sliced layer is counted
exactly as executed. The trace lives in a context variable and a thread-local dispatch mode: a model
shared by many app sessions is never mutated.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .decisions import DecisionKind, decision_kind, typed_value
from .devices import model_device
from .protocol import RouteScopeModel

_ACTIVE: ContextVar["Trace | None"] = ContextVar("routescope_trace", default=None)


def current_trace() -> "Trace | None":
    return _ACTIVE.get()


class PerRow(tuple):
    """An override with one value per row of the batch, e.g. ``tools.bench`` forcing each image of a batch to the
    decisions drawn for it. Built in code only (a URL or command line forces one value for every image);
    ``Trace.forced`` hands each layer its current rows' values, as a ``PerRow`` where they differ. None for a row
    that never reaches the layer (an image that left at an earlier exit)."""

    @classmethod
    def combine(cls, per_image: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, "PerRow"]]:
        """One override dict per image (``{layer: {field: value}}``) as one for the batch of those images."""
        fields = {(layer, field) for overrides in per_image for layer, forced in overrides.items() for field in forced}
        out: dict[str, dict[str, PerRow]] = {}
        for layer, field in sorted(fields):
            out.setdefault(layer, {})[field] = cls(o.get(layer, {}).get(field) for o in per_image)
        return out


class _MacCounter(TorchDispatchMode):
    """Adds the MACs of every counted ATen op to the samples of the trace's current subset.

    Under ``torch.inference_mode`` composite ops (``aten.conv2d``, ``aten.linear``) reach this mode undecomposed;
    they have no formula, so an op without one is decomposed first, as ``FlopCounterMode`` does: the count is the
    same in grad mode, ``no_grad`` and ``inference_mode``.
    """

    def __init__(self, trace: "Trace") -> None:
        super().__init__()
        self.trace = trace

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket not in flop_registry and isinstance(func, torch._ops.OpOverload):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            rows = self.trace.rows
            self.trace.macs[rows] += formula(*args, **kwargs, out_val=out) / 2 / len(rows)
        return out


class Trace:
    """Decisions and executed MACs for each of ``batch_size`` inputs."""

    def __init__(
        self,
        batch_size: int,
        keep_tensors: bool = False,
        overrides: dict[str, dict[str, Any]] | None = None,
        knobs: dict[str, float] | None = None,
        observe: bool = True,
    ) -> None:
        self.batch_size = batch_size
        self.observe = observe  # False: carry overrides and knobs only (timing a forced path), record and count nothing
        self.overrides = {layer: dict(fields) for layer, fields in (overrides or {}).items()}
        self.knobs = dict(knobs or {})
        self.applied: set[tuple[str, str]] = set()  # the (layer, field) overrides some layer acted on
        self.keep_tensors = keep_tensors  # keep differentiable decision tensors (for attributions)
        self._tensors: dict[tuple[str, str], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.macs = torch.zeros(batch_size, dtype=torch.float64)
        # MACs executed that the decisions say need not have run (a masking plug-in's gated-off blocks); None: the
        # model executes what it decides, so its decided cost is its executed cost (``decided_macs``)
        self.unneeded: torch.Tensor | None = None
        self.decisions: list[list[dict[str, Any]]] = [[] for _ in range(batch_size)]
        self._rows = [torch.arange(batch_size)]
        per_row = [v for fields in self.overrides.values() for v in fields.values() if isinstance(v, PerRow)]
        if any(len(v) != batch_size for v in per_row):
            raise ValueError(f"a per-row override needs one value for each of the {batch_size} inputs")
        # which rows a subset holds matters only to what is recorded, counted or forced row by row: a forced
        # forward being timed skips the bookkeeping (and its host read of the rows)
        self._tracks_rows = observe or bool(per_row)

    @property
    def rows(self) -> torch.Tensor:
        """Indices (into the whole batch) of the samples the code now running works on."""
        return self._rows[-1]

    @contextmanager
    def subset(self, local_rows: torch.Tensor) -> Iterator[None]:
        """Run a block on part of the current batch; ``local_rows`` index the current subset."""
        if not self._tracks_rows:
            yield
            return
        self._rows.append(self.rows[local_rows.cpu()])
        try:
            yield
        finally:
            self._rows.pop()

    @property
    def decided_macs(self) -> torch.Tensor | None:
        """Per input, the MACs the decisions say should have run (executed minus ``unneeded``); None for a model that
        does not report it (every built-in model executes exactly what it decides)."""
        return None if self.unneeded is None else self.macs - self.unneeded

    def forced(self, layer: str, kind: DecisionKind) -> Any | None:
        """The value an override forces for ``layer``'s decision of ``kind`` (its ``forced_field``; None: decide
        as the model would); for a per-row override, a ``PerRow`` of the current rows' values where they differ."""
        field = kind.forced_field
        value = self.overrides.get(layer, {}).get(field)
        if value is not None:
            self.applied.add((layer, field))
        if isinstance(value, PerRow):  # the current rows' values: one value if they agree
            value = PerRow(value[r] for r in self.rows.tolist())
            if None in value and any(v is not None for v in value):
                raise ValueError(f"a per-row override of {layer} must force every row that reaches it")
            return value[0] if all(v == value[0] for v in value) else value
        return value

    def knob(self, name: str, default: float) -> float:
        """An inference setting for this forward pass (``default``: the model's trained value)."""
        return float(self.knobs.get(name, default))

    def record(self, layer: str, kind: DecisionKind, **fields: Any) -> None:
        """One decision of ``kind`` per sample of the current subset; tensor fields are split along dim 0."""
        if not self.observe:
            return
        if self.keep_tensors:
            for key, value in fields.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == len(self.rows):
                    self._tensors.setdefault((layer, key), []).append((self.rows, value))
        rows = self.rows.tolist()
        for i, row in enumerate(rows):
            entry: dict[str, Any] = {"layer": layer, "kind": kind.name}
            for key, value in fields.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == len(rows):
                    value = value[i]
                entry[key] = value.detach().tolist() if isinstance(value, torch.Tensor) else value
            self.decisions[row].append(entry)

    def tensor(self, layer: str, key: str) -> torch.Tensor:
        """The recorded field as one (batch, ...) tensor, still attached to the graph (``keep_tensors=True``)."""
        parts = self._tensors.get((layer, key))
        if not parts:
            raise KeyError(f"no recorded tensor {key!r} for layer {layer!r}")
        first = parts[0][1]
        out = first.new_zeros((self.batch_size, *first.shape[1:]))
        for rows, value in parts:
            out = out.index_copy(0, rows.to(value.device), value)
        return out

    @contextmanager
    def active(self) -> Iterator["Trace"]:
        token = _ACTIVE.set(self)
        try:
            with _MacCounter(self) if self.observe else nullcontext():
                yield self
        finally:
            _ACTIVE.reset(token)


def check_interventions(
    model: RouteScopeModel, overrides: dict | None, knobs: dict | None
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """``(overrides, knobs)`` checked against the model and typed as its kinds declare each field (``"false"``,
    ``0`` and ``False`` all force a block off); a ``ValueError`` naming the layer, field or knob and what it
    accepts. A typo must not silently give the unforced result, nor a wrong type the opposite one."""
    layers = model.decision_layers()
    typed: dict[str, dict[str, Any]] = {}
    for layer, fields in (overrides or {}).items():
        if layer not in layers:
            known = ", ".join(layers) or "none: the model decides nothing per image"
            raise ValueError(f"no decision at {layer!r}; this model's decision layers: {known}")
        kind = decision_kind(layers[layer])
        for field, value in fields.items():
            if field not in kind.forcible:
                raise ValueError(f"{layer} ({layers[layer]}) can force {', '.join(kind.forcible)}, not {field!r}")
            try:
                typed.setdefault(layer, {})[field] = (
                    PerRow(None if v is None else kind.typed(field, v) for v in value)
                    if isinstance(value, PerRow)
                    else kind.typed(field, value)
                )
            except ValueError as e:
                raise ValueError(f"{layer}.{field} {e}") from None
    declared = model.knobs()
    moved: dict[str, float] = {}
    for name, value in (knobs or {}).items():
        if name not in declared:
            raise ValueError(f"unknown knob {name!r}; this model's knobs: {', '.join(declared) or 'none'}")
        try:
            number = typed_value("number", value)
        except ValueError as e:
            raise ValueError(f"knob {name} {e}") from None
        low, high = declared[name]["low"], declared[name]["high"]
        if not low <= number <= high:
            raise ValueError(f"knob {name}={value} is outside [{low}, {high}]")
        moved[name] = number
    return typed, moved


def forced_forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    overrides: dict | None = None,
    knobs: dict | None = None,
    checked: bool = False,
) -> torch.Tensor:
    """Logits of ``model`` with ``overrides`` and ``knobs`` applied and nothing recorded or counted: the model's own
    inference path (batch-1 control flow, compiled kernels), which ``tools.bench`` and the app's latency time
    (``checked``: the caller typed and validated the interventions already, outside its timed loop)."""
    if not checked:
        overrides, knobs = check_interventions(model, overrides, knobs)
    with Trace(x.shape[0], overrides=overrides, knobs=knobs, observe=False).active():
        return model(x)


def traced_forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    keep_tensors: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    knobs: dict[str, float] | None = None,
) -> tuple[torch.Tensor, Trace]:
    """``(logits, trace)`` for a batch, with per-input decisions and executed MACs.

    ``overrides`` (``{layer: {field: value}}``) force decisions: the forced path is really executed, later
    decisions respond to it, and the trace marks the entry ``"forced": true``. ``knobs`` change inference
    settings (``model.knobs()``) for this call. Neither touches the model: both live in the trace.
    Without ``keep_tensors`` it runs under ``no_grad``; with it, gradients flow from the recorded decision
    tensors to the input (captum attributions of a gate, a width choice or a routing weight).
    """
    if isinstance(model, torch.nn.Module):
        overrides, knobs = check_interventions(model, overrides, knobs)
        x_device, x = x.device, x.to(model_device(model))
    else:  # a bound forward (``models.evaluate``'s variants): the caller placed x
        x_device = x.device
    trace = Trace(x.shape[0], keep_tensors=keep_tensors, overrides=overrides, knobs=knobs)
    with torch.set_grad_enabled(keep_tensors and torch.is_grad_enabled()), trace.active():
        logits = model(x)
    return logits.to(x_device), trace
