"""The model zoo: recipe files that rebuild every bundled checkpoint, their chains, pretrained models by name,
and the per-epoch metrics files (with the Training page that follows them)."""

import json
import shlex
import tomllib

import pytest
import tomli_w

from routescope.models import create_model, factory, list_models, recipe_files, train, zoo
from routescope.models.checkpoint import read_checkpoint

from helpers import REPO, chart_data, kill_training_at_epoch, page, plotly_values, train_tiny

PRETRAINED = REPO / "models" / "pretrained"
RECIPES = REPO / "recipes"
MANIFEST = json.loads((PRETRAINED / "manifest.json").read_text())
FINE_TUNED = "skipnet_resnet20_fmnist_a0.75_fta6kd"
# what a recipe leaves out on purpose (where and how a run goes, not what it trains): see
# recipe_files.ENVIRONMENT_OPTIONS
NOT_IN_RECIPES = {"no_progress"}


def recipe(name: str) -> dict:
    """The committed recipe file, read as plain TOML."""
    return tomllib.loads((RECIPES / f"{name}.toml").read_text())


def epochs_run(name: str) -> int:
    """Epochs the run that made NAME.pt really trained: its metrics file has one line per epoch."""
    return len((PRETRAINED / f"{name}.metrics.jsonl").read_text().splitlines())


def test_every_bundled_checkpoint_has_a_recipe():
    names = sorted(p.stem for p in PRETRAINED.glob("*.pt") if not p.name.endswith(".last.pt"))
    assert len(names) >= 39 and factory.bundled_names(PRETRAINED) == names == sorted(MANIFEST)
    assert [recipe_files.recipe_path(n) for n in names] == [RECIPES / f"{n}.toml" for n in names]
    assert not [n for n in names if not (RECIPES / f"{n}.toml").is_file()]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_recipe_gives_the_manifest_commands_arguments(name):
    words = shlex.split(MANIFEST[name]["command"])  # python -m models.train ... or torchrun ... -m models.train ...
    command_args = words[words.index("models.train") + 1 :]
    assert recipe_files.command_argv(MANIFEST[name]["command"]) == command_args
    original = vars(train.parse_args(command_args)[0])
    replayed = vars(train.parse_args(["--recipe", str(RECIPES / f"{name}.toml")])[0])
    assert {k: v for k, v in replayed.items() if k not in NOT_IN_RECIPES} == {
        k: v for k, v in original.items() if k not in NOT_IN_RECIPES
    }
    assert recipe_files.recipe_from_command(MANIFEST[name]["command"]) == recipe(name), (
        "the committed recipes are python -m models.zoo export's"
    )


def test_recipe_options_are_overridden_and_checkpoints_resolve_in_out(tmp_path):
    args, _ = train.parse_args(
        ["--recipe", str(recipe_files.recipe_path(FINE_TUNED)), "--out", str(tmp_path), "--ft-lr", "0.1"]
    )
    assert args.ft_lr == 0.1 and args.ft_epochs == 6 and args.name == FINE_TUNED and args.out == str(tmp_path)
    assert args.init_from == str(tmp_path / "skipnet_resnet20_fmnist_a0.75.pt")
    assert args.ft_teacher == str(tmp_path / "resnet20_fmnist.pt")


def test_chain_of_a_fine_tuned_skipnet_resolves_in_order():
    expected = ["resnet20_fmnist", "skipnet_resnet20_fmnist_sp", "skipnet_resnet20_fmnist_a0.75", FINE_TUNED]
    assert recipe_files.chain(FINE_TUNED) == expected
    assert MANIFEST[FINE_TUNED]["chain"] == expected
    assert recipe_files.build_order(FINE_TUNED) == expected  # the distillation teacher is the chain's first link


def test_dsnet_grid4_sweep_is_one_chain():
    chain = MANIFEST["dsnet_resnet20_fmnist_grid4_hw6_long"]["chain"]
    assert chain[-4:] == [
        "dsnet_resnet20_fmnist_grid4",
        "dsnet_resnet20_fmnist_grid4_hw8",
        "dsnet_resnet20_fmnist_grid4_hw6",
        "dsnet_resnet20_fmnist_grid4_hw6_long",
    ]


