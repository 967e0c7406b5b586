"""The documented trace format (docs/trace.schema.json) is current and is what the code writes."""

import json
from pathlib import Path

import jsonschema
import pytest

from routescope.analysis import inspect
from routescope.analysis.core.catalog import sample_images
from routescope.analysis.schema import SCHEMA_PATH, trace_schema

GOLDEN = Path(__file__).parent / "golden"


def test_schema_file_is_generated_from_the_declared_kinds():
    assert json.loads(SCHEMA_PATH.read_text()) == trace_schema(), "run python -m analysis.schema --write"


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_golden_trace_validates(golden):
    validator = jsonschema.Draft202012Validator(trace_schema())
    for line in golden.read_text().splitlines():
        validator.validate(json.loads(line))


def test_inspect_output_validates(capsys):
    from routescope.analysis.core.catalog import PRETRAINED

    images = [str(p) for p in sample_images()[:3]]
    assert inspect.main(["--checkpoint", str(PRETRAINED / "dgconv_resnet20_fmnist_b0.5.pt"), *images]) == 0
    validator = jsonschema.Draft202012Validator(trace_schema())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        validator.validate(json.loads(line))
    bad = {**json.loads(lines[0]), "decisions": [{"layer": "x", "kind": "skip", "executed": "yes", "probability": 0.3}]}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
