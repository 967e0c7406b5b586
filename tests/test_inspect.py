"""The routing-trace CLI: JSON lines with the keys of docs/trace.md, MACs that agree with FlopCounterMode, bad input."""

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from routescope.analysis import inspect
from routescope.analysis.core.catalog import sample_images
from routescope.analysis.core.images import load_model_input
from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, save_checkpoint
from routescope.models.data import FASHION_MNIST

from helpers import REPO, TINY_META, huge_png


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    meta = {**TINY_META, "metrics": {}}
    save_checkpoint(path, create_model("resnet8", in_chans=1), meta)
    return path


def test_trace_lines_have_the_required_keys(tiny_checkpoint, capsys):
    images = [str(p) for p in sample_images()[:3]]
    assert inspect.main(["--checkpoint", str(tiny_checkpoint), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, image in zip(lines, images):
        record = json.loads(line)
        assert record["image"] == image
        assert record["model"] == {"name": "tiny", "method": "baseline", "dataset": "fashion-mnist"}
        assert set(record["prediction"]) == {"index", "label", "probability"}
        assert record["prediction"]["label"] == FASHION_MNIST.classes[record["prediction"]["index"]]
        assert record["decisions"] == [] and record["structure"] == []
        assert record["cost"]["macs"] == record["cost"]["macs_full"] > 0


def test_macs_agree_with_flop_counter(tiny_checkpoint):
    model = load_checkpoint(tiny_checkpoint)
    for path in sample_images()[:4]:
        x = load_model_input(path, model.meta).tensor
        from routescope.analysis.core.trace import trace_batch

        macs = trace_batch(model, x, [path.name])[0]["cost"]["macs"]
        with FlopCounterMode(display=False) as counter:
            model(x)
        assert abs(macs - counter.get_total_flops() / 2) <= 0.01 * macs


def test_bad_images_fail_alone(tiny_checkpoint, tmp_path, capsys):
    good = sample_images()[0]
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "bomb.png").write_bytes(huge_png())
    args = [
        str(tmp_path / "notes.txt"),
        str(good),
        str(tmp_path / "cut.png"),
        str(tmp_path / "bomb.png"),
        str(tmp_path / "gone.png"),
        str(good),
    ]
    assert inspect.main(["--checkpoint", str(tiny_checkpoint), *args]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 2
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("error: ") for e in errors)
    assert (
        "not an image" in errors[0]
        and "truncated" in errors[1]
        and ("megapixel" in errors[2] or "decompression bomb" in errors[2])
        and "no such file" in errors[3]
    )


def test_bad_checkpoint_is_one_line(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"nope")
    result = subprocess.run(
        [sys.executable, "-m", "analysis.inspect", "--checkpoint", str(tmp_path / "x.pt"), str(sample_images()[0])],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "not a loadable RouteScope checkpoint" in result.stderr


def test_no_structure_flag(tiny_checkpoint, capsys):
    inspect.main(["--checkpoint", str(tiny_checkpoint), "--no-structure", str(sample_images()[0])])
    assert "structure" not in json.loads(capsys.readouterr().out)


def test_batched_trace_matches_single_images(tiny_checkpoint):
    from routescope.models.trace import traced_forward

    model = load_checkpoint(tiny_checkpoint)
    x = torch.cat([load_model_input(p, model.meta).tensor for p in sample_images()[:5]])
    logits, trace = traced_forward(model, x)
    for i in range(5):
        single_logits, single = traced_forward(model, x[i : i + 1])
        assert torch.allclose(logits[i], single_logits[0], atol=1e-5)
        assert trace.macs[i] == single.macs[0]
