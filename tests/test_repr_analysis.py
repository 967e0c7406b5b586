"""RePr figures and the seeds table: the data behind each figure (pruned phases, dropped-filter grid, overlap
matrices, standard-trained counterpart, ranking comparison) from one tiny real RePr run, and the table's
groups and statistics from hand-made checkpoints with known accuracies."""

from __future__ import annotations

import copy
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

import routescope.analysis.methods.repr as fr
from routescope.analysis import experiments as experiments_cli
from routescope.analysis.core import runs as experiments
from routescope.analysis.core.figures import FIGURES, FigureContext, available_figures, figure_bytes
from routescope.analysis.methods.repr import (
    accuracy_curves,
    cycle_records,
    dropped_grid,
    mean_overlap,
    overlap_layers,
    overlap_matrices,
    pruned_spans,
    repr_ranking,
)
from routescope.models import train
from routescope.models.checkpoint import load_checkpoint, save_checkpoint
from routescope.models.layers.filter_overlap import filter_scores
from routescope.models import create_model
from routescope.models.repr import prunable_layers

REPR_FIGURES = ("repr_training_curves", "repr_filter_overlap", "repr_dropped_filters", "repr_ranking_comparison")


def meta_of(
    name: str, method: str, acc: float | None, seed: int | None = 0, history: list | None = None, **args
) -> dict:
    """A checkpoint meta as ``models.train`` writes it, with only what these tests read."""
    train_args = {"epochs": 5, **args} if seed is None else {"seed": seed, "epochs": 5, **args}
    return {
        "name": name,
        "method": method,
        "dataset": "fashion-mnist",
        "input_size": [1, 28, 28],
        "metrics": {} if acc is None else {"test_acc": acc},
        "recipe": {"args": train_args},
        "history": history or [],
    }


def save(path: Path, arch: str, meta: dict, **config) -> Path:
    save_checkpoint(path, create_model(arch, num_classes=10, in_chans=1, **config), meta)
    return path


def with_ranking(meta: dict, ranking: str, acc: float, seed: int, name: str) -> dict:
    """The meta of the same run as if it had used another ranking (records and args agree)."""
    meta = copy.deepcopy(meta)
    for record in cycle_records(meta["history"]):
        record["ranking"] = ranking
    meta["recipe"]["args"].update(repr_ranking=ranking, seed=seed)
    meta.update(name=name, metrics={"test_acc": acc})
    return meta


@pytest.fixture(scope="module")
def runs(fmnist_dir, tmp_path_factory) -> dict[str, Path]:
    """A real 5-epoch RePr ConvNet (2 cycles of S1 = S2 = 1, one batch per epoch) and a standard-trained twin."""
    out = tmp_path_factory.mktemp("repr_runs")
    assert (
        train.main(
            [
                "--model",
                "repr_convnet3",
                "--epochs",
                "5",
                "--batch-size",
                "32",
                "--limit-batches",
                "1",
                "--no-progress",
                "--repr-s1",
                "1",
                "--repr-s2",
                "1",
                "--repr-cycles",
                "2",
                "--data-dir",
                str(fmnist_dir),
                "--out",
                str(out),
                "--name",
                "repr_convnet3_fmnist",
            ]
        )
        == 0
    )
    history = [{"global_epoch": e, "train_acc": 0.5 + e / 20, "test_acc": 0.45 + e / 20} for e in range(5)]
    base = save(out / "standard_twin.pt", "convnet3", meta_of("standard_twin", "baseline", 0.8, history=history))
    return {"repr": out / "repr_convnet3_fmnist.pt", "baseline": base}


def context_of(*paths: Path) -> FigureContext:
    return FigureContext({p.stem: p for p in paths})


# --- (a) training curves -----------------------------------------------------------------------------------


