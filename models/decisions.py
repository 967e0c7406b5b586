"""Decision and structure kinds, each declared once beside the method that produces it.

A *decision* is per image (``skip``, ``width``, ``routing``, ``exit``: it changes with the input); a
*structure* is per model (``groups``, ``filters``: learned, fixed at inference). The declaration says what
a trace entry of the kind holds and what part of an image's routing pattern it contributes; shared code
(the trace schema, tables, the app) loops over ``decision_kinds()`` instead of naming kinds.
"""

from __future__ import annotations

import json
import math
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

    @property
    def forced_field(self) -> str:
        """The field an override of this kind forces (``Trace.forced``): its one forcible field."""
        if len(self.forcible) != 1:
            raise ValueError(f"decision kind {self.name!r} has no single forcible field: {self.forcible}")
        return self.forcible[0]

    def typed(self, field_name: str, value: Any) -> Any:
        """An override's value for ``field_name`` as the type this kind declares for it (``typed_value``)."""
        return typed_value(self.fields[field_name][0], value)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
ACCEPTED = {
    "boolean": "true or false (also 1/0, yes/no)",
    "number": "a number",
    "integer": "a whole number",
    "array": "a list of numbers, e.g. [1, 0, 0, 0]",
}


def typed_value(json_type: str, value: Any) -> Any:
    """``value`` (from Python, JSON, a URL or a command line) as the field's declared JSON type; a ``ValueError``
    saying what is accepted. The string "False" is false here: ``bool("False")`` would force a block on."""
    if json_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif json_type in ("number", "integer"):
        if isinstance(value, str):
            try:
                value = json.loads(value.strip())
            except json.JSONDecodeError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if json_type == "number":
                return float(value)
            if float(value).is_integer():
                return int(value)
    elif json_type == "array":
        if isinstance(value, str):
            try:
                value = json.loads(value.strip())
            except json.JSONDecodeError:
                pass
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ):
            return [float(v) for v in value]
    else:
        return value
    raise ValueError(f"takes {ACCEPTED[json_type]}, not {value!r}")


FORCED = ("boolean", "the decision was forced by an override, not taken by the model")


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
