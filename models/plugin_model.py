"""The adapter that makes a plug-in model (``models.plugins.ModelPlugin``) a RouteScope model.

``PluginModel`` holds the user's ``nn.Module`` unchanged and registers its hooks ONCE, when it is built: a forward
hook (or pre-hook) on every decision point's module and a pre/post pair on every module a decision ``saves``. The
hooks act only inside the adapter's own forward under an active trace (``models.trace.current_trace()`` and this
module's ``_RUN``, both context variables): outside a trace, or when the inner model is called directly, they return
at once and the model is plain PyTorch. Nothing per call is stored on a module, so one cached model serves many
threads, each with its own forcing.

Inside a trace a decision point reads its fields (``DecisionPoint.read``), applies a forced value (``force``
replaces the module's output or inputs; the trace marks the entry ``"forced": true``) and records the entry.

Executed and decided cost: the trace's MAC counter counts what really ran (a model that masks a block computes it,
so it is counted). Where a decision turns a block off, the MACs its ``saves`` modules executed for those samples
(measured live by their pre/post hooks) are noted in ``Trace.unneeded``: the *decided* cost is the executed cost
without them, which for a model that truly skips is the executed cost itself.

Ending the forward: a point whose ``ends`` field is true for the sample (an exit taken or forced) raises a private
control-flow exception, ``_EndForward``, carrying that module's output; the adapter catches it and returns it as
the logits, so the later modules never run. It derives from ``BaseException`` so a plug-in's ``except Exception``
cannot swallow it. A model with such a point runs one sample at a time inside a trace (each sample may end
elsewhere); the others run the batch at once.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .decisions import DecisionKind
from .errors import UsageError
from .plugins import DecisionPoint, ModelPlugin, Site
from .protocol import RouteScopeModel
from .trace import PerRow, Trace, current_trace


class _EndForward(BaseException):
    """Raised by an ending decision point: the forward stops here with ``logits``."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits


@dataclass
class _Run:
    """One adapter forward's bookkeeping (a context variable's value: per thread, per call)."""

    owner: "PluginModel"
    knobs: dict[str, float]
    started: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # saves module -> MACs when it started
    spent: dict[str, torch.Tensor] = field(default_factory=dict)  # saves module -> MACs it executed, per sample
    off: list[tuple[torch.Tensor, tuple[str, ...]]] = field(default_factory=list)  # (rows turned off, their saves)


_RUN: ContextVar[_Run | None] = ContextVar("routescope_plugin_run", default=None)


def _active() -> tuple[_Run, Trace] | None:
    run, trace = _RUN.get(), current_trace()
    return None if run is None or trace is None else (run, trace)


def _per_sample(value: Any, n: int) -> torch.Tensor:
    """A field's value as one bool per sample of the current subset (on the CPU, like ``Trace.rows``)."""
    mask = torch.as_tensor(value).detach().to("cpu", torch.bool).reshape(-1)
    return mask.expand(n) if mask.numel() == 1 else mask


def _after(module: nn.Module, inputs: tuple, output: Any) -> Any:
    active = _active()
    if active is None:
        return None
    point = active[0].owner._points.get(module)
    return None if point is None else active[0].owner._decide(point, *active, module, inputs, output)


def _before(module: nn.Module, inputs: tuple) -> Any:
    active = _active()
    if active is None:
        return None
    point = active[0].owner._points.get(module)
    return None if point is None else active[0].owner._decide(point, *active, module, inputs, None)


def _saves_start(module: nn.Module, inputs: tuple) -> None:
    active = _active()
    if active is not None and active[1].observe and module in active[0].owner._saves:
        run, trace = active
        run.started.setdefault(run.owner._saves[module], []).append(trace.macs.clone())


def _saves_end(module: nn.Module, inputs: tuple, output: Any) -> None:
    active = _active()
    if active is not None and active[1].observe and module in active[0].owner._saves:
        run, trace = active
        name = run.owner._saves[module]
        spent = trace.macs - run.started[name].pop()
        run.spent[name] = spent if name not in run.spent else run.spent[name] + spent


