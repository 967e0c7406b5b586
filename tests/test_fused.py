"""The compiled batch-1 SkipNet gate step (``models.layers.fused``) computes what the PyTorch operators compute,
and ``FlopCounterMode`` counts it as them. Skipped where no C++ compiler can build it (the fallback is the
PyTorch step, tested everywhere else)."""
import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis.core.catalog import bundled_checkpoints
from models import create_model, load_checkpoint
from models.inference import fast_form
from models.layers.fused import fused_ops
from models.trace import traced_forward

pytestmark = pytest.mark.skipif(not fused_ops(), reason="no C++ compiler for the compiled kernels")


@pytest.mark.parametrize("shape", [(1, 16, 28, 28), (1, 64, 7, 7), (1, 2048, 3, 3)])
def test_compiled_gate_step_equals_the_pytorch_step(shape):
    gates = fast_form(create_model("skipnet_resnet20", in_chans=1)).gates
    torch.manual_seed(0)
    with torch.no_grad():
        for p in (gates.lstm.weight_ih, gates.lstm.weight_hh, gates.lstm.bias_ih, gates.proj.weight):
            p.normal_(0, 0.5)
    channels = shape[1]
    gates.embed[0] = torch.nn.Conv2d(channels, 10, 1)
    gates.prepare_inference()
    assert gates.compiled
    x = torch.randn(shape)
    h, c = torch.randn(1, 10), torch.randn(1, 10)
    with torch.inference_mode():
        want_z, (want_h, want_c) = gates._fused_step(0, x, (h, c))
        state = torch.cat([h, c])
        z, state = gates.step_one(0, x, state)
    assert z == pytest.approx(float(want_z), abs=1e-5)
    torch.testing.assert_close(state, torch.cat([want_h, want_c]), atol=1e-5, rtol=1e-5)


def test_flop_counter_counts_the_compiled_step_as_the_operators():
    model = load_checkpoint(bundled_checkpoints()["skipnet_resnet20_fmnist_a0.75_fta6kd"])
    x = torch.randn(1, 1, 28, 28)
    _, trace = traced_forward(model, x)  # the batched path: PyTorch operators, counted one by one
    with FlopCounterMode(display=False) as flops, torch.inference_mode():
        model(x)  # the batch-1 path: the compiled step
    assert flops.get_total_flops() / 2 == trace.macs[0].item()


def test_python_fallback_gives_the_same_logits():
    model = load_checkpoint(bundled_checkpoints()["skipnet_resnet20_fmnist_a0.75_fta6kd"])
    fallback = copy.deepcopy(model)
    fallback.gates.compiled = False
    x = torch.randn(8, 1, 1, 28, 28)
    with torch.inference_mode():
        for xi in x:
            torch.testing.assert_close(model(xi), fallback(xi), atol=1e-5, rtol=1e-5)
