"""The fast form runs its weights in the memory format measured faster (issue "Speed on every device": against what
a user would pick instead, the dense network in its own fastest form); either format computes the same function."""

import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from routescope.analysis.core.catalog import bundled_checkpoints, featured
from routescope.analysis.core.table import load_test_images
from routescope.models import load_checkpoint
from routescope.models import memory_format as mf
from routescope.models.data import normalize
from routescope.models.errors import UsageError
from routescope.models.layers.derived import DerivedWeight
from routescope.models.trace import traced_forward

from helpers import routing_decisions

FLAGSHIPS = [entry["flagship"] for entry in featured().values()]
CL = torch.channels_last


def conv_weights(model: nn.Module) -> list[torch.Tensor]:
    """Every 4-D weight a forward can use, the DS-Net's folded per-width weights included."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    for m in model.modules():
        for path, shortcut in (getattr(m, "folded", None) or {}).values():
            weights += [w for w, _ in path] + ([shortcut[0]] if shortcut else [])
    return weights


def in_layout(t: torch.Tensor, name: str) -> bool:
    ambiguous = t.is_contiguous() and t.is_contiguous(memory_format=CL)  # e.g. one input channel: both layouts
    return ambiguous or t.is_contiguous(memory_format=mf.FORMATS[name])


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_either_format_computes_the_same_decisions_and_logits(name, monkeypatch):
    x = load_test_images()[0][:64]
    runs = {}
    for fmt in mf.FORMATS:
        monkeypatch.setenv(mf.ENV, fmt)
        model = load_checkpoint(bundled_checkpoints()[name])
        dense = model.dense_counterpart()
        assert model.memory_format == fmt and (dense is None or dense.memory_format == fmt)
        assert all(in_layout(w, fmt) for w in conv_weights(model)), f"{name}: a weight is not {fmt}"
        xn = normalize(x, model.meta["mean"], model.meta["std"])
        with torch.inference_mode():
            batch_one = torch.cat([model(xn[i : i + 1]) for i in range(8)])
            batched = model(xn)
        logits, trace = traced_forward(model, xn)
        runs[fmt] = (batch_one, batched, logits, routing_decisions(trace))
    (b1, bn, lg, dec), (b1_cl, bn_cl, lg_cl, dec_cl) = runs.values()
    assert dec == dec_cl
    for a, b in ((b1, b1_cl), (bn, bn_cl), (lg, lg_cl)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


class _LayoutSensitive(nn.Module):
    """A conv that is slow in one layout (a sleep), to check that the measurement keeps the faster one."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.slow = slow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_layout(self.conv.weight, self.slow):
            time.sleep(0.002)
        return F.relu(self.conv(x))


@pytest.mark.parametrize("slow", list(mf.FORMATS))
def test_auto_keeps_the_format_measured_faster(slow, monkeypatch):
    monkeypatch.delenv(mf.ENV, raising=False)
    model = _LayoutSensitive(slow).eval()
    chosen = mf.choose_memory_format(model, (2, 8, 8))
    assert chosen == model.memory_format and chosen != slow
    assert in_layout(model.conv.weight, chosen) and not in_layout(model.conv.weight, slow)
    assert mf.choose_memory_format(_LayoutSensitive(slow), None) == "contiguous", "nothing to measure with"


def test_a_network_too_slow_to_measure_fully_gets_one_round(monkeypatch):
    """An uploaded giant does not hold the app for dozens of forwards: one round of one timed forward per format."""
    monkeypatch.delenv(mf.ENV, raising=False)
    model = _LayoutSensitive("channels_last").eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    mf.choose_memory_format(model, (2, 8, 8))
    assert len(calls) == len(mf.FORMATS) * (1 + mf.ROUNDS * mf.FORWARDS), "the copies (hooks too) are timed"
    monkeypatch.setattr(mf, "BUDGET_S", 0.0)
    calls.clear()
    assert mf.choose_memory_format(model, (2, 8, 8)) == "contiguous"
    assert len(calls) == len(mf.FORMATS) * 2, "per format a warm-up and one timed run"


