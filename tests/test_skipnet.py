"""SkipNet: gates, true skipping against masking, MAC accounting, both training stages, checkpoints."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers import randomize_batchnorm, varied_images, run_args
from routescope.models.options import add_options
from routescope.models import create_model
from routescope.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from routescope.models.cost import count_macs, full_macs
from routescope.models.data import FASHION_MNIST, load_dataset, normalize
from routescope.models.resnet import ResNet
from routescope.models.layers.skip_gates import FeedForwardGates, RNNGate, lstm_step
from routescope.models.recipes.skipnet import (
    HybridRLStage,
    SupervisedPretrainStage,
    SkipNetOptions,
    gate_log_probs,
    gate_returns,
    skipnet_recipe,
    PolicyFinetuneStage,
)
from routescope.models.skipnet import SkipNet
from routescope.models.stages import distillation_loss
from routescope.models.trace import traced_forward

GATES = ("rnn", "ff1", "ff2")


def make(gate: str = "rnn", depth: int = 8, seed: int = 0) -> SkipNet:
    """A small SkipNet whose residual branches are not zero (as after training), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(f"skipnet_resnet{depth}", num_classes=10, in_chans=1, gate=gate)
    randomize_batchnorm(model)
    return model.eval()


def final_bias(model: SkipNet) -> list[tuple[torch.Tensor, int | None]]:
    """The bias entries that raise each gate's logit: (tensor, index or None for all)."""
    if isinstance(model.gates, RNNGate):
        return [(model.gates.proj.bias, None)]
    return [(gate.head.bias, 1) for gate in model.gates.gates]


@torch.no_grad()
def force_gates(model: SkipNet, value: float) -> SkipNet:
    for bias, index in final_bias(model):
        if index is None:
            bias.fill_(value)
        else:
            bias[index] = value
            bias[1 - index] = 0.0
    return model


def middle(z: torch.Tensor) -> torch.Tensor:
    """Halfway between the two middle values: centring on it leaves no logit near the 0.5 boundary."""
    s = z.flatten().sort().values
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


@torch.no_grad()
def mix_decisions(model: SkipNet, x: torch.Tensor) -> SkipNet:
    """Shift the gates' final biases so that each gate is on for some images of ``x`` and off for others."""
    if isinstance(model.gates, RNNGate):  # one shared projection: sharpen it and centre it on the middle logit
        model.gates.proj.weight.mul_(50)
        model.gates.proj.bias.sub_(middle(model(x, gate_mode="greedy").gate_logits))
    else:  # one head per gate: centre gate i on its middle logit, in order (later gates see earlier decisions)
        for i, gate in enumerate(model.gates.gates):
            gate.head.bias[1] -= middle(model(x, gate_mode="greedy").gate_logits[:, i])
    out = model(x, gate_mode="greedy")
    assert ((out.actions.sum(0) > 0) & (out.actions.sum(0) < len(x))).any(), "test setup: no gate with mixed decisions"
    assert out.gate_logits.abs().min() > 1e-3, "test setup: a gate sits on the decision boundary"
    return model


