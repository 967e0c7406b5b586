"""The training engine: a run, a killed run resumed to the same result, DDP with torchrun, evaluation."""

import json
import os
import subprocess
import sys

import pytest
import torch

from routescope.models import train
from routescope.models.checkpoint import load_checkpoint, read_checkpoint
from routescope.models.evaluate import main as evaluate_main

from helpers import REPO, TRAIN_ARGS, kill_training_at_epoch, train_tiny


def test_train_writes_checkpoint_meta_and_manifest(fmnist_dir, tmp_path):
    assert train_tiny(fmnist_dir, tmp_path) == 0
    model = load_checkpoint(tmp_path / "tiny.pt")
    meta = model.meta
    assert meta["method"] == "baseline" and meta["dataset"] == "fashion-mnist" and meta["input_size"] == [1, 28, 28]
    assert len(meta["history"]) == 2 and {"train_loss", "test_acc", "stage"} <= set(meta["history"][0])
    assert 0 <= meta["metrics"]["test_acc"] <= 1 and meta["metrics"]["macs_mean"] == meta["metrics"]["macs_full"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())["tiny"]
    assert manifest["command"].startswith("python -m models.train --model resnet8") and manifest["seed"] == 0
    assert "train_state" not in read_checkpoint(tmp_path / "tiny.pt")
    assert "train_state" in read_checkpoint(tmp_path / "tiny.last.pt")


def test_killed_run_resumes_to_the_same_weights(fmnist_dir, tmp_path, monkeypatch):
    assert train_tiny(fmnist_dir, tmp_path / "full") == 0
    original = train.Trainer.train_epoch
    kill_training_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(fmnist_dir, tmp_path / "killed")
    assert not (tmp_path / "killed" / "tiny.pt").exists()
    assert read_checkpoint(tmp_path / "killed" / "tiny.last.pt")["train_state"]["position"] == [0, 1]
    monkeypatch.setattr(train.Trainer, "train_epoch", original)
    assert train_tiny(fmnist_dir, tmp_path / "killed", "--resume") == 0
    a = read_checkpoint(tmp_path / "full" / "tiny.pt")
    b = read_checkpoint(tmp_path / "killed" / "tiny.pt")
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    assert [h["train_loss"] for h in a["meta"]["history"]] == pytest.approx(
        [h["train_loss"] for h in b["meta"]["history"]], rel=1e-5
    )
    manifests = [
        json.loads((tmp_path / d / "manifest.json").read_text())["tiny"]["command"] for d in ("full", "killed")
    ]
    assert manifests[1] == manifests[0].replace("/full", "/killed"), "a resumed run records the command that makes it"


def test_an_option_of_another_method_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--model", "resnet20", "--alpha", "3"])  # --alpha is SkipNet's
    assert exit_info.value.code == 2 and "--alpha" in capsys.readouterr().err


def test_a_method_option_is_accepted_for_its_own_models():
    args, recipe = train.parse_args(["--model", "skipnet_resnet20", "--gate", "ff1"])
    assert recipe.method == "skipnet" and recipe.model_args(args) == {"gate": "ff1"}


def test_missing_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from routescope.models import data

    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    assert train.main([*TRAIN_ARGS, "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.heavy
def test_torchrun_ddp_on_cpu(fmnist_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "models.train",
        *TRAIN_ARGS,
        "--epochs",
        "1",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path),
        "--name",
        "ddp",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())["ddp"]
    assert manifest["world_size"] == 2
    assert load_checkpoint(tmp_path / "ddp.pt").meta["history"][0]["train_loss"] > 0


def test_evaluate_cli_writes_metrics(fmnist_dir, tmp_path, capsys):
    assert train_tiny(fmnist_dir, tmp_path) == 0
    capsys.readouterr()
    assert (
        evaluate_main(["--checkpoint", str(tmp_path / "tiny.pt"), "--data-dir", str(fmnist_dir), "--write", "--json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_test"] == 500
    assert load_checkpoint(tmp_path / "tiny.pt").meta["metrics"]["test_acc"] == printed["test_acc"]
    assert json.loads((tmp_path / "manifest.json").read_text())["tiny"]["metrics"] == printed
    assert evaluate_main(["--checkpoint", str(tmp_path / "tiny.pt"), "--dataset", "fashion-mnist-subset"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_a_recipe_file_is_checked_against_the_options_of_its_method(tmp_path):
    """Options are declared once (``models.options`` dataclasses): a recipe key no declaration has, or a value of the
    wrong type, is refused by name before anything trains."""
    from routescope.models import recipe_files
    from routescope.models.errors import UsageError

    good = tmp_path / "good.toml"
    good.write_text('model = "skipnet_resnet20"\nname = "x"\nalpha = 0.1\n')
    assert recipe_files.load_recipe(good)["alpha"] == 0.1
    for text, message in [
        ('model = "resnet20"\nalpha = 0.1\n', "unknown option 'alpha'"),
        ('model = "resnet20"\nepochs = "ten"\n', "option 'epochs' must be int"),
        ("epochs = 3\n", "names no model"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(UsageError, match=message):
            recipe_files.load_recipe(bad)


def test_every_method_declares_its_options_once():
    """The parser's flags of a method are exactly the fields of its options dataclass, with their defaults."""
    import dataclasses

    from routescope.models.options import build_parser
    from routescope.models.registry import _RECIPES

    for recipe in _RECIPES.values():
        if recipe.options is None:
            continue
        args = build_parser(recipe).parse_args(["--model", "x"])
        for field in dataclasses.fields(recipe.options):
            assert getattr(args, field.name) == field.default, (recipe.method, field.name)
