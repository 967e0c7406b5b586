"""The routing trace's JSON Schema, built from the declared decision kinds: ``python -m analysis.schema [--write]``.

``--write`` stores it as ``docs/trace.schema.json``; the tests check that file is current and validate
``analysis.inspect`` output against it, so the documented format is the one the code writes.
"""

from __future__ import annotations

import argparse
import json
import sys

from routescope.models.data import REPO_ROOT
from routescope.models.decisions import FORCED, DecisionKind, decision_kinds

SCHEMA_PATH = REPO_ROOT / "docs" / "trace.schema.json"


def entry_schema(kind: DecisionKind) -> dict:
    declared = {**kind.fields, **({"forced": FORCED} if kind.forcible else {})}
    fields = {name: {"type": json_type, "description": meaning} for name, (json_type, meaning) in declared.items()}
    return {
        "title": kind.name,
        "description": f"{kind.summary} ({kind.method})",
        "type": "object",
        "properties": {"layer": {"type": "string"}, "kind": {"const": kind.name}, **fields},
        "required": ["layer", "kind", *(f for f in kind.fields if f not in kind.optional)],
    }


def trace_schema() -> dict:
    """One routing trace (one line of ``python -m analysis.inspect``)."""

    def entries(per: str) -> dict:
        return {"type": "array", "items": {"oneOf": [entry_schema(k) for k in decision_kinds(per).values()]}}

    probability = {"type": "number", "minimum": 0, "maximum": 1}
    label = {
        "type": "object",
        "required": ["index", "label", "probability"],
        "properties": {"index": {"type": "integer"}, "label": {"type": "string"}, "probability": probability},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "RouteScope routing trace",
        "type": "object",
        "required": ["image", "model", "prediction", "cost", "decisions"],
        "properties": {
            "image": {"type": "string"},
            "model": {
                "type": "object",
                "required": ["name", "method", "dataset"],
                "properties": {k: {"type": "string"} for k in ("name", "method", "dataset")},
            },
            "prediction": label,
            "top": {"type": "array", "items": label},
            "cost": {
                "type": "object",
                "required": ["macs", "macs_full"],
                "properties": {
                    "macs": {"type": "integer", "description": "multiply-adds this image executed"},
                    "macs_full": {"type": "integer", "description": "the dense backbone's"},
                    "macs_decided": {
                        "type": "integer",
                        "description": "multiply-adds the decisions say should have run (plug-in models; less than "
                        "macs where a model computes a gated-off block and masks it)",
                    },
                },
            },
            "decisions": entries("image"),
            "structure": entries("model"),
            "preprocessing": {"type": "array", "items": {"type": "string"}},
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.schema", description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH.relative_to(REPO_ROOT)}")
    args = p.parse_args(argv)
    text = json.dumps(trace_schema(), indent=2) + "\n"
    if args.write:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_PATH.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