def test_pruned_spans_merge_consecutive_pruned_epochs():
    phases = ["full", "full", "pruned", "pruned", "full", "full", "full", "pruned", "final"]
    history = [
        {"global_epoch": e, "train_acc": 0.1 * e, "test_acc": 0.05 * e, "repr_phase": p} for e, p in enumerate(phases)
    ]
    assert pruned_spans(history) == [(2, 4), (7, 8)]
    curves = accuracy_curves(history)
    assert curves["epoch"].tolist() == list(range(1, 10)) and curves["phase"].tolist() == phases
    assert pruned_spans([{"global_epoch": 0, "test_acc": 0.5}]) == []  # standard training: nothing shaded


def test_training_curves_shade_the_pruned_epochs_of_a_real_run(runs):
    history = load_checkpoint(runs["repr"]).meta["history"]
    assert [row["repr_phase"] for row in history] == ["full", "pruned", "full", "pruned", "final"]
    spans = pruned_spans(history)
    assert spans == [(e, e + 1) for e, row in enumerate(history) if row["repr_phase"] == "pruned"] == [(1, 2), (3, 4)]
    curves = accuracy_curves(history)
    assert curves["test_acc"].tolist() == [row["test_acc"] for row in history]
    assert curves["event"].tolist() == ["prune", "reinit", "prune", "reinit", None]
    assert curves["test_acc_before_event"].notna().tolist() == [True] * 4 + [False]

    figure = fr.training_curves_figure(context_of(runs["repr"], runs["baseline"]))
    ax = figure.axes[0]
    shaded = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
    assert shaded == spans
    labels = [line.get_label() for line in ax.get_lines()]
    assert any("standard" in label for label in labels) and len(labels) == 4  # RePr train/test + standard train/test
    alone = fr.training_curves_figure(context_of(runs["repr"]))
    assert len(alone.axes[0].get_lines()) == 2


# --- (b) overlap matrices ----------------------------------------------------------------------------------


def test_overlap_matrices_are_symmetric_per_layer_before_and_after(runs):
    context = context_of(runs["repr"], runs["baseline"])
    layers, columns = fr.overlap_panels(context, "repr_convnet3_fmnist")
    assert layers == ["conv1", "conv2", "conv3"] and len(columns) == 2
    models = [context.model("standard_twin"), context.model("repr_convnet3_fmnist")]
    for model, matrices in zip(models, columns.values()):
        for layer in layers:
            matrix = matrices[layer]
            assert matrix.shape == (32, 32) and np.allclose(matrix, matrix.T) and not np.diag(matrix).any()
            assert 0 <= matrix.min() and matrix.max() <= 1 + 1e-9
            weight = model.get_submodule(layer).weight
            assert mean_overlap(matrix) == pytest.approx(float(filter_scores(weight).mean()))
    figure = fr.filter_overlap_figure(context)
    panels = [ax for ax in figure.axes if ax.images and ax.get_title()]
    assert len(panels) == 6 and all("mean 0." in ax.get_title() for ax in panels)
    standard_conv2 = columns[next(iter(columns))]["conv2"]
    assert f"mean {mean_overlap(standard_conv2):.3f}" in panels[2].get_title()  # rows: layers, columns: standard, RePr
    assert np.array_equal(panels[2].images[0].get_array(), standard_conv2)
    alone = fr.filter_overlap_figure(context_of(runs["repr"]))
    assert len([ax for ax in alone.axes if ax.images and ax.get_title()]) == 3


def test_deep_nets_show_up_to_six_ranked_convs_spread_over_depth():
    resnet8 = create_model("repr_resnet8", num_classes=10, in_chans=1)
    ranked = [layer.name for layer in prunable_layers(resnet8)]
    assert overlap_layers(resnet8) == ranked and len(ranked) == 6  # 9 convs: no stem, no 1x1 shortcuts
    resnet20 = create_model("repr_resnet20", num_classes=10, in_chans=1)
    ranked = [layer.name for layer in prunable_layers(resnet20)]
    shown = overlap_layers(resnet20)
    assert len(shown) == 6 and shown[0] == ranked[0] and shown[-1] == ranked[-1] and set(shown) <= set(ranked)
    dense = overlap_matrices(create_model("resnet20", num_classes=10, in_chans=1), shown)  # same names in the plain net
    assert [m.shape[0] for m in dense.values()] == [resnet20.get_submodule(n).out_channels for n in shown]