def test_bundle_dry_run_skips_existing_links(tmp_path, capsys):
    (tmp_path / "resnet20_fmnist.pt").write_bytes(b"")
    (tmp_path / "skipnet_resnet20_fmnist_sp.pt").write_bytes(b"")
    assert zoo.main(["bundle", FINE_TUNED, "--out", str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["skip resnet20_fmnist", "skip skipnet_resnet20_fmnist_sp"]
    assert lines[2:] == [
        f"python -m models.train --recipe recipes/{n}.toml --out {tmp_path}"
        for n in ("skipnet_resnet20_fmnist_a0.75", FINE_TUNED)
    ]
    assert not (tmp_path / f"{FINE_TUNED}.pt").exists()


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_cumulative_epochs_and_time_add_up_over_the_chain(name):
    entry = MANIFEST[name]
    links = [name]  # the chain, followed by hand through the committed recipes' init_from
    while "init_from" in recipe(links[0]):
        links.insert(0, recipe(links[0])["init_from"])
    assert entry["chain"] == links and recipe_files.chain(name) == links
    own = [epochs_run(link) for link in links]  # what each run trained, from its metrics file (not the recipes)
    assert recipe_files.run_epochs(recipe(name)) == own[-1]
    assert entry["cumulative_epochs"] == sum(own)
    assert entry["cumulative_wall_time_s"] == pytest.approx(
        sum(MANIFEST[link]["wall_time_s"] for link in links), abs=0.2
    )
    if len(links) > 1:
        parent = MANIFEST[links[-2]]
        assert entry["cumulative_epochs"] == parent["cumulative_epochs"] + own[-1]


def test_create_model_pretrained_by_checkpoint_name_and_by_arch():
    assert FINE_TUNED in list_models(pretrained=True) and "resnet20" not in list_models(pretrained=True)
    model = create_model(FINE_TUNED, pretrained=True)
    assert model.meta["name"] == FINE_TUNED and model.arch == "skipnet_resnet20" and not model.training
    best = max(
        (n for n in MANIFEST if MANIFEST[n]["command"].split("--model ")[1].split()[0] == "skipnet_resnet20"),
        key=lambda n: MANIFEST[n]["metrics"]["test_acc"],
    )
    assert create_model("skipnet_resnet20", pretrained=True).meta["name"] == best
    assert create_model("resnet8").arch == "resnet8"  # unchanged without pretrained


def test_unknown_pretrained_name_lists_the_bundled_ones():
    with pytest.raises(KeyError) as info:
        create_model("no_such_model", pretrained=True)
    assert FINE_TUNED in str(info.value) and "resnet20_fmnist" in str(info.value)
    with pytest.raises(KeyError, match="no bundled checkpoint of architecture 'resnet110'"):
        create_model("resnet110", pretrained=True)


def test_metrics_jsonl_per_epoch_appended_on_resume(fmnist_dir, tmp_path, monkeypatch):
    original = train.Trainer.train_epoch
    kill_training_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(fmnist_dir, tmp_path)
    path = tmp_path / "tiny.metrics.jsonl"
    first = path.read_text().splitlines()
    assert len(first) == 1 and json.loads(first[0])["global_epoch"] == 0
    monkeypatch.setattr(train.Trainer, "train_epoch", original)
    assert train_tiny(fmnist_dir, tmp_path, "--resume") == 0
    lines = path.read_text().splitlines()
    assert lines[0] == first[0] and len(lines) == 2
    assert [json.loads(line) for line in lines] == read_checkpoint(tmp_path / "tiny.pt")["meta"]["history"]
    entry = json.loads((tmp_path / "manifest.json").read_text())["tiny"]
    assert entry["chain"] == ["tiny"] and entry["cumulative_epochs"] == 2


def test_a_recipe_run_continues_a_chain(fmnist_dir, tmp_path):
    assert train_tiny(fmnist_dir, tmp_path) == 0
    recipe = {
        "name": "child",
        "model": "resnet8",
        "dataset": "fashion-mnist",
        "seed": 0,
        "epochs": 1,
        "batch_size": 32,
        "limit_batches": 2,
        "lr": 0.01,
        "init_from": "tiny",
    }
    (tmp_path / "child.toml").write_text(tomli_w.dumps(recipe))
    assert (
        train.main(
            [
                "--recipe",
                str(tmp_path / "child.toml"),
                "--out",
                str(tmp_path),
                "--data-dir",
                str(fmnist_dir),
                "--no-progress",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    child = manifest["child"]
    assert child["chain"] == ["tiny", "child"] and child["cumulative_epochs"] == 3
    assert child["cumulative_wall_time_s"] == pytest.approx(
        manifest["tiny"]["wall_time_s"] + child["wall_time_s"], abs=0.2
    )
    assert f"--init-from {tmp_path / 'tiny.pt'}" in child["command"] and "--recipe" not in child["command"]
    assert len((tmp_path / "child.metrics.jsonl").read_text().splitlines()) == 1


def test_tensorboard_without_the_package_is_a_clear_error(fmnist_dir, tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    assert train_tiny(fmnist_dir, tmp_path, "--tensorboard", str(tmp_path / "tb")) == 2
    assert "--tensorboard needs the tensorboard package" in capsys.readouterr().err


def test_bundled_metrics_files_are_the_checkpoints_history():
    for name in ("resnet20_fmnist", FINE_TUNED):
        rows = [json.loads(line) for line in (PRETRAINED / f"{name}.metrics.jsonl").read_text().splitlines()]
        assert rows == read_checkpoint(PRETRAINED / f"{name}.pt")["meta"]["history"]


def test_training_page_curves_of_a_bundled_run():
    at = page("training")
    assert not at.exception
    at.selectbox(key="training-file").set_value(f"models/pretrained/{FINE_TUNED}.metrics.jsonl").run()
    assert not at.exception and not at.error
    charts = chart_data(at)
    assert len(charts) == 3
    loss = charts[0]["data"]
    # the whole chain the fine-tuned model started from: dense ResNet, supervised pretraining, policy, fine-tuning
    chain = ["resnet20_fmnist", "skipnet_resnet20_fmnist_sp", "skipnet_resnet20_fmnist_a0.75", FINE_TUNED]
    assert [trace["name"].split(": ")[0] for trace in loss] == chain
    assert loss[-1]["name"] == f"{FINE_TUNED}: policy-finetune" and len(plotly_values(loss[-1]["x"])) == 6
    epochs = [x for trace in loss for x in plotly_values(trace["x"])]
    assert epochs == list(range(1, len(epochs) + 1)), "epochs counted over the whole chain, from 1"
    runs = [read_checkpoint(PRETRAINED / f"{run}.pt")["meta"]["history"] for run in chain]
    total_min = sum(run[-1]["elapsed_s"] for run in runs) / 60
    assert at.metric[2].value == f"{total_min:.1f} min", "the chain's training time, not the last run's"
    accuracy = charts[1]["data"]
    last_stage = [trace for trace in accuracy if trace["name"].startswith(f"{FINE_TUNED}: ")]
    assert len(last_stage) == 2 and all(len(plotly_values(trace["y"])) == 6 for trace in last_stage)  # train, test
    assert not at.text_input, "a metrics file is picked from the run folders, never typed (it would read any file)"
