"""DS-Net: slicing against plain layers, static subnets against plain ResNets, true per-width batching,
MAC accounting, both training stages (IEB with its EMA teacher, SGS), BN recalibration, checkpoints."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers import varied_images, run_args
from routescope.models.options import add_options
from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from routescope.models.cost import full_macs
from routescope.models.data import FASHION_MNIST
from routescope.models.dsnet import DSResNet
from routescope.models.layers.slimmable import SlimBatchNorm2d, SlimConv2d
from routescope.models.recipes.dsnet import (
    sgs_gate_loss,
    GateStage,
    SupernetStage,
    DSNetOptions,
    dsnet_recipe,
    ema_update,
    expected_cost,
    ieb_loss,
    recalibrate_bn,
    sgs_targets,
)
from routescope.models.resnet import ResNet
from routescope.models.trace import traced_forward

CHOICES = (0.25, 0.5, 0.75, 1.0)


def make(attention: bool = True, seed: int = 0, mixed: bool = False, **kwargs) -> DSResNet:
    """A small DS-ResNet-8 with non-trivial BN affines and per-width statistics, in eval mode.

    ``mixed``: width heads with large random weights and no bias, so gates disagree across a batch.
    """
    torch.manual_seed(seed)
    model = create_model("dsnet_resnet8", num_classes=10, in_chans=1, attention=attention, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, SlimBatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        if attention:
            for gate in model.gates.values():
                gate.se.weight.normal_(0.0, 0.5)
        if mixed:
            for gate in model.gates.values():
                gate.reduce.bias.normal_(0.0, 1.0)
                gate.width.weight.normal_(0.0, 3.0)
                gate.width.bias.zero_()
    return model.eval()


def flops_macs(fn, *args) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 2


# --- slice-able layers ------------------------------------------------------------------------------------


def test_sliced_conv_equals_plain_conv_with_first_filters():
    torch.manual_seed(0)
    slim = SlimConv2d(6, 8, 3, stride=2, padding=1, bias=True)
    plain = nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        plain.weight.copy_(slim.weight[:5, :4])
        plain.bias.copy_(slim.bias[:5])
    x = torch.randn(3, 4, 9, 9)
    assert torch.allclose(slim(x, 5), plain(x), atol=1e-6)
    assert flops_macs(slim, x, 5) == flops_macs(plain, x)  # real slicing: only the small conv is computed
    assert slim(torch.randn(2, 6, 9, 9)).shape[1] == 8
    with pytest.raises(ValueError):
        slim(torch.randn(1, 7, 9, 9))


def test_slim_bn_uses_its_own_running_stats_per_width():
    torch.manual_seed(0)
    bn = SlimBatchNorm2d(6, num_keys=3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(16, 4, 5, 5) * 3 + 2
    before = bn.running_mean.clone(), bn.running_var.clone()
    bn.train()
    bn(x, key=1)
    changed = (bn.running_mean != before[0]) | (bn.running_var != before[1])
    assert changed[1, :4].all() and not changed[1, 4:].any() and not changed[0].any() and not changed[2].any()
    assert bn.num_batches_tracked.tolist() == [0, 1, 0]
    bn.eval()
    with torch.no_grad():
        bn.running_mean[0].uniform_(-1, 1)
        bn.running_var[2].uniform_(0.5, 2)
    for key in range(3):
        want = F.batch_norm(
            x, bn.running_mean[key, :4], bn.running_var[key, :4], bn.weight[:4], bn.bias[:4], False, 0.0, bn.eps
        )
        assert torch.allclose(bn(x, key), want, atol=1e-6)
    assert not torch.allclose(bn(x, 0), bn(x, 2))


# --- static subnets against plain ResNets -----------------------------------------------------------------


def plain_subnet(model: DSResNet, widths: tuple[float, float]) -> ResNet:
    """A separately built ResNet-8 at the subnet's channels, weights copied here (not with the model's helpers).

    BN row layout (module docstring): first block's bn1/shortcut BN use ``prev * n + this``, others ``this``.
    """
    n = len(CHOICES)
    i2, i3 = CHOICES.index(widths[0]), CHOICES.index(widths[1])
    rows = {
        "layer1.0.bn1": 0,
        "layer1.0.bn2": 0,
        "layer2.0.bn1": i2,
        "layer2.0.shortcut.1": i2,
        "layer2.0.bn2": i2,
        "layer3.0.bn1": i2 * n + i3,
        "layer3.0.shortcut.1": i2 * n + i3,
        "layer3.0.bn2": i3,
    }
    channels = (16, round(32 * widths[0]), round(64 * widths[1]))
    plain = create_model("resnet8", num_classes=10, in_chans=1, widths=channels).eval()
    source = model.state_dict()
    state = {}
    for name, like in plain.state_dict().items():
        tensor = source[name]
        module, _, leaf = name.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked") and module in rows:
            tensor = tensor[rows[module]]
        state[name] = tensor[tuple(slice(0, s) for s in like.shape)]
    plain.load_state_dict(state)
    return plain


@pytest.mark.parametrize("widths", [(0.25, 0.25), (0.5, 0.5), (1.0, 1.0), (0.25, 1.0), (0.75, 0.5)])
def test_static_subnet_equals_plain_resnet(widths):
    model = make(attention=False)
    x = varied_images(4)
    with torch.no_grad():
        want = plain_subnet(model, widths)(x)
        assert torch.allclose(model.forward_at_width(x, widths), want, atol=1e-5)
        assert torch.allclose(model.static_subnet(widths)(x), want, atol=1e-5)
    if widths[0] == widths[1]:
        assert torch.allclose(model(x, width=widths[0]), want, atol=1e-5)


def test_static_subnet_with_attention_equals_plain_resnet_with_se():
    """The SE head scales relu(bn1(conv1 x)) of each dynamic stage's first block (a > 0, so bn1's output may be
    scaled)."""
    model = make(attention=True)
    widths = (0.5, 0.75)
    plain = plain_subnet(model, widths)
    for s, w in zip((2, 3), widths):
        gate, channels = model.gates[f"layer{s}"], round(model.widths[s - 1] * w)
        block = getattr(plain, f"layer{s}")[0]
        block.register_forward_pre_hook(
            lambda m, args, gate=gate, k=channels: setattr(m, "_att", gate.attention(gate.hidden(args[0]), k))
        )
        block.bn1.register_forward_hook(lambda m, args, out, block=block: out * block._att)
    x = varied_images(4)
    with torch.no_grad():
        assert torch.allclose(model.forward_at_width(x, widths), plain(x), atol=1e-5)
        assert not torch.allclose(model.static_subnet(widths)(x), plain(x), atol=1e-3)  # the SE head does something


def test_dense_counterpart_is_the_full_width_plain_resnet():
    model = make(attention=False)
    dense = model.dense_counterpart()
    assert type(dense) is ResNet and dense.widths == (16, 32, 64)
    x = varied_images(3)
    with torch.no_grad():
        assert torch.allclose(dense(x), model.forward_at_width(x, 1.0), atol=1e-5)
    assert full_macs(model, (1, 28, 28)) == full_macs(create_model("resnet8", in_chans=1), (1, 28, 28))


# --- dynamic inference ------------------------------------------------------------------------------------


def test_gate_in_eval_is_deterministic_argmax():
    model = make(mixed=True)
    x = varied_images(8)
    with torch.no_grad():
        first, second = model(x, return_gates=True), model(x, return_gates=True)
    assert torch.equal(first.choices, second.choices) and torch.equal(first.logits, second.logits)
    assert torch.equal(first.choices, first.width_logits.argmax(-1))
    assert first.width_logits.shape == (8, 2, 4)


@pytest.mark.parametrize("gate_grid, seed", [(1, 7), (4, 0)])  # seeds whose gates mix widths on these images
def test_mixed_width_batch_equals_batch_one_forwards(gate_grid, seed):
    model = make(mixed=True, seed=seed, gate_grid=gate_grid)
    x = varied_images(12)
    logits, trace = traced_forward(model, x)
    with torch.no_grad():
        choices = model(x, return_gates=True).choices
    configs = {tuple(c) for c in choices.tolist()}
    assert len(configs) >= 3 and len({c[0] for c in configs}) >= 2 and len({c[1] for c in configs}) >= 2, (
        "the test needs mixed widths"
    )
    for i in range(len(x)):
        one, one_trace = traced_forward(model, x[i : i + 1])
        assert torch.allclose(logits[i], one[0], atol=1e-5)
        assert _same_decisions(trace.decisions[i], one_trace.decisions[0])
        assert trace.macs[i].item() == pytest.approx(one_trace.macs[0].item(), rel=1e-9)


def _same_decisions(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for da, db in zip(a, b):
        if {k: v for k, v in da.items() if k != "probabilities"} != {
            k: v for k, v in db.items() if k != "probabilities"
        }:
            return False
        if not torch.allclose(torch.tensor(da["probabilities"]), torch.tensor(db["probabilities"]), atol=1e-5):
            return False
    return True


def test_width_decisions_are_recorded():
    model = make(mixed=True)
    _, trace = traced_forward(model, varied_images(6))
    for decisions in trace.decisions:
        assert [d["layer"] for d in decisions] == ["layer2", "layer3"]
        for d, full in zip(decisions, (32, 64)):
            assert d["kind"] == "width" and d["width"] in CHOICES and d["max_channels"] == full
            assert d["channels"] == round(d["width"] * full)
            assert len(d["probabilities"]) == 4 and sum(d["probabilities"]) == pytest.approx(1.0, abs=1e-5)
            assert d["width"] == CHOICES[max(range(4), key=lambda k: d["probabilities"][k])]


@pytest.mark.parametrize("gate_grid", [1, 4])
def test_macs_agree_with_flop_counter_and_narrow_subnet_is_cheaper(gate_grid):
    model = make(mixed=True, gate_grid=gate_grid)
    x = varied_images(6)
    for i in range(len(x)):
        xi = x[i : i + 1]
        _, trace = traced_forward(model, xi)
        assert abs(flops_macs(model, xi) - trace.macs[0].item()) <= 0.01 * trace.macs[0].item()
    narrow = traced_forward(lambda z: model(z, width=0.25), x[:1])[1].macs[0].item()
    wide = traced_forward(lambda z: model(z, width=1.0), x[:1])[1].macs[0].item()
    assert narrow == pytest.approx(flops_macs(model.forward_at_width, x[:1], 0.25), rel=0.01)
    assert narrow < 0.5 * wide
    slim_all = make(dynamic_stages=(1, 2, 3))
    narrow_all = traced_forward(lambda z: slim_all(z, width=0.25), x[:1])[1].macs[0].item()
    assert narrow_all < 0.12 * wide


def test_grid_gates_start_from_global_gates_through_init_from():
    """A grid gate initialized from a global-pool gate reads the mean of its cells: on feature maps that are
    constant over space it computes exactly what the global gate did."""
    glob, grid = make(seed=1), make(seed=2, gate_grid=4)
    used = grid.upcycle(glob.state_dict())
    assert used == ["gates.layer2.reduce.weight", "gates.layer3.reduce.weight"]
    assert grid.gates["layer2"].reduce.weight.shape[-2:] == (4, 4)
    x = torch.randn(3, 16, 1, 1).expand(3, 16, 8, 8)
    with torch.no_grad():
        grid.gates["layer2"].reduce.bias.copy_(glob.gates["layer2"].reduce.bias)
        assert torch.allclose(grid.gates["layer2"].hidden(x), glob.gates["layer2"].hidden(x), atol=1e-6)
    assert make(seed=3).upcycle(glob.state_dict()) == [], "global gates keep their own weights (init_from matched them)"


def test_static_forward_records_the_forced_width():
    model = make()
    _, trace = traced_forward(lambda z: model(z, width=(0.25, 0.75)), varied_images(2))
    assert [(d["layer"], d["width"], d["channels"], d["forced"]) for d in trace.decisions[1]] == [
        ("layer2", 0.25, 8, True),
        ("layer3", 0.75, 48, True),
    ]


# --- training -----------------------------------------------------------------------------------------------


def test_ieb_loss_targets():
    torch.manual_seed(0)
    student, teacher, y = torch.randn(4, 5, 10), torch.randn(3, 5, 10), torch.randint(10, (5,))
    p = teacher.softmax(-1)

    def soft(logits, target):  # the soft cross-entropy written out
        return -(target * logits.log_softmax(-1)).sum(-1).mean()

    want = (
        F.cross_entropy(student[0], y)
        + soft(student[1], p[0])
        + soft(student[2], p[0])
        + soft(student[3], (p[0] + p[1] + p[2]) / 3)
    )
    assert torch.allclose(ieb_loss(student, teacher, y), want)


def test_ieb_step_runs_and_the_ema_teacher_follows():
    model = make().train()
    stage = SupernetStage(epochs=1, lr=0.1, ema_decay=0.9)
    trainer = SimpleNamespace(model=model)
    stage.on_stage_start(trainer)
    before = {k: v.clone() for k, v in stage.teacher.state_dict().items()}
    opt = stage.optimizer(model)
    x, y = varied_images(8), torch.randint(10, (8,))
    out = stage.training_step(model, x, y)
    assert out.logits.shape == (8, 10) and torch.isfinite(out.loss)
    opt.zero_grad()
    out.loss.backward()
    assert model.layer3[0].conv1.weight.grad.abs().sum() > 0 and model.gates["layer3"].se.weight.grad is not None
    opt.step()
    stage.after_optimizer_step(trainer)
    student = model.state_dict()
    teacher = stage.teacher.state_dict()
    for name, _ in model.named_parameters():
        assert torch.allclose(teacher[name], 0.9 * before[name] + 0.1 * student[name], atol=1e-6)
    assert not torch.equal(teacher["layer3.0.conv1.weight"], before["layer3.0.conv1.weight"])
    assert all(p.grad is None for p in stage.teacher.parameters())
    # the EMA goes into the stage's state (the trainer's --resume) and comes back
    resumed = SupernetStage(epochs=1, lr=0.1)
    resumed.load_state_dict(stage.state_dict())
    restored = resumed.teacher_for(model).state_dict()
    assert all(torch.equal(restored[k], v) for k, v in teacher.items())


def test_ema_update_copies_buffers():
    student, teacher = make(seed=1), make(seed=2)
    ema_update(teacher, student, 0.5)
    assert torch.equal(teacher.layer2[0].bn1.running_mean, student.layer2[0].bn1.running_mean)


def test_sgs_targets_on_a_tiny_case():
    narrow = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    labels = torch.tensor([0, 0, 2, 0])
    assert sgs_targets(narrow, labels, 4).tolist() == [0, 3, 0, 3]


def test_expected_cost_prefers_narrow():
    wide = torch.tensor([[[0.0, 0.0, 0.0, 9.0]]])
    narrow = torch.tensor([[[9.0, 0.0, 0.0, 0.0]]])
    assert expected_cost(wide, CHOICES) > 0.99 and expected_cost(narrow, CHOICES) < 0.07


def test_recalibration_reaches_every_width_row():
    model = make()
    for m in model.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.num_batches_tracked.zero_()
    assert recalibrate_bn(model, [varied_images(8, seed=s) for s in range(2)]) == 2
    assert not model.training
    for name, m in model.named_modules():
        if isinstance(m, SlimBatchNorm2d):
            assert (m.num_batches_tracked > 0).all(), name
            assert m.momentum == 0.1
    # a single configuration and batch: the widest rows hold exactly that batch's statistics
    x = varied_images(8)
    recalibrate_bn(model, [x], configs=[model.widest_config])
    stem_out = model.stem[0](x)
    assert torch.allclose(model.stem[1].running_mean, stem_out.mean((0, 2, 3)), atol=1e-5)


def test_gate_stage_trains_only_the_gates():
    model = make(mixed=True).train()
    stage = GateStage(epochs=1, lr=0.05, complexity_weight=0.1)
    opt = stage.optimizer(model)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("gates.")}
    gates = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("gates.")}
    x, y = varied_images(16), torch.randint(10, (16,))
    for _ in range(2):
        out = stage.training_step(model, x, y)
        opt.zero_grad()
        out.loss.backward()
        assert (
            model.gates["layer2"].width.weight.grad.abs().sum() > 0
            and model.gates["layer3"].se.weight.grad.abs().sum() > 0
        )
        opt.step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())  # weights and BN statistics frozen
    assert any(not torch.equal(state[k], v) for k, v in gates.items())
    model.requires_grad_(True)


def test_recipe_stages_and_arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.1)
    add_options(parser, DSNetOptions)
    args = run_args(**vars(parser.parse_args(["--gate-epochs", "2", "--ema-decay", "0.99"])))
    stages = dsnet_recipe(args)
    assert [(s.name, s.epochs) for s in stages] == [("supernet-ieb", 4), ("gate-sgs", 2)]
    assert stages[0].ema_decay == 0.99 and not stages[1].recalibrate
    only_gates = dsnet_recipe(run_args(epochs=3, lr=0.1, supernet_epochs=0))
    assert [s.name for s in only_gates] == ["gate-sgs"] and only_gates[0].recalibrate


# --- checkpoints and the training CLI -----------------------------------------------------------------------


def test_checkpoint_roundtrip(tmp_path):
    model = make(mixed=True)
    meta = {
        "name": "ds",
        "method": "dsnet",
        "dataset": "fashion-mnist",
        "classes": list(FASHION_MNIST.classes),
        "input_size": [1, 28, 28],
        "mean": [0.286],
        "std": [0.353],
        "metrics": {},
        "recipe": {},
    }
    save_checkpoint(tmp_path / "ds.pt", model, meta)
    loaded = load_checkpoint(tmp_path / "ds.pt", form="train")
    assert isinstance(loaded, DSResNet) and loaded.method == "dsnet" and not loaded.training
    x = varied_images(8)
    (a, ta), (b, tb) = traced_forward(model, x), traced_forward(loaded, x)
    assert torch.equal(a, b) and ta.decisions == tb.decisions and torch.equal(ta.macs, tb.macs)


def test_training_cli_runs_both_stages_and_resumes_with_the_ema(fmnist_dir, tmp_path, monkeypatch):
    import dataclasses

    import routescope.models.registry as registry
    import routescope.models.train as train

    made = []  # the DS-Net recipe adds its own options to the parser; only its stages function is wrapped here
    recipe = dataclasses.replace(
        registry.recipe_of("dsnet"), stages=lambda args: made.append(dsnet_recipe(args)) or made[-1]
    )
    monkeypatch.setitem(registry._RECIPES, "dsnet", recipe)
    argv = [
        "--model",
        "dsnet_resnet8",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path),
        "--name",
        "ds",
        "--epochs",
        "2",
        "--gate-epochs",
        "1",
        "--limit-batches",
        "1",
        "--batch-size",
        "16",
        "--recalibration-batches",
        "1",
        "--no-progress",
        "--device",
        "cpu",
    ]

    def crash(self, trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(SupernetStage, "on_epoch_end", crash)
        with pytest.raises(KeyboardInterrupt):
            train.main(argv)
    state = read_checkpoint(tmp_path / "ds.last.pt")["train_state"]
    assert state["position"] == [0, 1] and "layer3.0.conv1.weight" in state["stage_state"]["ema"]

    loaded = []
    load = SupernetStage.load_state_dict
    monkeypatch.setattr(SupernetStage, "load_state_dict", lambda self, state: loaded.append(state) or load(self, state))
    assert train.main(argv + ["--resume"]) == 0
    assert len(loaded) == 1 and torch.equal(loaded[0]["ema"]["fc.weight"], state["stage_state"]["ema"]["fc.weight"])
    assert (
        made[-1][0].teacher is not None and made[-1][0].snapshot._pending is None
    )  # the teacher was built from the saved EMA
    model = load_checkpoint(tmp_path / "ds.pt")
    assert model.method == "dsnet" and [s["name"] for s in model.meta["recipe"]["stages"]] == [
        "supernet-ieb",
        "gate-sgs",
    ]
    assert [h["stage"] for h in model.meta["history"]] == ["supernet-ieb", "supernet-ieb", "gate-sgs"]
    assert 0 < model.meta["metrics"]["mac_ratio"] <= 1.001


def test_width_probabilities_stay_differentiable_for_attributions():
    model = make(mixed=True, seed=7)
    x = varied_images(12).requires_grad_(True)
    with torch.enable_grad():
        _, trace = traced_forward(model, x, keep_tensors=True)
        probs = trace.tensor("layer3", "probabilities")
        assert probs.shape == (12, 4)
        assert torch.allclose(probs.detach(), torch.tensor([d[1]["probabilities"] for d in trace.decisions]), atol=1e-6)
        (grad,) = torch.autograd.grad(probs[:, 0].sum(), x)
    assert grad.abs().sum() > 0


def test_evaluate_reports_every_static_width_on_the_same_images():
    from routescope.models.data import load_dataset
    from routescope.models.evaluation import evaluate

    model = make()
    data, info = load_dataset("fashion-mnist-subset", "test")
    metrics = evaluate(model, data, info, limit=40, batch_size=20, progress=False)
    variants = metrics["variants"]
    assert list(variants) == [f"static width {w:g}" for w in model.widths_choices]
    macs = [v["macs_mean"] for v in variants.values()]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    # the dynamic net picks among them, plus its width heads (a few hundred MACs)
    assert macs[0] <= metrics["macs_min"] and metrics["macs_max"] <= macs[-1] * 1.001
    x = torch.randn(1, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model.forward_at_width(x, width=model.widths_choices[-1])
    assert variants[f"static width {model.widths_choices[-1]:g}"]["macs_mean"] == counter.get_total_flops() // 2


def test_hard_weight_weighs_the_widest_target_in_the_gate_loss():
    logits = torch.randn(6, 4)
    target = torch.tensor([0, 0, 0, 0, 3, 3])  # four easy, two hard
    per_sample = F.cross_entropy(logits, target, reduction="none")
    w = torch.tensor([1.0, 1, 1, 1, 5, 5])
    torch.testing.assert_close(sgs_gate_loss(logits, target, 5.0), (w * per_sample).sum() / w.sum())
    torch.testing.assert_close(sgs_gate_loss(logits, target), per_sample.mean())
    args = run_args(epochs=0, lr=0.1, supernet_epochs=0, gate_epochs=1, hard_weight=4.0)
    assert dsnet_recipe(args)[0].hard_weight == 4.0