@torch.no_grad()
def masked_reference(model: SkipNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Straightforward SkipNet: compute every block on every image, combine with the 0/1 gate."""
    blocks = [b for _, b in model.named_blocks()]
    h = blocks[0](model.stem(x))
    state = model.gates.initial_state(h)
    actions = []
    for i, block in enumerate(blocks[1:]):
        z, state = model.gates.step(i, h, state)
        g = (torch.sigmoid(z) > 0.5).float().view(-1, 1, 1, 1)
        h = g * block(h) + (1 - g) * block.shortcut(h)
        actions.append(g.flatten())
    return model.head(h), torch.stack(actions, 1)


def flops_batch1(model: nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


# --- structure and gates ------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", GATES)
def test_gate_shapes_in_every_mode(gate):
    model = make(gate, depth=20)
    assert model.method == "skipnet" and model.num_gates == 3 * 3 - 1
    assert model.gate_names[0] == "layer1.1" and "layer2.0" in model.gate_names and "layer1.0" not in model.gate_names
    x = varied_images(4)
    for mode in ("infer", "greedy", "st", "sample"):
        out = model(x, gate_mode=mode)
        assert out.logits.shape == (4, 10)
        for t in (out.probs, out.actions, out.gate_logits):
            assert t.shape == (4, model.num_gates)
        assert ((out.probs >= 0) & (out.probs <= 1)).all()  # may round to 0 or 1; log-probs use gate_logits
        assert set(out.actions.unique().tolist()) <= {0.0, 1.0}
        assert torch.allclose(torch.sigmoid(out.gate_logits), out.probs)
    assert isinstance(model(x), torch.Tensor)
    with pytest.raises(ValueError):
        model(x, gate_mode="soft")


def test_gate_banks_and_builders():
    assert {"skipnet_resnet8", "skipnet_resnet20", "skipnet_resnet32", "skipnet_resnet38"} <= set(
        __import__("models").list_models()
    )
    assert isinstance(make("rnn").gates, RNNGate)
    ff1, ff2 = make("ff1").gates, make("ff2").gates
    assert isinstance(ff1, FeedForwardGates) and ff1.kind == "ff1" and ff2.kind == "ff2"
    assert create_model("skipnet_resnet38").num_gates == 17
    with pytest.raises(ValueError):
        create_model("skipnet_resnet8", gate="lstm")


def test_lstm_step_is_an_lstm():
    cell = nn.LSTMCell(10, 10)
    x, h, c = torch.randn(3, 10), torch.randn(3, 10), torch.randn(3, 10)
    expected = cell(x, (h, c))
    got = lstm_step(x, (h, c), cell)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_rnn_gate_state_carries_over():
    """The same input to gate 1 gives a different logit after a different gate-0 input: the LSTM remembers."""
    gates = make("rnn").gates
    a, b = torch.randn(2, 16, 28, 28), torch.randn(2, 16, 28, 28)
    _, sa = gates.step(0, a, gates.initial_state(a))
    _, sb = gates.step(0, b, gates.initial_state(b))
    same = torch.ones(2, 32, 14, 14)  # input of layer3.0, the second gated block of a ResNet-8
    za, _ = gates.step(1, same, sa)
    zb, _ = gates.step(1, same, sb)
    assert not torch.allclose(za, zb)


# --- inference: deterministic, true skipping ---------------------------------------------------------


@pytest.mark.parametrize("gate", GATES)
def test_eval_is_deterministic_and_does_not_mutate(gate):
    model = make(gate)
    x = varied_images(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = model(x, gate_mode="infer"), model(x, gate_mode="infer")
    assert torch.equal(a.logits, b.logits) and torch.equal(a.actions, b.actions)
    assert torch.equal(model(x), a.logits)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("gate", GATES)
def test_true_skipping_equals_masked_reference(gate):
    x = varied_images(8)
    model = mix_decisions(make(gate, depth=20), x)
    out = model(x, gate_mode="infer")
    ref_logits, ref_actions = masked_reference(model, x)
    assert torch.equal(out.actions, ref_actions)
    assert 0 < out.actions.mean() < 1
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, model(x, gate_mode="greedy").logits, atol=1e-5, rtol=1e-5)
    # batch of one: the same decisions and outputs image by image
    for i in range(len(x)):
        one = model(x[i : i + 1], gate_mode="infer")
        assert torch.equal(one.actions[0], out.actions[i])
        torch.testing.assert_close(one.logits[0], out.logits[i], atol=1e-5, rtol=1e-5)


def test_straight_through_forward_is_the_hard_forward():
    x = varied_images(8)
    model = mix_decisions(make("rnn", depth=20), x)
    st, hard = model(x, gate_mode="st"), model(x, gate_mode="infer")
    assert torch.equal(st.actions, hard.actions)
    torch.testing.assert_close(st.logits, hard.logits, atol=1e-5, rtol=1e-5)


def expected_skip_all_macs(model: SkipNet, h: int, w: int) -> int:
    """Stem + first block + projection shortcuts + gates + fc, counted by hand (one MAC per multiply-add)."""
    c0, c1, c2 = model.widths
    macs = h * w * 1 * c0 * 9  # stem
    macs += 2 * h * w * c0 * c0 * 9  # layer1.0 always runs
    macs += (h // 2) * (w // 2) * c0 * c1  # layer2.0 skipped: 1x1 stride-2 shortcut
    macs += (h // 4) * (w // 4) * c1 * c2  # layer3.0 skipped: 1x1 stride-2 shortcut
    macs += c2 * 10  # fc
    for _, block in model.named_blocks()[1:]:  # RNN gate: embedding 1x1 conv on the pooled input, LSTM, linear
        macs += block.conv1.in_channels * 10 + 2 * 10 * 40 + 10
    return macs


def test_all_gates_off_runs_only_stem_shortcuts_gates_and_head():
    x = varied_images(1)
    model = force_gates(make("rnn", depth=20), -100.0)
    _, trace = traced_forward(model, x)
    assert all(not d["executed"] for d in trace.decisions[0])
    off = trace.macs[0].item()
    assert off == expected_skip_all_macs(model, 28, 28)
    assert off == flops_batch1(model, x) / 2
    force_gates(model, 100.0)
    _, trace_on = traced_forward(model, x)
    assert all(d["executed"] for d in trace_on.decisions[0])
    on = trace_on.macs[0].item()
    gate_macs = sum(b.conv1.in_channels * 10 + 810 for _, b in model.named_blocks()[1:])
    assert on == count_macs(model.dense_counterpart(), x) + gate_macs
    assert off < 0.2 * on


@pytest.mark.parametrize("gate", GATES)
def test_flop_counter_agrees_with_trace_per_image(gate):
    x = varied_images(8)
    model = mix_decisions(make(gate, depth=20), x)
    logits, trace = traced_forward(model, x)
    assert len({tuple(d["executed"] for d in ds) for ds in trace.decisions}) > 1, "want images with different paths"
    for i in range(len(x)):
        flops = flops_batch1(model, x[i : i + 1])
        _, one = traced_forward(model, x[i : i + 1])
        assert one.decisions[0] == [
            {**d, "probability": pytest.approx(d["probability"], abs=1e-5)} for d in trace.decisions[i]
        ]
        assert one.macs[0].item() == pytest.approx(flops / 2, rel=1e-9)
        assert trace.macs[i].item() == pytest.approx(flops / 2, rel=1e-2)


def test_trace_decisions():
    x = varied_images(4)
    model = mix_decisions(make("rnn", depth=20), x)
    out = model(x, gate_mode="infer")
    _, trace = traced_forward(model, x)
    for i, decisions in enumerate(trace.decisions):
        assert [d["layer"] for d in decisions] == list(model.gate_names)
        for j, d in enumerate(decisions):
            assert d["kind"] == "skip"
            assert isinstance(d["executed"], bool) and isinstance(d["probability"], float)
            assert d["executed"] == bool(out.actions[i, j]) == (d["probability"] > 0.5)
            assert d["probability"] == pytest.approx(out.probs[i, j].item())


def test_dense_counterpart_is_the_all_on_network():
    x = varied_images(4)
    model = force_gates(make("ff2", depth=20), 100.0)
    dense = model.dense_counterpart()
    assert type(dense) is ResNet and not dense.training
    torch.testing.assert_close(dense(x), model(x), atol=1e-5, rtol=1e-5)
    assert full_macs(model, (1, 28, 28)) == count_macs(dense, x[:1])


# --- training -----------------------------------------------------------------------------------------


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def gate_grads(model: SkipNet) -> float:
    return sum(p.grad.abs().sum().item() for p in model.gates.parameters() if p.grad is not None)


@pytest.mark.parametrize("gate", GATES)
def test_supervised_pretrain_step_trains_gates_straight_through(gate):
    model = make(gate).train()
    x, y = varied_images(8), torch.arange(8) % 10
    stage = SupervisedPretrainStage(epochs=1, lr=0.1)
    out = stage.training_step(model, x, y)
    assert torch.isfinite(out.loss) and out.logits.shape == (8, 10)
    out.loss.backward()
    assert gate_grads(model) > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("gate", GATES)
def test_hybrid_rl_step_trains_gates_and_keeps_batchnorm_statistics(gate):
    # gates near p = 0.5, so sampled paths differ from the greedy baseline (where they agree the advantage is 0)
    model = force_gates(make(gate), 0.0).train()
    torch.manual_seed(0)
    x, y = varied_images(8), torch.arange(8) % 10
    stage = HybridRLStage(epochs=1, lr=1e-3, alpha=0.5)
    optimizer = stage.optimizer(model)
    before, weights = bn_buffers(model), [p.clone() for p in model.parameters()]
    out = stage.training_step(model, x, y)
    assert torch.isfinite(out.loss)
    optimizer.zero_grad()
    out.loss.backward()
    assert gate_grads(model) > 0
    optimizer.step()
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), f"{k} changed in the RL stage"
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert any(not torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_gate_returns_and_log_probs():
    actions = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    ce = torch.tensor([2.0])
    # alpha / G = 0.1 per skipped gate; return of gate i = skips from i on * 0.1 - beta * CE
    expected = torch.tensor([[0.3, 0.2, 0.2, 0.1]]) - 0.5 * 2.0
    torch.testing.assert_close(gate_returns(actions, ce, alpha=0.4, beta=0.5), expected)
    z = torch.tensor([[-3.0, 0.0, 2.0, 40.0]])
    a = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    expected_lp = torch.distributions.Bernoulli(logits=z).log_prob(a)
    torch.testing.assert_close(gate_log_probs(z, a), expected_lp)


def test_recipe_reads_options_from_args():
    plain = run_args(epochs=4, lr=0.1, weight_decay=5e-4)  # models.train's parser without SkipNet options
    sp, rl, ft = skipnet_recipe(plain)
    assert isinstance(sp, SupervisedPretrainStage) and (sp.epochs, sp.lr) == (4, 0.1)
    assert isinstance(rl, HybridRLStage) and rl.alpha == 0.05 and rl.beta == 1.0 and rl.epochs > 0
    assert isinstance(ft, PolicyFinetuneStage) and ft.epochs == 0, "the paper's recipe unless --ft-epochs is given"
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.1)
    add_options(parser, SkipNetOptions)
    args = run_args(
        **vars(
            parser.parse_args(
                [
                    "--alpha",
                    "0.2",
                    "--beta",
                    "0.5",
                    "--rl-epochs",
                    "7",
                    "--rl-lr",
                    "1e-3",
                    "--gate",
                    "ff1",
                    "--ft-epochs",
                    "2",
                    "--ft-lr",
                    "0.003",
                ]
            )
        )
    )
    _, rl, ft = skipnet_recipe(args)
    assert (rl.alpha, rl.beta, rl.epochs, rl.lr) == (0.2, 0.5, 7, 1e-3)
    assert (ft.epochs, ft.lr) == (2, 0.003)
    assert args.gate == "ff1"


def test_two_stage_loop_on_bundled_subset():
    """Both stages through a Trainer-like loop (a few batches), with an eval pass after each stage."""
    data, info = load_dataset("fashion-mnist-subset", "test")
    images, labels = data.__getitems__(list(range(64)))
    x_all, y_all = normalize(images, info.mean, info.std), labels
    torch.manual_seed(0)
    model = create_model("skipnet_resnet8", num_classes=10, in_chans=1)
    for stage in skipnet_recipe(run_args(epochs=1, lr=0.05, weight_decay=5e-4)):
        optimizer = stage.optimizer(model)
        for step in range(2):
            model.train()
            x, y = x_all[step * 16 : (step + 1) * 16], y_all[step * 16 : (step + 1) * 16]
            out = stage.training_step(model, x, y)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            assert torch.isfinite(out.loss)
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(x_all)).all()
    assert info == FASHION_MNIST


@pytest.mark.parametrize("gate", ("rnn", "ff1"))
def test_checkpoint_roundtrip(tmp_path, gate):
    x = varied_images(8)
    model = mix_decisions(make(gate, depth=20), x)
    meta = {
        "name": "t",
        "method": model.method,
        "dataset": "fashion-mnist",
        "classes": list(FASHION_MNIST.classes),
        "input_size": [1, 28, 28],
        "mean": [0.286],
        "std": [0.353],
        "metrics": {},
        "recipe": {},
    }
    save_checkpoint(tmp_path / "s.pt", model, meta)
    loaded = load_checkpoint(tmp_path / "s.pt", form="train")
    assert isinstance(loaded, SkipNet) and loaded.gate_kind == gate and not loaded.training
    a, b = model(x, gate_mode="infer"), loaded(x, gate_mode="infer")
    assert torch.equal(a.logits, b.logits) and torch.equal(a.actions, b.actions)
    state = torch.load(tmp_path / "s.pt", weights_only=True)["state_dict"]
    assert any(k.startswith("gates.") for k in state) and "layer2.0.shortcut.0.weight" in state


def test_backbone_keys_match_the_plain_resnet():
    """A trained baseline ResNet can initialize a SkipNet's backbone (same names, gates excepted)."""
    skip, plain = make("rnn", depth=20), create_model("resnet20", num_classes=10, in_chans=1)
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("gates.") for k in missing)