def _submodule(model: nn.Module, path: str, plugin: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise UsageError(f"plug-in {plugin!r}: its model ({type(model).__name__}) has no module {path!r}") from None


class _Plain(RouteScopeModel):
    """A network run without any decision acting (the adapter's dense counterpart): the inner model's hooks find no
    run of theirs and stay inert."""

    def __init__(self, model: nn.Module, logits: Callable[[Any], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self._logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if self._logits is None else self._logits(out)


class PluginModel(RouteScopeModel):
    """A plug-in's model as a RouteScope model: ``meta``, ``method``, ``decision_layers()``, ``knobs()``,
    ``dense_counterpart()``; decisions recorded and forced through hooks registered once (module docstring)."""

    def __init__(self, plugin: ModelPlugin, model: nn.Module, group: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.plugin = plugin
        self.group = group  # the entry point that declared it (None: a module named on the command line, or Python)
        self.method = plugin.method
        self.arch, self.arch_config = f"plugin:{plugin.name}", {}
        self.meta = plugin.meta()
        self._kinds: dict[str, DecisionKind] = {}
        self._points: dict[nn.Module, DecisionPoint] = {}
        self._saves: dict[nn.Module, str] = {}
        for point in plugin.decisions:
            self._kinds[point.name] = point.declared_kind()
            if point.ending_field() is not None and point.at != "output":
                raise UsageError(f"plug-in {plugin.name!r}: {point.name} ends the forward, so it reads an output")
            module = _submodule(model, point.module, plugin.name)
            if module in self._points:
                raise UsageError(f"plug-in {plugin.name!r}: two decision points on module {point.module!r}")
            self._points[module] = point
            if point.at == "input":
                module.register_forward_pre_hook(_before)
            else:
                module.register_forward_hook(_after)
            for path in point.saves:
                saved = _submodule(model, path, plugin.name)
                if saved not in self._saves:
                    self._saves[saved] = path
                    saved.register_forward_pre_hook(_saves_start)
                    saved.register_forward_hook(_saves_end)
        self._ends = any(point.ending_field() is not None for point in plugin.decisions)
        if plugin.cam_layer is not None:  # the layer GradCAM attributes to (``analysis.core.attributions``)
            object.__setattr__(self, "pool", _submodule(model, plugin.cam_layer, plugin.name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trace = current_trace()
        if trace is None:
            return self._logits(self.model(x))
        run = _Run(self, {name: trace.knob(name, spec["default"]) for name, spec in self.plugin.knobs.items()})
        token = _RUN.set(run)
        try:
            if self._ends and x.shape[0] > 1:  # each sample may leave at another point: one at a time
                parts = []
                for i in range(x.shape[0]):
                    with trace.subset(torch.tensor([i])):
                        parts.append(self._run(x[i : i + 1]))
                logits = torch.cat(parts)
            else:
                logits = self._run(x)
        finally:
            _RUN.reset(token)
        if trace.observe:
            self._note_unneeded(trace, run)
        return logits

    def _logits(self, output: Any) -> torch.Tensor:
        return output if self.plugin.logits is None else self.plugin.logits(output)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self._logits(self.model(x))
        except _EndForward as end:
            return end.logits

    def _decide(self, point: DecisionPoint, run: _Run, trace: Trace, module: nn.Module, inputs: tuple, output: Any):
        """Read, force and record one decision for the samples of this call; returns the replacement output (or
        inputs), None to keep it; raises ``_EndForward`` where the decision ends the forward."""
        kind = self._kinds[point.name]
        site = Site(module, inputs, output, run.knobs)
        fields = dict(point.read(site))
        replaced = None
        forced = trace.forced(point.name, kind) if kind.forcible else None
        ending = point.ending_field()
        if isinstance(forced, PerRow):
            raise ValueError(f"plug-in {self.meta['name']!r}: {point.name} takes one forced value for the whole batch")
        if forced is not None:
            if point.force is not None:
                replaced = point.force(site, forced)
            elif ending != kind.forced_field:
                raise ValueError(f"plug-in {self.meta['name']!r} declares no way to force {point.name}")
            fields[kind.forced_field], fields["forced"] = forced, True
        missing = [f for f in kind.fields if f not in kind.optional and f not in fields]
        if missing:
            raise ValueError(f"plug-in {self.meta['name']!r}: {point.name} read no {', '.join(missing)}")
        trace.record(point.name, kind, **fields)
        n = len(trace.rows)
        off = point.off_samples(fields) if point.saves and trace.observe else None
        if off is not None:
            run.off.append((trace.rows[_per_sample(off, n)], point.saves))
        if ending is not None and bool(_per_sample(fields[ending], n).any()):
            if n != 1:
                raise RuntimeError(f"{point.name} ends the forward for some samples of a batch of {n}")
            raise _EndForward(output if replaced is None else replaced)
        return replaced

    @staticmethod
    def _note_unneeded(trace: Trace, run: _Run) -> None:
        """What the samples' saves modules executed although their decision was off: not part of the decided cost."""
        unneeded = torch.zeros_like(trace.macs) if trace.unneeded is None else trace.unneeded
        for rows, saves in run.off:
            for name in saves:
                if name in run.spent:
                    unneeded[rows] += run.spent[name][rows]
        trace.unneeded = unneeded

    def decision_layers(self) -> dict[str, str]:
        return {name: kind.name for name, kind in self._kinds.items()}

    def knobs(self) -> dict[str, dict]:
        return {name: dict(spec) for name, spec in self.plugin.knobs.items()}

    def dense_counterpart(self) -> nn.Module:
        """The declared dense network (``ModelPlugin.dense``), else the model run with no decision acting."""
        if self.plugin.dense is not None:
            return _Plain(self.plugin.dense(self.model)).eval()
        return _Plain(self.model, self.plugin.logits).eval()
