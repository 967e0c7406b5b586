"""Interventions as values a URL or a command line can carry, and what an intervention changed.

The one parser of ``LAYER.FIELD=VALUE`` and ``NAME=VALUE`` (the app's URLs, ``analysis.inspect``, the sweeps):
``layer2.1.executed=false`` forces one decision field (the layer name holds dots: the field is after the last
one); ``threshold=0.7`` moves one knob. Parsing splits the text and reads JSON where it is JSON (``0.5``,
``[1, 0, 0, 0]``), else keeps the text; ``models.trace.check_interventions`` then types each value as the
model's decision kind declares its field (``False``, ``false``, ``0`` and ``no`` all force a block off) and
refuses a wrong one by name.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd


def _value(text: str) -> Any:
    """A value as JSON where it is JSON, else the stripped text (typed later, per field, against the model)."""
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError:
        return text.strip()


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"layer2.1.executed=false"`` -> ``("layer2.1", "executed", False)``."""
    target, sep, value = text.partition("=")
    layer, dot, field = target.strip().rpartition(".")
    if not sep or not dot or not layer or not field or not value.strip():
        raise ValueError(f"override {text!r} is not LAYER.FIELD=VALUE (e.g. layer2.1.executed=false)")
    return layer, field, _value(value)


def parse_knob(text: str) -> tuple[str, float]:
    """``"threshold=0.7"`` -> ``("threshold", 0.7)``."""
    name, sep, value = text.partition("=")
    number = _value(value) if sep else None
    if not name.strip() or not isinstance(number, (int, float)) or isinstance(number, bool):
        raise ValueError(f"knob {text!r} is not NAME=NUMBER (e.g. threshold=0.7)")
    return name.strip(), float(number)


def parse_interventions(overrides: Iterable[str], knobs: Iterable[str]) -> tuple[dict, dict]:
    """``({layer: {field: value}}, {knob: value})`` from their text forms; ``ValueError`` names the bad one."""
    forced: dict[str, dict[str, Any]] = {}
    for text in overrides:
        layer, field, value = parse_override(text)
        forced.setdefault(layer, {})[field] = value
    return forced, dict(parse_knob(text) for text in knobs)


def format_interventions(overrides: dict, knobs: dict) -> tuple[list[str], list[str]]:
    """The inverse of ``parse_interventions``: the text forms, sorted."""
    forced = [
        f"{layer}.{field}={json.dumps(value, separators=(',', ':'))}"
        for layer, fields in sorted(overrides.items())
        for field, value in sorted(fields.items())
    ]
    return forced, [f"{name}={value:g}" for name, value in sorted(knobs.items())]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def changed_decisions(original: list[dict], intervened: list[dict], fields: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """The decisions that differ between two runs of one image: ``layer, kind, field, original, intervened,
    forced`` (``fields``: the fields compared per kind, its ``forcible`` ones). A decision only one run took
    (an exit the other never reached) shows "not reached" on the other side."""
    before = {d["layer"]: d for d in original}
    after = {d["layer"]: d for d in intervened}
    rows = []
    for layer in list(after) + [k for k in before if k not in after]:
        a, b = before.get(layer), after.get(layer)
        kind = (b or a)["kind"]
        for field in fields.get(kind, ()):
            old = "not reached" if a is None else _shown(a.get(field))
            new = "not reached" if b is None else _shown(b.get(field))
            if old != new:  # as shown (3 digits): a routing weight that moved in the 6th digit did not change
                rows.append(
                    {
                        "layer": layer,
                        "kind": kind,
                        "field": field,
                        "original": old,
                        "intervened": new,
                        "forced": bool(b and b.get("forced")),
                    }
                )
    return pd.DataFrame(rows, columns=["layer", "kind", "field", "original", "intervened", "forced"])
