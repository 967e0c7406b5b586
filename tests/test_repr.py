"""RePr: overlap math, global ranking, masking (weights, gradients, BN, momentum), orthogonal re-initialization
with its fallback, the schedule through a Trainer-free loop and through the real Trainer (resume included),
structure() and checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import run_args
from routescope.models.options import add_options
from routescope.models import train
from routescope.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from routescope.models.convnet import ConvNet
from routescope.models.cost import count_macs, full_macs
from routescope.models.data import load_dataset
from routescope.models.layers.filter_overlap import (
    filter_scores,
    null_space_directions,
    overlap_matrix,
    rank_scores,
    select_global,
)
from routescope.models.recipes.repr import RePrStage, RePrOptions, reinitialize_filters, repr_recipe
from routescope.models import create_model
from routescope.models.registry import get_recipe
from routescope.models.repr import BUFFER, FilterLayer, filter_layers, prunable_layers, repr_record
from helpers import kill_training_at_epoch


def unit(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(rows.reshape(rows.shape[0], -1).double(), dim=1)


class LoopTrainer:
    """The part of ``train.Trainer`` a stage sees: model, optimizer, test accuracy, history."""

    def __init__(self, model: nn.Module, stage: RePrStage) -> None:
        self.model, self.stage = model, stage
        self.optimizer = stage.optimizer(model)
        self.history: list[dict] = []
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)

    def test_accuracy(self) -> float:
        self.model.eval()
        with torch.no_grad():
            return float((self.model(self.x).argmax(1) == self.y).float().mean())

    def step(self) -> None:
        self.model.train()
        out = self.stage.training_step(self.model, self.x, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.stage.after_optimizer_step(self)

    def fit(self, steps: int = 2) -> None:
        self.stage.on_stage_start(self)
        for epoch in range(self.stage.epochs):
            for _ in range(steps):
                self.step()
            self.stage.on_epoch_end(self, epoch)
            self.history.append({"epoch": epoch, "test_acc": self.test_accuracy(), **self.stage.epoch_record()})


def small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("repr_resnet8", num_classes=10, in_chans=1)
    with torch.no_grad():  # trained-looking BN so every channel matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    return model


# --- the math ----------------------------------------------------------------------------------------------


def test_overlap_is_zero_for_orthogonal_and_one_for_identical_filters():
    orthogonal = torch.eye(8).reshape(8, 2, 2, 2) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)  # scale does not matter
    assert filter_scores(orthogonal).abs().max() < 1e-12
    same = torch.randn(1, 3, 3, 3).repeat(5, 1, 1, 1) * torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0]).view(5, 1, 1, 1)
    assert torch.allclose(filter_scores(same), torch.ones(5, dtype=torch.float64))
    w = torch.randn(6, 4, 3, 3)
    p = overlap_matrix(w)
    reference = torch.tensor(
        [
            [0.0 if i == j else abs(F.cosine_similarity(w[i].flatten(), w[j].flatten(), 0).item()) for j in range(6)]
            for i in range(6)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(p, reference, atol=1e-6) and torch.allclose(p, p.T)
    assert torch.allclose(filter_scores(w), reference.sum(1) / 5)  # mean over the F - 1 other filters
    w[2] = 0  # a dropped (zero) filter does not overlap with itself
    assert overlap_matrix(w)[2].abs().max() == 0


def test_rankings_norm_and_random():
    w = torch.randn(6, 4, 3, 3) * torch.arange(1.0, 7.0).view(6, 1, 1, 1)
    assert select_global({"a": rank_scores(w, "norm")}, 0.34) == {"a": [0, 1]}  # lowest norms go
    r1 = rank_scores(w, "random", torch.Generator().manual_seed(3))
    assert torch.equal(r1, rank_scores(w, "random", torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        rank_scores(w, "gradient")


def test_selection_is_global_and_never_empties_a_layer():
    scores = {"a": torch.tensor([0.9, 0.8, 0.7]), "b": torch.tensor([0.1, 0.95, 0.2, 0.3, 0.05])}
    assert select_global(scores, 0.375) == {"a": [0, 1], "b": [1]}  # top 3 of 8 overall, not 37.5% per layer
    assert select_global(scores, 0.75) == {"a": [0, 1], "b": [0, 1, 2, 3]}  # "a" keeps its lowest-scoring filter


def test_ranking_excludes_first_conv_and_overcomplete_shortcuts_and_is_global():
    model = small_resnet()
    names = [layer.name for layer in filter_layers(model)]
    prunable = [layer.name for layer in prunable_layers(model)]
    assert names[0] == "stem.0" and "stem.0" not in prunable
    assert not any("shortcut" in n for n in prunable) and "layer3.0.conv2" in prunable
    with torch.no_grad():  # make one layer very redundant: the global ranking must take its filters first
        w = model.layer3[0].conv1.weight
        w.copy_(w[:1] + 0.01 * torch.randn_like(w))
    stage = RePrStage(epochs=20, lr=0.1, prune=0.2)
    dropped = stage.prune(model, None, cycle=0, epoch=0)
    total = sum(layer.conv.out_channels for layer in prunable_layers(model))
    assert set(dropped) == set(prunable)
    assert sum(map(len, dropped.values())) == round(0.2 * total)
    assert len(dropped["layer3.0.conv1"]) == round(0.2 * total)  # all from the redundant layer
    assert all(not dropped[n] for n in prunable if n != "layer3.0.conv1")


# --- masking -----------------------------------------------------------------------------------------------


def test_masks_zero_weights_gradients_bn_and_momentum():
    model = small_resnet()
    stage = RePrStage(epochs=20, lr=0.05, prune=0.3)
    trainer = LoopTrainer(model, stage)
    trainer.step()  # momentum buffers exist and are non-zero
    layers = {layer.name: layer for layer in prunable_layers(model)}
    dropped = stage.prune(model, trainer.optimizer, cycle=0, epoch=0)
    name = max(dropped, key=lambda n: len(dropped[n]))
    rows = dropped[name]
    layer = layers[name]
    survivors = [i for i in range(layer.conv.out_channels) if i not in rows]

    def check_zero():
        for p in layer.params():
            assert p[rows].abs().max() == 0, "dropped filter revived"
            momentum = trainer.optimizer.state[p]["momentum_buffer"]
            assert momentum[rows].abs().max() == 0, "momentum not reset"

    check_zero()
    assert trainer.optimizer.state[layer.conv.weight]["momentum_buffer"][survivors].abs().max() > 0
    before = layer.conv.weight[survivors].clone()
    # gradients of the dropped rows are masked by the hooks (checked between backward and step)
    out = stage.training_step(model, trainer.x, trainer.y)
    trainer.optimizer.zero_grad()
    out.loss.backward()
    for p in layer.params():
        assert p.grad[rows].abs().max() == 0 and p.grad[survivors].abs().max() > 0
    trainer.optimizer.step()
    stage.after_optimizer_step(trainer)
    for _ in range(2):
        trainer.step()
    check_zero()
    assert not torch.equal(before, layer.conv.weight[survivors])  # the sub-network trains
    assert getattr(layer.conv, BUFFER)[rows].all() and not getattr(layer.conv, BUFFER)[survivors].any()


# --- re-initialization -------------------------------------------------------------------------------------


def test_reinitialized_filters_are_orthogonal_to_survivors_and_old_values():
    model = small_resnet()
    stage = RePrStage(epochs=20, lr=0.05, prune=0.3)
    trainer = LoopTrainer(model, stage)
    trainer.step()
    old = {layer.name: layer.conv.weight.detach().clone() for layer in prunable_layers(model)}
    dropped = stage.prune(model, trainer.optimizer, cycle=0, epoch=0)
    trainer.step()
    record = stage.reinitialize(model, trainer.optimizer, cycle=0, epoch=1)
    assert not stage.masks and not stage._handles and not record["warnings"]
    for layer in prunable_layers(model):
        rows = dropped[layer.name]
        if not rows:
            continue
        survivors = [i for i in range(layer.conv.out_channels) if i not in rows]
        w = layer.conv.weight.detach()
        new = unit(w[rows])
        assert (new @ unit(w[survivors]).T).abs().max() < 1e-5
        assert (new @ unit(old[layer.name][rows]).T).abs().max() < 1e-5
        assert torch.allclose(new @ new.T, torch.eye(len(rows), dtype=torch.float64), atol=1e-5)
        norms = w.reshape(len(w), -1).norm(dim=1)
        assert torch.allclose(norms[rows], norms[survivors].mean().expand(len(rows)), rtol=1e-4)
        assert layer.bn.bias[rows].abs().max() == 0 and layer.bn.weight[rows].min() > 0
        assert trainer.optimizer.state[layer.conv.weight]["momentum_buffer"][rows].abs().max() == 0
    assert set(record["overlap_after"]) == set(record["overlap_before"])
    # unmasked again: the re-initialized filters now get gradients
    name = next(n for n, r in dropped.items() if r)
    layer = next(layer for layer in prunable_layers(model) if layer.name == name)
    out = stage.training_step(model, trainer.x, trainer.y)
    trainer.optimizer.zero_grad()
    out.loss.backward()
    assert layer.conv.weight.grad[dropped[name]].abs().max() > 0


def test_null_space_fallback_when_dimension_is_too_small():
    conv = nn.Conv2d(2, 16, 3, bias=False)  # D = 18: 12 survivors + 4 old values leave 2 free directions
    layer = FilterLayer("conv", conv, nn.BatchNorm2d(16))
    rows = [1, 5, 9, 13]
    old = conv.weight.detach()[rows].clone()
    info = reinitialize_filters(layer, rows, old, torch.Generator().manual_seed(0))
    assert info == {"orthogonal": 2, "fallback": 2}
    survivors = [i for i in range(16) if i not in rows]
    first = unit(conv.weight.detach()[rows[:2]])
    assert (first @ unit(conv.weight.detach()[survivors]).T).abs().max() < 1e-5
    assert null_space_directions(torch.randn(18, 18, dtype=torch.float64), 3).shape == (0, 18)
    # through the stage: the record and Python's warnings say so
    model = ConvNet(10, 1, (4, 4, 36))  # conv3: 36 filters of dimension 4*3*3 = 36, no free direction left
    stage = RePrStage(epochs=20, lr=0.05, prune=0.5)
    dropped = stage.prune(model, None, cycle=0, epoch=0)
    assert dropped["conv3"]
    with pytest.warns(UserWarning, match="conv3"):
        record = stage.reinitialize(model, None, cycle=0, epoch=1)
    assert record["reinit"]["conv3"]["fallback"] == len(dropped["conv3"]) and record["warnings"]
    assert model.conv3.weight[dropped["conv3"]].abs().sum(dim=(1, 2, 3)).min() > 0


# --- schedule ----------------------------------------------------------------------------------------------


def test_schedule_phases_and_validation():
    stage = RePrStage(epochs=7, lr=0.1, s1=2, s2=1, cycles=2)
    phases = [stage.phase(e) for e in range(7)]
    assert phases == [
        ("full", 0, None),
        ("full", 0, "prune"),
        ("pruned", 0, "reinit"),
        ("full", 1, None),
        ("full", 1, "prune"),
        ("pruned", 1, "reinit"),
        ("final", None, None),
    ]
    with pytest.raises(ValueError, match="epochs"):
        RePrStage(epochs=6, lr=0.1, s1=2, s2=1, cycles=2)  # the last re-initialized filters would never train
    with pytest.raises(ValueError):
        RePrStage(epochs=20, lr=0.1, prune=1.5)
    with pytest.raises(ValueError):
        RePrStage(epochs=20, lr=0.1, ranking="taylor")


def test_recipe_reads_cli_options():
    parser = argparse.ArgumentParser()
    add_options(parser, RePrOptions)
    args = parser.parse_args(
        ["--repr-s1", "4", "--repr-s2", "1", "--repr-cycles", "3", "--repr-prune", "0.2", "--repr-ranking", "norm"]
    )
    args.epochs, args.lr, args.weight_decay, args.seed = 20, 0.1, 1e-4, 7
    assert get_recipe("repr") is repr_recipe
    (stage,) = repr_recipe(args)
    assert (stage.s1, stage.s2, stage.cycles, stage.fraction, stage.ranking, stage.epochs, stage.seed) == (
        4,
        1,
        3,
        0.2,
        "norm",
        20,
        7,
    )
    (default,) = repr_recipe(run_args(epochs=15, lr=0.1))  # options not in the parser: defaults
    assert (default.s1, default.s2, default.cycles) == (3, 2, 2)


def test_trainer_free_loop_records_every_cycle():
    torch.manual_seed(0)
    model = create_model("repr_convnet3", num_classes=10, in_chans=1)
    stage = RePrStage(epochs=5, lr=0.05, s1=1, s2=1, cycles=2, prune=0.25)
    loop = LoopTrainer(model, stage)
    loop.fit(steps=2)
    phases = [(row["repr_phase"], row.get("repr_event")) for row in loop.history]
    assert phases == [("full", "prune"), ("pruned", "reinit"), ("full", "prune"), ("pruned", "reinit"), ("final", None)]
    record = repr_record(loop.history)
    assert record["pruned_epochs"] == [1, 3] and len(record["cycles"]) == 2
    for cycle, rec in enumerate(record["cycles"]):
        assert rec["cycle"] == cycle and rec["pruned_epochs"] == [2 * cycle + 1]
        assert rec["n_dropped"] == round(0.25 * 64) and set(rec["dropped"]) <= {"conv2", "conv3"}
        assert len(rec["overlap_before"]["conv2"]) == 32 and len(rec["overlap_after"]["conv3"]) == 32
        assert 0 <= rec["test_acc_before_prune"] <= 1 and 0 <= rec["test_acc_before_reinit"] <= 1
    assert loop.history[1]["repr_cycle_record"] == record["cycles"][0]
    assert not stage.masks  # fully re-initialized at the end


# --- structure, cost, checkpoints --------------------------------------------------------------------------


def test_structure_and_checkpoint_roundtrip(tmp_path):
    model = small_resnet()
    stage = RePrStage(epochs=20, lr=0.05, prune=0.3)
    dropped = stage.prune(model, None, cycle=0, epoch=0)
    stage.reinitialize(model, None, cycle=0, epoch=1)
    structure = model.structure()
    by_layer = {entry["layer"]: entry for entry in structure}
    assert [e["layer"] for e in structure] == [layer.name for layer in filter_layers(model)]
    assert all(e["kind"] == "filters" for e in structure)
    assert by_layer["stem.0"]["prunable"] is False and by_layer["stem.0"]["dropped"] == []
    for name, rows in dropped.items():
        assert (
            by_layer[name]["dropped"] == rows
            and len(by_layer[name]["overlap"]) == model.get_submodule(name).out_channels
        )
    save_checkpoint(
        tmp_path / "repr.pt",
        model.eval(),
        {
            "name": "repr",
            "method": "repr",
            "dataset": "fashion-mnist",
            "classes": [str(i) for i in range(10)],
            "input_size": [1, 28, 28],
            "mean": [0.0],
            "std": [1.0],
            "metrics": {},
            "recipe": {},
        },
    )
    loaded = load_checkpoint(tmp_path / "repr.pt", form="train")  # strict=True inside
    assert type(loaded).__name__ == "RePrResNet" and loaded.method == "repr"
    assert loaded.structure() == structure
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert count_macs(loaded, x[:1]) == full_macs(loaded, (1, 28, 28))  # static: dense MACs


def test_convnet_models():
    base = create_model("convnet3", num_classes=10, in_chans=3)
    assert base.method == "baseline" and base.structure() == []
    assert get_recipe(base.method)  # standard training
    repr_net = create_model("repr_convnet3", num_classes=10, in_chans=3)
    assert repr_net.method == "repr" and [e["layer"] for e in repr_net.structure()] == ["conv1", "conv2", "conv3"]
    assert base(torch.randn(2, 3, 32, 32)).shape == (2, 10) and repr_net(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    assert base.fc.in_features == 32 * 4 * 4  # the paper's 32 x 4 x 4 map on CIFAR


# --- through the real Trainer ------------------------------------------------------------------------------


def run_trainer(fmnist_dir, out, *extra: str) -> train.Trainer:
    """What ``models.train.main`` does (its parser carries the RePr options)."""
    args, _ = train.parse_args(
        [
            "--model",
            "repr_resnet8",
            "--epochs",
            "4",
            "--batch-size",
            "32",
            "--limit-batches",
            "2",
            "--no-progress",
            "--lr",
            "0.05",
            "--repr-s1",
            "1",
            "--repr-s2",
            "2",
            "--repr-cycles",
            "1",
            "--data-dir",
            str(fmnist_dir),
            "--out",
            str(out),
            "--name",
            "tiny",
            *extra,
        ]
    )
    torch.manual_seed(args.seed)
    train_data, info = load_dataset(args.dataset, "train", args.data_dir)
    test_data, _ = load_dataset(args.dataset, "test", args.data_dir)
    model = create_model(args.model, num_classes=len(info.classes), in_chans=info.input_size[0])
    trainer = train.Trainer(model, get_recipe(model.method)(args), train_data, test_data, info, args)
    if args.resume:
        trainer.resume()
    trainer.fit()
    trainer.finish()
    return trainer


@pytest.mark.heavy
def test_trainer_run_killed_in_pruned_phase_resumes_to_the_same_weights(fmnist_dir, tmp_path, monkeypatch):
    full = run_trainer(fmnist_dir, tmp_path / "full")
    (record,) = full.stages[0].record
    assert record["pruned_epochs"] == [1, 2] and record["reinit_after_epoch"] == 2
    model = load_checkpoint(tmp_path / "full" / "tiny.pt", form="train")
    dropped = {e["layer"]: e["dropped"] for e in model.structure() if e["dropped"]}
    assert dropped == record["dropped"]

    original = train.Trainer.train_epoch
    kill_training_at_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_trainer(fmnist_dir, tmp_path / "killed")
    state = read_checkpoint(tmp_path / "killed" / "tiny.last.pt")["train_state"]
    assert state["position"] == [0, 2] and state["stage_state"]["masks"]  # killed while pruned, masks saved
    monkeypatch.setattr(train.Trainer, "train_epoch", original)
    resumed = run_trainer(fmnist_dir, tmp_path / "killed", "--resume")
    assert resumed.stages[0].record == full.stages[0].record
    a = read_checkpoint(tmp_path / "full" / "tiny.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "killed" / "tiny.pt")["state_dict"]
    for key, value in a.items():
        assert torch.allclose(value.float(), b[key].float(), atol=1e-5), key
