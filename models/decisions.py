"""Decision and structure kinds, each declared once beside the method that produces it.

A *decision* is per image (``skip``, ``width``, ``routing``, ``exit``: it changes with the input); a
*structure* is per model (``groups``, ``filters``: learned, fixed at inference). The declaration says what
a trace entry of the kind holds and what part of an image's routing pattern it contributes; shared code
(the trace schema, tables, the app) loops over ``decision_kinds()`` instead of naming kinds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class DecisionKind:
    """One kind of trace entry. ``fields``: field name -> (JSON type, meaning), besides ``layer`` and ``kind``."""

    name: str
    method: str
    per: str  # "image" (a decision) or "model" (a structure)
    fields: dict[str, tuple[str, str]]
    summary: str
    signature: Callable[[dict], Any] | None = None  # an image's entry -> its part of the routing pattern
    optional: tuple[str, ...] = field(default=())  # fields an entry may omit
    forcible: tuple[str, ...] = field(default=())  # fields an override can force (``traced_forward(overrides=...)``)


FORCED = ("boolean", "the decision was forced by an override, not taken by the model")


class Decides:
    """What every model answers about its decisions (mixed into the backbones): none by default."""

    def decision_layers(self) -> dict[str, str]:
        """``{layer: kind}`` of every per-image decision the model can take (what overrides may name)."""
        return {}

    def knobs(self) -> dict[str, dict]:
        """Inference settings with their ranges: ``{name: {"low", "high", "default", "help"}}``; {} if none."""
        return {}


_KINDS: dict[str, DecisionKind] = {}


def register_kind(kind: DecisionKind) -> DecisionKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"decision kind {kind.name!r} is declared twice")
    if kind.per not in ("image", "model"):
        raise ValueError(f"decision kind {kind.name!r}: per must be 'image' or 'model', not {kind.per!r}")
    _KINDS[kind.name] = kind
    return kind


def decision_kinds(per: str | None = None) -> dict[str, DecisionKind]:
    """Every declared kind (``per="image"``: decisions only, ``"model"``: structures only), in declaration order."""
    return {name: k for name, k in _KINDS.items() if per is None or k.per == per}


def decision_kind(name: str) -> DecisionKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown decision kind {name!r}; declared: {', '.join(_KINDS)}") from None