def test_counterpart_is_found_by_architecture_not_by_name(runs, tmp_path):
    twin = save(tmp_path / "whatever.pt", "convnet3", meta_of("whatever", "baseline", 0.8, seed=3))
    same_seed = save(tmp_path / "repr_convnet3_s0.pt", "convnet3", meta_of("repr_convnet3_s0", "baseline", 0.8, seed=0))
    narrower = save(
        tmp_path / "convnet3_fmnist.pt", "convnet3", meta_of("convnet3_fmnist", "baseline", 0.8), widths=(8, 8, 8)
    )
    resnet = save(tmp_path / "resnet8.pt", "resnet8", meta_of("resnet8", "baseline", 0.8))
    assert fr.standard_counterpart(context_of(runs["repr"], narrower, resnet), "repr_convnet3_fmnist") is None
    assert (
        fr.standard_counterpart(context_of(runs["repr"], twin, narrower, resnet), "repr_convnet3_fmnist") == "whatever"
    )
    assert (
        fr.standard_counterpart(context_of(runs["repr"], twin, same_seed), "repr_convnet3_fmnist") == "repr_convnet3_s0"
    )


# --- (c) dropped filters -----------------------------------------------------------------------------------


def test_dropped_grid_matches_the_cycle_records(runs):
    cycles = cycle_records(load_checkpoint(runs["repr"]).meta["history"])
    assert [c["cycle"] for c in cycles] == [0, 1]
    grid = dropped_grid(cycles)
    assert list(grid) == ["conv2", "conv3"]  # conv1 is never ranked
    for layer, cells in grid.items():
        assert cells.shape == (2, 32)
        for c, record in enumerate(cycles):
            assert np.flatnonzero(cells[c]).tolist() == record["dropped"].get(layer, [])
    assert [int(sum(cells[c].sum() for cells in grid.values())) for c in range(2)] == [c["n_dropped"] for c in cycles]
    figure = fr.dropped_filters_figure(context_of(runs["repr"]))
    drawn = {ax.get_title().split(":")[0]: ax.images[0].get_array() for ax in figure.axes if ax.images}
    assert drawn.keys() == grid.keys() and all(np.array_equal(drawn[k], grid[k]) for k in grid)


def test_dropped_grid_of_hand_made_records():
    cycles = [
        {"dropped": {"b": [0, 2]}, "overlap_before": {"a": [0.1] * 4, "b": [0.2] * 3}},
        {"dropped": {"a": [3]}, "overlap_before": {"a": [0.1] * 4, "b": [0.2] * 3}},
    ]
    grid = dropped_grid(cycles)
    assert grid["a"].tolist() == [[False] * 4, [False, False, False, True]]
    assert grid["b"].tolist() == [[True, False, True], [False] * 3]
    assert dropped_grid([]) == {}


# --- (d) ranking criteria ----------------------------------------------------------------------------------


def test_ranking_is_read_from_the_records_then_the_args():
    record = {"repr_cycle_record": {"ranking": "norm", "dropped": {}}}
    assert (
        repr_ranking({"method": "repr", "history": [record], "recipe": {"args": {"repr_ranking": "random"}}}) == "norm"
    )
    assert repr_ranking({"method": "repr", "history": [], "recipe": {"args": {"repr_ranking": "random"}}}) == "random"
    assert repr_ranking({"method": "repr"}) == "orthogonality"  # the recipe's default
    assert repr_ranking({"method": "baseline", "recipe": {"args": {"repr_ranking": "norm"}}}) is None


