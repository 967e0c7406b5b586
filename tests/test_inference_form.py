"""The fast inference form (what load_checkpoint returns) computes what the training form computes, for every
bundled model: the same decisions on all 500 bundled test images, logits within float32 rounding, the same
executed MACs, with BatchNorm really folded away."""

import pytest
import torch
import torch.nn as nn

from routescope.analysis.core.catalog import bundled_checkpoints
from routescope.analysis.core.table import load_test_images
from routescope.models import create_model, load_checkpoint
from routescope.models.checkpoint import inference_form, save_checkpoint
from routescope.models.cost import full_macs
from routescope.models.data import normalize
from routescope.models.inference import fast_form
from routescope.models.trace import traced_forward

from helpers import every_bundled_checkpoint, routing_decisions


@pytest.fixture(scope="module")
def images():
    return load_test_images()[0]


@pytest.mark.parametrize("name", every_bundled_checkpoint())
def test_fast_form_matches_training_form(name, images, loaded_checkpoint):
    path = bundled_checkpoints()[name]
    trained = inference_form(loaded_checkpoint(path, form="train"))  # DGConv: a new model, the rest: the shared one
    fast = loaded_checkpoint(path)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "every BatchNorm is folded"
    x = normalize(images, fast.meta["mean"], fast.meta["std"])
    want, want_trace = traced_forward(trained, x)
    got, got_trace = traced_forward(fast, x)
    assert routing_decisions(got_trace) == routing_decisions(want_trace)
    scale = want.abs().amax(1, keepdim=True).clamp_min(1.0)
    assert ((got - want).abs() / scale).max() < 1e-5
    torch.testing.assert_close(got_trace.macs, want_trace.macs, rtol=0, atol=0)
    assert full_macs(fast, tuple(fast.meta["input_size"])) == full_macs(trained, tuple(fast.meta["input_size"]))


@pytest.mark.parametrize(
    "arch",
    [
        "skipnet_resnet8",
        "dsnet_resnet8",
        "condconv_resnet8",
        "dgconv_resnet8",
        "early_exit_resnet8",
        "repr_resnet8",
        "resnet8",
    ],
)
def test_fast_form_of_random_models_with_trained_statistics(arch):
    """Random BN statistics (as after training) so that folding has something to fold."""
    model = create_model(arch, in_chans=1)
    for m in model.modules():
        if hasattr(m, "running_var"):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    reference = inference_form(model)
    want, want_trace = traced_forward(reference, x)
    import copy

    fast = fast_form(copy.deepcopy(reference))
    got, got_trace = traced_forward(fast, x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    assert routing_decisions(got_trace) == routing_decisions(want_trace)
    assert got_trace.macs.tolist() == want_trace.macs.tolist()


def test_fast_form_is_not_saved(tmp_path):
    model = fast_form(create_model("resnet8", in_chans=1))
    with pytest.raises(ValueError, match="fast inference form"):
        save_checkpoint(tmp_path / "x.pt", model, {})


def test_train_form_still_loads_with_its_batchnorms():
    path = bundled_checkpoints()["resnet20_fmnist"]
    assert any(isinstance(m, nn.BatchNorm2d) for m in load_checkpoint(path, form="train").modules())
    with pytest.raises(ValueError, match="form must be"):
        load_checkpoint(path, form="quick")


BATCH_ONE_PATHS = [
    "skipnet_resnet20_fmnist_a0.75_fta6kd",
    "early_exit_resnet20_fmnist",
    "dsnet_resnet20_fmnist_grid4_hw6_long",
    "condconv_resnet20_fmnist",
]


@pytest.mark.parametrize("name", BATCH_ONE_PATHS)
def test_untraced_batch_one_path_matches_the_traced_batch(name, images):
    """Plain batch-1 inference (Python control flow, no trace) gives the traced batch's logits image by image."""
    model = load_checkpoint(bundled_checkpoints()[name])
    x = normalize(images, model.meta["mean"], model.meta["std"])  # all 500: the same decisions on every one
    batched, _ = traced_forward(model, x)
    with torch.inference_mode():
        single = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(single, batched, atol=1e-4, rtol=1e-5)
    assert (single.argmax(1) == batched.argmax(1)).all()


@pytest.mark.parametrize("name", BATCH_ONE_PATHS)
def test_untraced_batch_one_path_counts_the_traced_macs(name, images):
    """``FlopCounterMode`` over the batch-1 path (compiled kernels included, where built) counts what the trace
    counts."""
    from torch.utils.flop_counter import FlopCounterMode

    model = load_checkpoint(bundled_checkpoints()[name])
    x = normalize(images[:8], model.meta["mean"], model.meta["std"])
    _, trace = traced_forward(model, x)
    for i in range(len(x)):
        with FlopCounterMode(display=False) as flops, torch.inference_mode():
            model(x[i : i + 1])
        assert flops.get_total_flops() / 2 == trace.macs[i].item()
