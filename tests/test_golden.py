"""Golden routing traces of every bundled checkpoint on fixed sample images (as torchvision's expected outputs).

Regenerate after retraining a bundled model with ``ROUTESCOPE_UPDATE_GOLDEN=1 pytest tests/test_golden.py``.
"""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from analysis.core.catalog import bundled_checkpoints, sample_images
from analysis.core.images import load_model_input
from analysis.core.trace import trace_batch
from models.checkpoint import load_checkpoint

GOLDEN = Path(__file__).parent / "golden"
IMAGES = ["sneaker-1.png", "bag-2.png", "shirt-1.png", "trouser-1.png", "photo-sneaker.jpg", "coat-2.png"]


def traces(path: Path) -> list[dict]:
    model = load_checkpoint(path)
    samples = {p.name: p for p in sample_images()}
    x = torch.cat([load_model_input(samples[name], model.meta).tensor for name in IMAGES])
    return trace_batch(model, x, IMAGES, structure=False)


def assert_close(actual, expected, where: str) -> None:
    if isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=1e-4, abs_tol=1e-4), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


@pytest.mark.parametrize("name", sorted(bundled_checkpoints()))
def test_bundled_checkpoint_matches_golden(name):
    path = bundled_checkpoints()[name]
    golden = GOLDEN / f"{name}.jsonl"
    actual = traces(path)
    if os.environ.get("ROUTESCOPE_UPDATE_GOLDEN"):
        golden.write_text("".join(json.dumps(r) + "\n" for r in actual))
    assert golden.exists(), f"no golden file for {name}: run with ROUTESCOPE_UPDATE_GOLDEN=1"
    expected = [json.loads(line) for line in golden.read_text().splitlines()]
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, f"{name}:{e['image']}")