def test_the_environment_fixes_the_format_and_rejects_other_values(monkeypatch):
    monkeypatch.setenv(mf.ENV, "channels_last")
    assert mf.choose_memory_format(_LayoutSensitive("channels_last").eval(), (2, 8, 8)) == "channels_last"
    monkeypatch.setenv(mf.ENV, "nhwc")
    with pytest.raises(UsageError, match="ROUTESCOPE_MEMORY_FORMAT='nhwc'"):
        mf.requested_memory_format()


def test_layers_with_derived_weights_follow_the_format(monkeypatch):
    """DGConv's dense plan makes its weight again in the new layout; its plans are measured per layout."""
    monkeypatch.setenv(mf.ENV, "contiguous")
    model = load_checkpoint(bundled_checkpoints()["dgconv_resnet20_fmnist_b0.6_e8"])
    x = normalize(load_test_images()[0][:2], model.meta["mean"], model.meta["std"])
    layers = [m for m in model.modules() if hasattr(m, "_dense_conv") and m.conv.groups > 1]

    def dense_weights() -> list[torch.Tensor]:
        return [layer._dense.get(layer.conv.weight, layer._dense_weight_and_bias)[0] for layer in layers]

    with torch.inference_mode():
        want = model(x)
        assert all(in_layout(w, "contiguous") for w in dense_weights())
        mf.set_memory_format(model, "channels_last")
        assert all(in_layout(w, "channels_last") for w in dense_weights())
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert any(key[1] is False for layer in layers for key in layer.plans.chosen), "channels-last shapes keyed apart"


def test_a_derived_weight_is_made_again_when_its_weight_changes():
    made = []
    derived, weight = DerivedWeight(), torch.ones(3, 3)

    def make(w: torch.Tensor) -> torch.Tensor:
        made.append(1)
        return w * 2

    assert torch.equal(derived.get(weight, make), torch.full((3, 3), 2.0))
    derived.get(weight, make)
    assert len(made) == 1, "kept while the weight is unchanged"
    weight.add_(1.0)
    assert torch.equal(derived.get(weight, make), torch.full((3, 3), 4.0)), "in place: its version moved"
    weight.data = torch.zeros(3, 3)
    assert torch.equal(derived.get(weight, make), torch.zeros(3, 3)), "new storage (Module.to)"


def test_a_model_loaded_under_inference_mode_runs(monkeypatch):
    """Weights made under ``torch.inference_mode`` keep no version counter; the derived weights still work."""
    monkeypatch.setenv(mf.ENV, "channels_last")
    with torch.inference_mode():
        for name in ("condconv_resnet20_fmnist", "dgconv_resnet20_fmnist_b0.6_e8"):
            model = load_checkpoint(bundled_checkpoints()[name])
            assert model(torch.randn(1, 1, 28, 28)).shape == model(torch.randn(3, 1, 28, 28))[:1].shape


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_the_costliest_path_runs_at_least_what_any_image_runs(name):
    """The path the format is measured on: every layer (no skip, the widest width, no early exit), the same for every
    image, and no cheaper than any image's own path; {} for a model whose work does not depend on the input."""
    model = load_checkpoint(bundled_checkpoints()[name])
    x = normalize(load_test_images()[0][:32], model.meta["mean"], model.meta["std"])
    path = model.costliest_path()
    _, own = traced_forward(model, x)
    if not path:
        assert torch.all(own.macs == own.macs[0]), f"{name}'s work depends on the input: it needs a costliest path"
        return
    _, costliest = traced_forward(model, x, overrides=path)
    assert torch.all(costliest.macs == costliest.macs[0]), "one path for every image"
    assert costliest.macs[0] >= own.macs.max() and costliest.macs[0] > own.macs.min()


def test_the_format_is_measured_along_the_costliest_path(monkeypatch):
    """Noise leaves the early-exit flagship at its first exits, where both layouts are about as fast; the layers real
    images reach are measured only along the costliest path."""
    monkeypatch.delenv(mf.ENV, raising=False)
    model = load_checkpoint(bundled_checkpoints()[featured()["early_exit"]["flagship"]])
    seen = []
    monkeypatch.setattr(mf, "forced_forward", lambda m, x, overrides, *args, **kw: seen.append(overrides) or m(x))
    mf.choose_memory_format(model, tuple(model.meta["input_size"]))
    assert len(seen) == len(mf.FORMATS) * (1 + mf.ROUNDS * mf.FORWARDS)
    assert all(o == {name: {"exited": False} for name in model.exit_names} for o in seen)