def test_rl_stage_gives_the_backbone_its_own_learning_rate():
    model = make("rnn")
    stage = HybridRLStage(epochs=1, lr=1e-3, backbone_lr=1e-5)
    optimizer = stage.optimizer(model)
    gate_ids = {id(p) for p in model.gates.parameters()}
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))
    assert all(lr_of[id(p)] == (1e-3 if id(p) in gate_ids else 1e-5) for p in model.parameters())
    assert {g["lr"] for g in HybridRLStage(epochs=1, lr=1e-3).optimizer(model).param_groups} == {1e-3}


def test_policy_finetune_trains_the_backbone_under_the_frozen_policy():
    """Gates untouched (not even weight decay), decisions unchanged, and BatchNorm statistics learned from the
    samples that executed each block: a block no sample runs keeps its statistics (its projection shortcut,
    which a skipped downsampling block still runs, learns them)."""
    x, y = varied_images(8), torch.arange(8) % 10
    model = mix_decisions(make("ff1"), x)  # one head per gate, so one gate can be closed alone
    with torch.no_grad():  # the last gate off for every image
        model.gates.gates[-1].head.bias[1] = -50.0
    decisions = model(x, gate_mode="infer").actions
    assert decisions[:, -1].sum() == 0 and 0 < decisions.sum() < decisions.numel()
    stage = PolicyFinetuneStage(epochs=1, lr=0.05)
    optimizer = stage.optimizer(model)
    gates_before = {k: v.clone() for k, v in model.gates.state_dict().items()}
    bn_before = bn_buffers(model)
    model.train()
    out = stage.training_step(model, x, y)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    assert all(torch.equal(v, gates_before[k]) for k, v in model.gates.state_dict().items())
    assert torch.equal(model.eval()(x, gate_mode="infer").actions, decisions)
    last = model.gate_names[-1]
    changed = {k.rsplit(".", 2)[0] for k, v in bn_buffers(model).items() if not torch.equal(v, bn_before[k])}
    assert last not in changed and last + ".shortcut" in changed and "stem" in changed, changed


