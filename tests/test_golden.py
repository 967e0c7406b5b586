"""Golden routing traces of every bundled checkpoint on fixed sample images (as torchvision's expected outputs).

A test passes only where the traces match the committed file. After retraining a bundled model, run
``ROUTESCOPE_UPDATE_GOLDEN=1 pytest tests/test_golden.py``: where a trace differs (or no file exists) it rewrites the
file and still fails, naming what changed; review ``git diff tests/golden`` and run again without the variable.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from routescope.analysis.core.catalog import bundled_checkpoints, sample_images
from routescope.analysis.core.images import load_model_input
from routescope.analysis.core.trace import trace_batch

from helpers import every_bundled_checkpoint

GOLDEN = Path(__file__).parent / "golden"
IMAGES = ["sneaker-1.png", "bag-2.png", "shirt-1.png", "trouser-1.png", "photo-sneaker.jpg", "coat-2.png"]


def traces(model) -> list[dict]:
    samples = {p.name: p for p in sample_images()}
    x = torch.cat([load_model_input(samples[name], model.meta).tensor for name in IMAGES])
    return trace_batch(model, x, IMAGES, structure=False)


def assert_close(actual, expected, where: str) -> None:
    if isinstance(expected, float):
        assert isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-4, abs_tol=1e-4), (
            f"{where}: {actual!r}, golden {expected!r}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r}, golden {expected!r}"


def differences(actual: list[dict], expected: list[dict], name: str) -> list[str]:
    """Where ``actual`` departs from ``expected`` (the first difference of each image), empty where they match."""
    if len(actual) != len(expected):
        return [f"{name}: {len(actual)} traces, the golden file has {len(expected)}"]
    found = []
    for a, e in zip(actual, expected):
        try:
            assert_close(a, e, f"{name}:{e.get('image')}")
        except AssertionError as error:
            found.append(str(error).splitlines()[0])
    return found


@pytest.mark.parametrize("name", every_bundled_checkpoint())
def test_bundled_checkpoint_matches_golden(name, loaded_checkpoint):
    golden = GOLDEN / f"{name}.jsonl"
    actual = traces(loaded_checkpoint(bundled_checkpoints()[name]))
    expected = [json.loads(line) for line in golden.read_text().splitlines()] if golden.exists() else None
    found = [f"no golden file {golden.name}"] if expected is None else differences(actual, expected, name)
    summary = "; ".join(found[:3]) + (f" (and {len(found) - 3} more images)" if len(found) > 3 else "")
    if found and os.environ.get("ROUTESCOPE_UPDATE_GOLDEN"):
        golden.write_text("".join(json.dumps(r) + "\n" for r in actual))
        pytest.fail(
            f"rewrote tests/golden/{golden.name} (ROUTESCOPE_UPDATE_GOLDEN): {summary}. Review git diff "
            "tests/golden, then run without ROUTESCOPE_UPDATE_GOLDEN",
            pytrace=False,
        )
    assert not found, f"{summary} (after a retraining: ROUTESCOPE_UPDATE_GOLDEN=1 rewrites the file)"