def test_ranking_comparison_groups_rankings_against_standard_training(runs, tmp_path):
    real = load_checkpoint(runs["repr"]).meta
    made = {f"{r}_{s}": (r, acc, s) for r, acc, s in [("norm", 0.70, 1), ("norm", 0.74, 2), ("random", 0.60, 1)]}
    paths = [
        save(tmp_path / f"{name}.pt", "repr_convnet3", with_ranking(real, r, acc, s, name))
        for name, (r, acc, s) in made.items()
    ]
    other = save(tmp_path / "resnet8.pt", "resnet8", meta_of("resnet8", "baseline", 0.99))  # another backbone: left out
    context = context_of(runs["repr"], runs["baseline"], other, *paths)
    runs_table, table = fr.ranking_comparison(context)
    labels = [fr.group_label(g) for _, g in table.iterrows()]
    assert labels == ["convnet3 standard", "convnet3 RePr norm", "convnet3 RePr orthogonality", "convnet3 RePr random"]
    assert table["test_acc_mean"].tolist() == pytest.approx([0.8, 0.72, real["metrics"]["test_acc"], 0.60])
    assert table["n_seeds"].tolist() == [1, 2, 1, 1]
    assert sorted(experiments.group_members(runs_table, table.iloc[1])["test_acc"]) == [0.70, 0.74]
    assert experiments.group_members(runs_table, table.iloc[0])["name"].tolist() == ["standard_twin"]  # ranking None
    figure = fr.ranking_comparison_figure(context)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == labels
    single = fr.ranking_comparison(context_of(runs["repr"]))[1]
    assert len(single) == 1 and single["ranking"].tolist() == ["orthogonality"]


def test_every_figure_draws_from_one_repr_checkpoint(runs, tmp_path):
    bare = save(tmp_path / "bare.pt", "repr_convnet3", meta_of("bare", "repr", None))  # no history, no metrics
    for paths in ([runs["repr"]], [bare]):
        context = context_of(*paths)
        assert {spec.name for spec in available_figures(context, "repr")} >= set(REPR_FIGURES)
        for name in REPR_FIGURES:
            figure = FIGURES[name].make(context)
            assert figure.axes and figure_bytes(figure, "png")[:4] == b"\x89PNG", name


# --- the seeds table ---------------------------------------------------------------------------------------


@pytest.fixture
def experiment_dirs(tmp_path) -> tuple[Path, Path]:
    """experiments/: seeds 1, 2 of both methods (names that lie), a norm run, an unfinished run, a manifest-only
    seed; pretrained/: the seed-0 runs."""
    exp, pre = tmp_path / "experiments", tmp_path / "pretrained"
    save(exp / "convnet3_s1.pt", "convnet3", meta_of("convnet3_s1", "baseline", 0.90, seed=1))
    save(exp / "repr_convnet3_s2.pt", "convnet3", meta_of("repr_convnet3_s2", "baseline", 0.92, seed=2))  # a baseline
    save(exp / "repr_convnet3_s1.pt", "repr_convnet3", meta_of("repr_convnet3_s1", "repr", 0.91, seed=1))
    save(exp / "r2.pt", "repr_convnet3", meta_of("r2", "repr", 0.95, seed=None))  # seed only in the manifest
    (exp / "manifest.json").write_text(json.dumps({"r2": {"file": "r2.pt", "seed": 2}}))
    save(
        exp / "norm_s1.pt",
        "repr_convnet3",
        meta_of("norm_s1", "repr", 0.89, seed=1, repr_ranking="norm", epochs=9, no_augment=True),
    )  # an option norm_s2 (older) does not record
    save(exp / "norm_s2.pt", "repr_convnet3", meta_of("norm_s2", "repr", 0.87, seed=2, repr_ranking="norm"))
    save(
        exp / "convnet3_s3.last.pt", "convnet3", meta_of("convnet3_s3", "baseline", None, seed=3)
    )  # resumable: ignored
    save(pre / "convnet3_fmnist.pt", "convnet3", meta_of("convnet3_fmnist", "baseline", 0.94, seed=0))
    save(pre / "repr_convnet3_fmnist.pt", "repr_convnet3", meta_of("repr_convnet3_fmnist", "repr", 0.93, seed=0))
    return exp, pre