def test_anchored_finetune_pulls_drifted_gates_back_to_the_policy_it_started_with():
    """With ``anchor_weight`` the gates train towards the decisions of the model as the stage found it; the
    frozen copy survives ``--resume`` through the stage state, and a stage without it keeps the gates frozen."""
    x, y = varied_images(8), torch.arange(8) % 10
    model = mix_decisions(make("ff1"), x)
    stage = PolicyFinetuneStage(epochs=1, lr=0.002, anchor_weight=5.0)
    stage.on_stage_start(SimpleNamespace(model=model))
    reference = model(x, gate_mode="infer").actions
    with torch.no_grad():  # the backbone moved on and the gates drifted open
        for gate in model.gates.gates:
            gate.head.bias[1] += 1.0

    def disagreements():
        return (model.eval()(x, gate_mode="infer").actions != reference).sum().item()

    drifted = disagreements()
    assert drifted > 0
    optimizer = stage.optimizer(model)
    assert {id(p) for p in model.gates.parameters()} <= {id(p) for g in optimizer.param_groups for p in g["params"]}
    for _ in range(10):
        model.train()
        out = stage.training_step(model, x, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert disagreements() == 0
    resumed = PolicyFinetuneStage(epochs=1, lr=0.05, anchor_weight=5.0)
    resumed.load_state_dict(stage.state_dict())
    assert torch.equal(resumed.anchor.of(model)(x, gate_mode="infer").actions, reference)
    assert PolicyFinetuneStage(epochs=1, lr=0.05).state_dict() == {}


def test_distillation_loss_is_the_scaled_kl_to_the_teacher():
    student, teacher = torch.randn(5, 10), torch.randn(5, 10)
    t = 4.0
    p = F.softmax(teacher / t, -1)
    want = (p * (p.log() - F.log_softmax(student / t, -1))).sum(-1).mean() * t * t
    assert torch.allclose(distillation_loss(student, teacher, t), want, atol=1e-6)
    assert distillation_loss(teacher, teacher).abs() < 1e-6


def test_distilled_finetune_moves_the_student_towards_a_frozen_teacher(tmp_path):
    """``--ft-teacher``: the loss mixes CE and the soft targets, the teacher never trains, and a teacher trained on
    another data set is refused before any training starts."""
    x, y = varied_images(8), torch.arange(8) % 10
    model = make("ff1")
    teacher = create_model("resnet8", num_classes=10, in_chans=1)
    randomize_batchnorm(teacher)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    stage = PolicyFinetuneStage(epochs=1, lr=0.05, teacher=teacher, distill_weight=0.75)
    optimizer = stage.optimizer(model)
    assert not {id(p) for p in teacher.parameters()} & {id(p) for g in optimizer.param_groups for p in g["params"]}
    target = teacher(x)

    def gap():
        return distillation_loss(model.eval()(x), target).item()

    before = gap()
    model.train()
    out = stage.training_step(model, x, y)
    want = 0.25 * F.cross_entropy(out.logits, y) + 0.75 * distillation_loss(out.logits, target)
    assert torch.allclose(out.loss, want, atol=1e-5)
    for _ in range(10):
        model.train()
        out = stage.training_step(model, x, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert gap() < 0.8 * before
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())

    meta = {
        "name": "teacher",
        "method": "baseline",
        "dataset": "mnist",
        "classes": [str(i) for i in range(10)],
        "input_size": [1, 28, 28],
        "mean": [0.5],
        "std": [0.5],
    }
    save_checkpoint(tmp_path / "teacher.pt", teacher, meta)
    args = run_args(epochs=0, lr=0.1, ft_epochs=1, ft_teacher=str(tmp_path / "teacher.pt"), ft_distill=0.5)
    assert isinstance(skipnet_recipe(run_args(**{**vars(args), "dataset": "mnist"}))[2].teacher, ResNet)
    with pytest.raises(CheckpointError, match="trained on 'mnist', not 'fashion-mnist'"):
        skipnet_recipe(run_args(**{**vars(args), "dataset": "fashion-mnist"}))
    with pytest.raises(ValueError, match=r"--ft-distill must be in \[0, 1\]"):
        PolicyFinetuneStage(epochs=1, lr=0.05, teacher=teacher, distill_weight=1.5)
