"""How analysis/ and the app present each decision or structure kind: one ``KindView`` per kind, declared in
that method's module (``analysis/methods/<method>.py``) next to its statistics and figures.

Shared code loops over the views: the per-image table asks each decision for its columns, the Inspect page
draws each kind's charts, the Compare page each kind's sections, the Structure page each structure's
summary and detail, and attributions each decision's targets. ``load_method_modules`` imports every module
of ``analysis.methods`` (so their views and figures register) without a hand-kept list.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect as _inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go

from routescope.models.decisions import DecisionKind, decision_kind


@dataclass(frozen=True)
class Section:
    """A titled part of a page: a plotly figure, or a table, with an optional caption."""

    title: str
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None
    caption: str | None = None


@dataclass(frozen=True)
class PatternPart:
    """One kind's part of the routing patterns of a dataset table, as the app shows it: each image's part written
    readably (``values``, indexed like the table), what its positions and symbols mean (``legend``, one sentence),
    and the table column it starts at (``column``: parts of several kinds are shown in network order)."""

    values: pd.Series
    legend: str
    column: str


@dataclass(frozen=True)
class AttributionTarget:
    """A value of a decision that captum can explain: the recorded ``field`` of the entry (``option`` picks one
    element of a vector field, e.g. a width choice or an expert)."""

    label: str
    field: str
    option: int | None = None


class Widget(enum.Enum):
    """How a control is drawn: a switch (a bool), a choice among ``options``, or a slider over ``[low, high]``."""

    TOGGLE = "toggle"
    SELECT = "select"
    SLIDER = "slider"


@dataclass(frozen=True)
class Control:
    """The widget one decision offers for an intervention (the app renders it; no kind is named there).

    ``widget``: ``Widget.TOGGLE`` (a bool), ``Widget.SELECT`` (one of ``options``) or ``Widget.SLIDER`` (a float in
    ``[low, high]``); ``value``: what the run being shown decided, in widget terms;
    ``override(value)``: the forced ``field`` value for ``traced_forward(overrides={layer: {field: ...}})``.
    """

    layer: str
    field: str
    label: str
    widget: Widget
    value: Any
    override: Callable[[Any], Any]
    options: tuple = ()
    format: Callable[[Any], str] = str
    low: float = 0.0
    high: float = 1.0
    help: str = ""
    disabled: bool = False


@dataclass(frozen=True)
class KindView:
    """What analysis/ and the app do with the entries of one kind.

    - ``columns(entry)``: the per-image table columns of one decision entry (``layer/field``);
    - ``inspect(entries)``: the Inspect charts of one image's entries of this kind (or of a model's structure);
      ``inspect(entries, model)`` when it takes a second argument (labels only the model knows, e.g. its widths);
    - ``pattern(table)``: this kind's part of the routing patterns of a dataset table, readable, with its legend
      (``PatternPart``; None when the table has no columns of the kind);
    - ``compare(table)``: the Compare page's sections over a dataset table that has this kind's columns;
    - ``targets(entry)``: what an attribution can explain in that entry;
    - ``summary(entries)``, ``detail(entry, meta)``: the Structure page's table of all layers and the view of
      one layer (structure kinds); ``notable(entry)``: whether that layer has something to show (the page opens
      on the first such layer: a RePr layer with dropped filters, a DGConv layer with more than one group);
    - ``control(entry, model)``: the widget that forces this decision in the Inspect page's interventions;
    - ``force_like(table, bundled, target)``: a sampler ``rng -> overrides`` that forces ``target`` (a deeper
      network of the same method) to decide at the rates this kind's columns of ``bundled``'s ``table`` show
      (the bench's ``--scale paper``).
    """

    kind: DecisionKind
    columns: Callable[[dict], dict] | None = None
    inspect: Callable[..., list[go.Figure]] | None = None
    compare: Callable[[pd.DataFrame], list[Section]] | None = None
    targets: Callable[[dict], list[AttributionTarget]] | None = None
    summary: Callable[[list[dict]], pd.DataFrame] | None = None
    detail: Callable[[dict, dict], list[Section]] | None = None
    control: Callable[[dict, Any], Control | None] | None = None
    force_like: Callable[[pd.DataFrame, Any, Any], Callable[[Any], dict]] | None = None
    title: str = field(default="")
    pattern: Callable[[pd.DataFrame], PatternPart | None] | None = None
    notable: Callable[[dict], bool] | None = None

    def __post_init__(self) -> None:
        if decision_kind(self.kind.name) != self.kind:  # a view is of a kind some method declared
            raise ValueError(f"decision kind {self.kind.name!r} is not the one its method declared")
        if not self.title:
            object.__setattr__(self, "title", self.kind.summary.capitalize())


_VIEWS: dict[str, KindView] = {}


def register_view(view: KindView) -> KindView:
    _VIEWS[view.kind.name] = view
    return view


@functools.cache
def load_method_modules() -> None:
    """Import every module of ``analysis.methods`` once (views and figures register on import); every lookup of a
    kind's view calls this, so it must cost nothing after the first time. They are found by name at run time, as
    ``models/__init__`` finds the method modules: core depends on none of them (they depend on core)."""
    package = importlib.import_module("routescope.analysis.methods")

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def kind_view(kind: str) -> KindView | None:
    load_method_modules()
    return _VIEWS.get(kind)


def kind_views() -> dict[str, KindView]:
    load_method_modules()
    return dict(_VIEWS)


def grouped(entries: list[dict]) -> dict[str, list[dict]]:
    """Entries by kind, kinds in the order the network produced them."""
    out: dict[str, list[dict]] = {}
    for entry in entries:
        out.setdefault(entry["kind"], []).append(entry)
    return out


def decision_columns(decisions: list[dict]) -> dict:
    """One image's decisions as ``layer/field`` table columns (kinds without a view are left out)."""
    row: dict = {}
    for entry in decisions:
        view = kind_view(entry["kind"])
        if view is not None and view.columns is not None:
            row.update(view.columns(entry))
    return row


def _takes_model(function: Callable) -> bool:
    try:
        return len(_inspect.signature(function).parameters) > 1
    except (TypeError, ValueError):
        return False


def inspect_charts(entries: list[dict], model: Any = None) -> list[tuple[str, go.Figure]]:
    """``(kind, figure)`` for every chart of one image's decisions or one model's structure (``model``: handed to
    the views whose ``inspect`` takes it)."""
    out = []
    for kind, of_kind in grouped(entries).items():
        view = kind_view(kind)
        if view is not None and view.inspect is not None:
            figures = view.inspect(of_kind, model) if _takes_model(view.inspect) else view.inspect(of_kind)
            out += [(kind, figure) for figure in figures]
    return out


def pattern_parts(table: pd.DataFrame) -> list[PatternPart]:
    """Every kind's readable part of the table's routing patterns, in network order (the order of their columns)."""
    parts = [view.pattern(table) for view in kind_views().values() if view.pattern is not None]
    order = {column: i for i, column in enumerate(table.columns)}
    return sorted((p for p in parts if p is not None), key=lambda p: order.get(p.column, len(order)))


def compare_sections(table: pd.DataFrame) -> list[Section]:
    """Every view's Compare sections over a dataset table (a view with no columns in ``table`` gives none)."""
    return [section for view in kind_views().values() if view.compare is not None for section in view.compare(table)]


def attribution_targets(entry: dict) -> list[AttributionTarget]:
    view = kind_view(entry["kind"])
    return view.targets(entry) if view is not None and view.targets is not None else []


def decision_controls(decisions: list[dict], model: Any) -> list[Control]:
    """The control of every decision whose kind offers one, in network order (what the Intervene panel draws)."""
    out = []
    for entry in decisions:
        view = kind_view(entry["kind"])
        control = view.control(entry, model) if view is not None and view.control is not None else None
        if control is not None:
            out.append(control)
    return out


def routing_pattern(decisions: list[dict]) -> str:
    """An image's routing signature: each kind's ``DecisionKind.signature`` of its entries, concatenated (skip
    bits, width per stage, dominant expert per block, exit taken); kinds apart by " | ", "" without decisions."""
    parts = []
    for kind, entries in grouped(decisions).items():
        signature = decision_kind(kind).signature
        if signature is None:
            continue
        values = [f"{v:g}" if isinstance(v, float) else str(v) for v in map(signature, entries) if v is not None]
        parts.append(("" if all(len(v) == 1 for v in values) else "/").join(values))
    return " | ".join(p for p in parts if p)
