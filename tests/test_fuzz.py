"""A seeded sample of ``python -m tools.fuzz``: mutated images only ever give an ``ImageError`` or a valid model
input, mutated checkpoints a ``CheckpointError`` or a usable model; never another exception or a hang."""

from __future__ import annotations

import io

import pytest
import torch

from tools.fuzz import Case, PRETRAINED, Runner, checkpoint_cases, fuzz, image_cases, run_case


@pytest.mark.heavy
def test_seeded_sample_has_no_failures():
    summary = fuzz(70, 30, seed=7, timeout=120)
    assert summary["cases"] == 100
    kinds = {k.split(":")[0] for k in summary["outcomes"]}
    assert kinds == {"image", "checkpoint"}
    assert not summary["failures"], "\n\n".join(f"{k} {n}\n{d}" for k, n, d in summary["failures"][:5])
    # the sample exercises both outcomes of each kind, not only refusals
    assert {"image: ok", "image: ImageError", "checkpoint: ok", "checkpoint: CheckpointError"} <= set(
        summary["outcomes"]
    )


def test_cases_are_seeded():
    assert [c.name for c in image_cases(30, 1)] == [c.name for c in image_cases(30, 1)]
    assert [c.data for c in checkpoint_cases(5, 1)] == [c.data for c in checkpoint_cases(5, 1)]


def _payload() -> dict:
    return torch.load(PRETRAINED / "resnet20_fmnist.pt", weights_only=True)


def _bytes(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_nan_weights_and_huge_widths_are_checkpoint_errors():
    payload = _payload()
    payload["state_dict"]["fc.weight"][0, 0] = float("nan")
    outcome, detail = run_case(Case("checkpoint", "nan", _bytes(payload)))
    assert outcome == "CheckpointError" and "NaN/inf" in detail
    payload = _payload()
    payload["config"]["widths"] = [4096, 4096, 4096]
    outcome, detail = run_case(Case("checkpoint", "huge", _bytes(payload)))
    assert outcome == "CheckpointError" and "widths" in detail


def test_an_exception_of_another_type_is_a_failure():
    """The fuzzer itself can fail: an image case fed to a checkpoint meta that breaks conversion is reported."""
    data = (PRETRAINED.parent / "assets" / "samples" / "bag-1.png").read_bytes()
    outcome, detail = run_case(
        Case("image", "bad-meta", data, False, {"input_size": [3, 32, 32], "mean": [0.1, 0.2], "std": [1.0]})
    )
    assert outcome == "failure" and "Traceback" in detail  # a RuntimeError from normalize: not an ImageError
    outcome, detail = run_case(
        Case("image", "wrong-shape", data, False, {"input_size": [1, 28, 28], "mean": [0.1] * 4, "std": [1.0]})
    )
    assert outcome == "failure" and "want (1, 1, 28, 28)" in detail


def test_a_hang_is_a_failure_not_a_hang():
    runner = Runner(timeout=0.5)
    runner.warm = True  # skip the first-case grace period
    try:
        runner._start()
        outcome, detail, _ = runner.run(Case("sleep", "sleep", b""))
    finally:
        runner.close()
    assert outcome == "failure" and ("timed out" in detail or "died" in detail)