def test_seeds_table_groups_by_arch_method_and_ranking(experiment_dirs):
    exp, pre = experiment_dirs
    table = experiments.seeds_table(
        [exp, pre / "convnet3_fmnist.pt", pre / "repr_convnet3_fmnist.pt", exp / "norm_s1.pt"]
    )
    assert table[["arch", "method", "ranking"]].values.tolist() == [
        ["convnet3", "baseline", None],
        ["repr_convnet3", "repr", "norm"],
        ["repr_convnet3", "repr", "orthogonality"],
    ]
    expected = {"baseline": [0.94, 0.90, 0.92], "norm": [0.89, 0.87], "orthogonality": [0.93, 0.91, 0.95]}
    for (_, row), accs in zip(table.iterrows(), expected.values()):
        assert row["n_seeds"] == len(accs) and row["dataset"] == "fashion-mnist"
        assert row["test_acc_mean"] == pytest.approx(statistics.mean(accs))
        assert row["test_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert (row["test_acc_min"], row["test_acc_max"]) == (min(accs), max(accs))
    assert table["seeds"].tolist() == [[0, 1, 2], [1, 2], [0, 1, 2]] and table["n_runs"].tolist() == [3, 2, 3]
    assert table["varies"].tolist() == ["", "epochs", ""]  # the two norm runs are not replicates
    single = experiments.seeds_table([pre / "convnet3_fmnist.pt"])
    assert single["n_seeds"].tolist() == [1] and np.isnan(single["test_acc_std"][0])


def test_runs_that_share_a_seed_are_counted_as_runs_not_seeds(experiment_dirs):
    exp, pre = experiment_dirs
    copy_of_seed0 = exp / "copy" / "bundled.pt"
    copy_of_seed0.parent.mkdir()
    shutil.copy(pre / "convnet3_fmnist.pt", copy_of_seed0)
    (row,) = experiments.seeds_table([pre / "convnet3_fmnist.pt", copy_of_seed0]).to_dict("records")
    assert (row["n_runs"], row["n_seeds"], row["seeds"], row["test_acc_std"]) == (2, 1, [0], 0.0)


def test_cli_prints_text_markdown_and_json(experiment_dirs, capsys):
    exp, pre = experiment_dirs
    assert experiments_cli.main([str(exp), str(pre), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["arch"], r["ranking"], r["n_seeds"]) for r in records] == [
        ("convnet3", None, 3),
        ("repr_convnet3", "norm", 2),
        ("repr_convnet3", "orthogonality", 3),
    ]
    assert records[0]["test_acc_mean"] == pytest.approx(0.92)
    assert experiments_cli.main([str(pre / "convnet3_fmnist.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["test_acc_std"] is None  # one seed: no spread
    assert experiments_cli.main([str(exp), str(pre), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].startswith("| dataset | arch | method | ranking | n_runs | n_seeds | seeds | acc_mean (%)")
        and len(lines) == 5
    )
    assert "| 92.00 |" in lines[2] and "| 0,1,2 |" in lines[2]
    assert experiments_cli.main([str(exp)]) == 0
    assert "orthogonality" in capsys.readouterr().out


def test_cli_reports_bad_files_and_keeps_the_others(experiment_dirs, capsys, tmp_path):
    exp, _ = experiment_dirs
    (exp / "broken.pt").write_bytes(b"not a checkpoint")
    assert experiments_cli.main([str(exp)]) == 1
    out, err = capsys.readouterr()
    assert "broken.pt" in err and "convnet3" in out
    assert experiments_cli.main([str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert experiments_cli.main([str(empty)]) == 2
    with pytest.raises(Exception, match="broken.pt"):
        experiments.seeds_table([exp])


def test_every_checkpoint_is_counted_once(experiment_dirs):
    exp, _ = experiment_dirs
    runs = experiments.collect_runs([exp, exp / "convnet3_s1.pt", exp])
    assert sorted(runs["name"]) == ["convnet3_s1", "norm_s1", "norm_s2", "r2", "repr_convnet3_s1", "repr_convnet3_s2"]
    assert dict(zip(runs["name"], runs["seed"]))["r2"] == 2
    assert torch.isfinite(torch.tensor(runs["test_acc"].tolist())).all()
