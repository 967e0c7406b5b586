"""Early exit: nothing after the exit is computed, batched equals batch-1, thresholds behave, training works."""

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from routescope.analysis.core.catalog import PRETRAINED
from routescope.analysis.core.table import dataset_table, load_test_images
from routescope.analysis.methods.early_exit import exit_by_class, exit_shares, static_exits, threshold_sweep
from helpers import run_args
from routescope.models import create_model, load_checkpoint
from routescope.models.cost import count_macs
from routescope.models.data import normalize
from routescope.models.recipes.early_exit import JointExitStage, early_exit_recipe, sdn_weights
from routescope.models.trace import traced_forward

BUNDLED = PRETRAINED / "early_exit_resnet20_fmnist.pt"


def flop_macs(model: nn.Module, x: torch.Tensor, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, **kwargs)
    return counter.get_total_flops() // 2


def confident_at(k: int, threshold: float = 0.9) -> nn.Module:
    """A random early-exit ResNet-20 whose exit ``k`` is certain of class 0 (and no earlier exit is)."""
    model = create_model("early_exit_resnet20", in_chans=1, threshold=threshold).eval()
    with torch.no_grad():
        for i, head in enumerate(model.exits):
            head.fc.weight.zero_()
            head.fc.bias.zero_()
            if i == k:
                head.fc.bias[0] = 50.0
    return model


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("k", [0, 3, 6])
def test_nothing_after_the_exit_is_computed(k, x):
    model = confident_at(k)
    _, trace = traced_forward(model, x[:1])
    visited = trace.decisions[0]
    assert [d["layer"] for d in visited] == list(model.exit_names[: k + 1])
    assert visited[-1]["exited"] and not any(d["exited"] for d in visited[:-1])
    assert flop_macs(model, x[:1]) == pytest.approx(float(trace.macs[0]), rel=1e-9)


def test_an_early_exit_costs_less_than_a_late_one(x):
    costs = [count_macs(confident_at(k), x[:1]) for k in range(7)]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    dense = count_macs(confident_at(0).dense_counterpart(), x[:1])
    assert costs[0] < 0.3 * dense and costs[-1] < dense


def test_threshold_above_one_runs_every_block_and_takes_the_final_exit(x):
    model = confident_at(0)
    logits, trace = traced_forward(lambda t: model(t, threshold=1.01), x[:1])
    visited = trace.decisions[0]
    assert [d["layer"] for d in visited] == [*model.exit_names, "fc"]
    assert [d["exited"] for d in visited] == [False] * len(model.exit_names) + [True]
    heads = sum(head.fc.in_features * head.fc.out_features for head in model.exits)
    assert float(trace.macs[0]) == count_macs(model.dense_counterpart(), x[:1]) + heads
    dense_logits = model.dense_counterpart().eval()(x[:1])
    torch.testing.assert_close(logits, dense_logits)


def test_exit_at_runs_the_static_truncated_network(x):
    model = confident_at(6)  # its own policy exits late; exit_at forces the first
    _, trace = traced_forward(lambda t: model(t, exit_at=model.exit_names[0]), x[:1])
    assert [(d["layer"], d["exited"]) for d in trace.decisions[0]] == [(model.exit_names[0], True)]
    assert float(trace.macs[0]) < count_macs(model, x[:1])


def test_threshold_is_a_call_setting_not_a_mutation(x):
    model = confident_at(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(x, threshold=0.1)
    model(x, threshold=2.0)
    assert model.threshold == 0.9
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(BUNDLED)


@pytest.fixture(scope="module")
def subset():
    return load_test_images("fashion-mnist-subset")


def test_bundled_batched_equals_batch_one(bundled, subset):
    images, _ = subset
    x = normalize(images[:64], bundled.meta["mean"], bundled.meta["std"])
    logits, trace = traced_forward(bundled, x)
    exits = {d["layer"] for row in trace.decisions for d in row if d["exited"]}
    assert len(exits) >= 2, "the sample should leave at more than one exit"
    for i in range(0, 64, 7):
        one, single = traced_forward(bundled, x[i : i + 1])
        torch.testing.assert_close(one, logits[i : i + 1], atol=1e-5, rtol=1e-5)
        assert [(d["layer"], d["exited"]) for d in single.decisions[0]] == [
            (d["layer"], d["exited"]) for d in trace.decisions[i]
        ]
        assert float(single.macs[0]) == pytest.approx(float(trace.macs[i]), rel=1e-6)
        assert flop_macs(bundled, x[i : i + 1]) == pytest.approx(float(single.macs[0]), rel=1e-6)


def test_bundled_trained_threshold_reproduces_recorded_subset_metrics(bundled, subset):
    recorded = bundled.meta["metrics"]["datasets"]["fashion-mnist-subset"]
    table = dataset_table(bundled, *subset)
    assert table["correct"].mean() == pytest.approx(recorded["test_acc"], abs=1e-6)
    assert table["macs"].mean() == pytest.approx(recorded["macs_mean"], rel=1e-6)


def test_bundled_sweep_trades_accuracy_for_macs(bundled, subset):
    images, labels = subset[0][:200], subset[1][:200]
    sweep = threshold_sweep(bundled, images, labels, thresholds=(0.5, 0.9, 1.01))
    assert sweep["macs"].is_monotonic_increasing
    static = static_exits(bundled, images, labels)
    assert static["macs"].is_monotonic_increasing and len(static) == len(bundled.exit_names) + 1
    # a threshold above 1 is the final exit for every image: the last static point, heads included
    assert sweep["accuracy"].iloc[-1] == pytest.approx(static["accuracy"].iloc[-1])
    table = dataset_table(bundled, images, labels)
    assert exit_shares(table).sum() == pytest.approx(1.0)
    assert exit_by_class(table).sum(axis=1).round(6).isin([0.0, 1.0]).all()


def test_sdn_weight_schedule():
    assert sdn_weights([0.2, 0.9], 0, 4) == [0.01, 0.01]
    assert sdn_weights([0.2, 0.9], 2, 4) == pytest.approx([0.11, 0.46])
    assert sdn_weights([0.2, 0.9], 8, 4) == [0.2, 0.9]


def test_joint_stage_trains_every_exit_and_ic_only_freezes_the_backbone():
    model = create_model("early_exit_resnet8", in_chans=1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    stage = JointExitStage(2, 0.1, distill_weight=0.5)
    out = stage.training_step(model.train(), x, y)
    out.loss.backward()
    assert all(head.fc.weight.grad is not None for head in model.exits)
    frozen = JointExitStage(1, 0.1, ic_only=True)
    backbone = {id(p) for p in model.parameters()} - {id(p) for p in model.exits.parameters()}
    assert not backbone & {id(p) for p in frozen.parameters(model)}
    with pytest.raises(ValueError):
        JointExitStage(1, 0.1, distill_weight=2.0)


def test_recipe_reads_its_options():
    args = run_args(epochs=3, lr=0.02, weight_decay=5e-4, exit_distill=0.25, exit_ic_only=False)
    (stage,) = early_exit_recipe(args)
    assert stage.epochs == 3 and stage.distill_weight == 0.25
