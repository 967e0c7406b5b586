"""What a checkpoint's ``config`` may hold: a JSON Schema made from its builder's type hints, checked by jsonschema.

A checkpoint is untrusted input, and its config becomes the builder's keyword arguments, so every value is checked
before any weight is allocated: the type the builder declares (resolved by ``typing.get_type_hints``, as the options
dataclasses are) and the bounds below, so a file cannot ask for a huge network. Integers are strict (``1.0`` and
``True`` are not integers), numbers finite and tuples lists, which JSON Schema's own types do not say.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from typing import Any, Callable

from jsonschema import Draft202012Validator, validators

MAX_WIDTH = 2048  # any channel count in a config
MAX_INT = 100_000  # any other integer in a config (num_classes, ...)
MAX_SEQUENCE = 64  # length of a list in a config
MAX_CHANNELS = 16  # input channels (in_chans, meta input_size)
MAX_CLASSES = 100_000
MAX_NAME = 64  # length of a string in a config


def _is_integer(_checker, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker, value: Any) -> bool:
    return (_is_integer(None, value) or isinstance(value, float)) and math.isfinite(value)


def _is_array(_checker, value: Any) -> bool:
    return isinstance(value, (list, tuple))  # a config built in Python holds tuples; one read from a file, lists


StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number, "array": _is_array}
    ),
)


def _integer(key: str, in_list: bool) -> dict:
    """Bounds of an integer argument: channel widths up to ``MAX_WIDTH``; a list may hold zeros (a stage without
    a decision), a scalar may not."""
    high = (
        MAX_WIDTH
        if key == "widths"
        else MAX_CHANNELS
        if key == "in_chans"
        else MAX_CLASSES
        if key == "num_classes"
        else MAX_INT
    )
    low = 1 if key == "widths" or not in_list else 0
    return {"type": "integer", "minimum": low, "maximum": high}


def _schema(hint: Any, key: str, in_list: bool = False) -> dict:
    """The JSON Schema of one type hint (the kinds the builders use: scalars, unions with None, sequences)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        return {"anyOf": [_schema(a, key, in_list) for a in args]}
    if hint is type(None):
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return _integer(key, in_list)
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string", "maxLength": MAX_NAME}
    if origin in (tuple, list, collections.abc.Sequence):
        fixed = origin is tuple and Ellipsis not in args
        return {
            "type": "array",
            "items": _schema(args[0], key, in_list=True),
            "minItems": len(args) if fixed else 1,
            "maxItems": len(args) if fixed else MAX_SEQUENCE,
        }
    raise TypeError(f"no JSON Schema for the type hint {hint!r} of {key!r}")


def builder_schema(builder: Callable) -> dict:
    """The JSON Schema of a model builder's keyword arguments (an object with no other keys)."""
    hints = typing.get_type_hints(builder)
    params = inspect.signature(builder).parameters
    keywords = [name for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _schema(hints[name], name) for name in keywords if name in hints},
    }


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a finite number",
    "boolean": "true or false",
    "string": "a name",
    "array": "a list",
    "null": "null",
}
_PLURALS = {"integer": "integers", "number": "finite numbers", "boolean": "true/false values", "string": "names"}


def _why(error) -> str:
    """One error in the project's words (what the value must be)."""
    schema, value = error.schema, error.instance
    if error.validator == "type":
        wanted = schema["type"]
        if len(error.absolute_path) > 1:  # an element of a list
            return f"must be a list of {_PLURALS.get(wanted, wanted)}"
        return f"must be {_TYPE_WORDS.get(wanted, wanted)}"
    if error.validator in ("minimum", "maximum"):
        return f"has a value out of range (at least {schema['minimum']}, at most {schema['maximum']})"
    if error.validator in ("minItems", "maxItems"):
        if schema["minItems"] == schema["maxItems"]:
            return f"must be a list of {schema['minItems']} values, not {len(value)}"
        return f"must be a list of {schema['minItems']} to {schema['maxItems']} values"
    if error.validator == "maxLength":
        return f"is longer than {schema['maxLength']} characters"
    if error.validator == "anyOf":  # X | None given something else: why it is not an X
        branches = [e for e in error.context if e.schema.get("type") != "null"]
        return _why(max(branches, key=lambda e: len(e.absolute_path))) if branches else error.message
    return error.message


def config_errors(schema: dict, config: Any) -> list[str]:
    """Why ``config`` does not fit ``schema``, one sentence per key (``"widths=[16, 0, 64] has a value out of
    range ..."``); [] when it fits."""
    if not isinstance(config, dict):
        return ["its config is not a mapping of builder arguments"]
    unknown = [k for k in config if k not in schema["properties"]]
    if unknown:
        return [f"unknown config key(s): {', '.join(map(repr, unknown[:5]))}; known: {', '.join(schema['properties'])}"]
    errors = sorted(StrictValidator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    messages, seen = [], set()
    for error in errors:
        key = error.absolute_path[0]
        if key not in seen:
            seen.add(key)
            messages.append(f"config {key}={str(config[key])[:60]!r} {_why(error)}")
    return messages
