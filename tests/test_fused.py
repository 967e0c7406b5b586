"""The compiled batch-1 kernels (``models.layers.fused``: SkipNet's gate step, early exit's heads) compute what the
PyTorch operators compute; ``test_inference_form`` checks that ``FlopCounterMode`` counts them as those operators.
Skipped where no C++ compiler can build them (the fallback is the PyTorch operators, tested everywhere else)."""

import copy

import pytest
import torch

from routescope.analysis.core.catalog import bundled_checkpoints
from routescope.models import create_model, load_checkpoint
from routescope.models.inference import fast_form
from routescope.models.layers.fused import fused_ops

pytestmark = pytest.mark.skipif(not fused_ops(), reason="no C++ compiler for the compiled kernels")


LAYOUTS = [torch.contiguous_format, torch.channels_last]  # the kernels read either without a copy


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 16, 28, 28), (1, 64, 7, 7), (1, 2048, 3, 3)])
def test_compiled_gate_step_equals_the_pytorch_step(shape, layout):
    gates = fast_form(create_model("skipnet_resnet20", in_chans=1)).gates
    torch.manual_seed(0)
    with torch.no_grad():
        for p in (gates.lstm.weight_ih, gates.lstm.weight_hh, gates.lstm.bias_ih, gates.proj.weight):
            p.normal_(0, 0.5)
    channels = shape[1]
    gates.embed[0] = torch.nn.Conv2d(channels, 10, 1)
    gates.prepare_fast_form()
    assert gates.compiled
    x = torch.randn(shape).contiguous(memory_format=layout)
    h, c = torch.randn(1, 10), torch.randn(1, 10)
    with torch.inference_mode():
        want_z, (want_h, want_c) = gates._fused_step(0, x, (h, c))
        state = torch.cat([h, c])
        z, state = gates.step_one(0, x, state)
    assert z == pytest.approx(float(want_z), abs=1e-5)
    torch.testing.assert_close(state, torch.cat([want_h, want_c]), atol=1e-5, rtol=1e-5)


def test_python_fallback_gives_the_same_logits():
    model = load_checkpoint(bundled_checkpoints()["skipnet_resnet20_fmnist_a0.75_fta6kd"])
    fallback = copy.deepcopy(model)
    fallback.gates.compiled = False
    x = torch.randn(8, 1, 1, 28, 28)
    with torch.inference_mode():
        for xi in x:
            torch.testing.assert_close(model(xi), fallback(xi), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["sdn", "pool"])
@pytest.mark.parametrize("side", [28, 14, 7, 4, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_exit_head_equals_the_pytorch_head(kind, side, layout):
    from routescope.models.layers.exit_head import ExitHead

    torch.manual_seed(side)
    head = ExitHead(32, 10, kind).eval()
    x = torch.randn(1, 32, side, side).contiguous(memory_format=layout)
    with torch.inference_mode():
        want = head(x)
        head.prepare_fast_form()
        assert head.compiled
        z, confidence = head.decide(x)
    torch.testing.assert_close(z, want, atol=1e-5, rtol=1e-5)
    assert confidence == pytest.approx(float(want.softmax(1).amax()), abs=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_condconv_routing_equals_the_pytorch_block(layout):
    from routescope.models.trace import forced_forward

    model = load_checkpoint(bundled_checkpoints()["condconv_resnet20_fmnist"])
    fallback = copy.deepcopy(model)
    for block in fallback.layer3:
        assert block.compiled
        block.compiled = False
    x = torch.randn(1, 64, 7, 7).contiguous(memory_format=layout)
    with torch.inference_mode():
        got, routing = model.layer3[1].routed(x)
        want, want_routing = fallback.layer3[1].routed(x)
        torch.testing.assert_close(routing, want_routing, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        image, forced = torch.randn(1, 1, 28, 28), {"layer3.1": {"weights": [1.0, 0.0, 0.0, 0.0]}}
        torch.testing.assert_close(
            forced_forward(model, image, forced), forced_forward(fallback, image, forced), atol=1e-5, rtol=1e-5
        )
