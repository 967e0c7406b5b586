"""Routing traces on the command line: ``python -m analysis.inspect --checkpoint P IMAGE [IMAGE ...]``.

Prints one JSON object per image (JSON lines, see docs/trace.md); ``--override LAYER.FIELD=VALUE`` forces a
decision and ``--knob NAME=VALUE`` moves an inference setting, as ``traced_forward`` does. An unreadable
image gets one line on stderr and the others still get their traces; the exit status is non-zero if
anything failed.
"""
from __future__ import annotations

import argparse
import json
import sys


from analysis.core.images import ImageError, load_model_input
from analysis.core.trace import trace_batch
from models.checkpoint import CheckpointError, load_checkpoint
from models.trace import check_interventions


def _value(text: str):
    """A command-line value as JSON (false, 0.25, [1, 0]), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``["layer2.1.executed=false", ...]`` -> ``{"layer2.1": {"executed": False}}``."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        layer, dot, field = key.rpartition(".")
        if not (sep and dot and layer and field):
            raise ValueError(f"--override {item!r}: expected LAYER.FIELD=VALUE, e.g. layer2.1.executed=false")
        out.setdefault(layer, {})[field] = _value(value)
    return out


def parse_knobs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not isinstance(_value(value), (int, float)):
            raise ValueError(f"--knob {item!r}: expected NAME=NUMBER, e.g. threshold=0.7")
        out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.inspect", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--no-structure", action="store_true", help="omit the per-model 'structure' entries")
    p.add_argument("--indent", type=int, default=None, help="pretty-print (then it is no longer JSON lines)")
    p.add_argument("--override", action="append", default=[], metavar="LAYER.FIELD=VALUE",
                   help="force a decision, e.g. layer2.1.executed=false, layer3.width=0.25, layer3.0.weights=[1,0,0,0]")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE", help="an inference setting, e.g. threshold=0.7")
    args = p.parse_args(argv)
    try:
        overrides, knobs = parse_overrides(args.override), parse_knobs(args.knob)
        model = load_checkpoint(args.checkpoint)
        check_interventions(model, overrides, knobs)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            model_input = load_model_input(path, model.meta)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        record = trace_batch(model, model_input.tensor, [path], structure=not args.no_structure, overrides=overrides,
                             knobs=knobs)[0]
        record["preprocessing"] = model_input.notes
        print(json.dumps(record, indent=args.indent), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
