"""analysis/: dataset tables, SkipNet statistics, attributions, charts, figures, bench and results on tiny models."""

import json

import numpy as np
import pytest
import torch

from routescope.analysis import figures, results
from tools import bench
from routescope.analysis.core.catalog import PRETRAINED
from routescope.analysis.core.attributions import explain_decision, explain_prediction
from routescope.analysis.core.charts import top_classes
from routescope.analysis.core.kinds import attribution_targets, inspect_charts, kind_views
from routescope.analysis.core.table import dataset_table, easy_and_hard, load_test_images, per_class_cost
from routescope.analysis.methods.dsnet import width_distribution
from routescope.analysis.core.trace import trace_batch
from routescope.analysis.core.perturb import rescale
from routescope.analysis.methods.skipnet import blocks_executed, skip_ratios
from routescope.models import create_model
from routescope.models.checkpoint import save_checkpoint
from routescope.models.data import FASHION_MNIST


def with_meta(model: torch.nn.Module, name: str) -> torch.nn.Module:
    model.meta = {
        "name": name,
        "method": model.method,
        "dataset": "fashion-mnist",
        "classes": list(FASHION_MNIST.classes),
        "input_size": [1, 28, 28],
        "mean": [0.286],
        "std": [0.353],
        "dark_background": True,
        "metrics": {"test_acc": 0.5, "macs_mean": 1e6},
        "recipe": {"args": {"alpha": 0.1}},
    }
    return model.eval()


@pytest.fixture(scope="module")
def skipnet():
    torch.manual_seed(0)
    model = with_meta(create_model("skipnet_resnet8", in_chans=1), "tiny_skipnet")
    with torch.no_grad():  # mixed decisions: close some gates
        model.gates.proj.bias.fill_(0.0)
    return model


@pytest.fixture(scope="module")
def images():
    return load_test_images("fashion-mnist-subset", limit=60)


def test_dataset_table_and_skip_statistics(skipnet, images):
    table = dataset_table(skipnet, *images)
    assert len(table) == 60 and {"class", "correct", "macs", "brightness", "layer2.0/executed"} <= set(table.columns)
    ratios = skip_ratios(table)
    assert list(ratios.index) == list(skipnet.gate_names) and ((ratios >= 0) & (ratios <= 1)).all()
    executed = blocks_executed(table)
    assert executed.between(0, skipnet.num_gates).all()
    easy, hard = easy_and_hard(table, 5)
    assert easy["macs"].max() <= hard["macs"].min()
    cost = per_class_cost(table)
    assert list(cost.index) == list(FASHION_MNIST.classes) and cost["images"].sum() == 60
    assert width_distribution(table).empty


def test_rescale_zooms_content():
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[..., 10:18, 10:18] = 255
    assert (rescale(image, 0.5) > 0).sum() < (image > 0).sum() < (rescale(image, 1.5) > 0).sum()
    assert torch.equal(rescale(image, 1.0), image)


def test_attributions_of_prediction_and_gate(skipnet, images):
    from routescope.models.data import normalize

    x = normalize(images[0][:1], skipnet.meta["mean"], skipnet.meta["std"])
    for method in ("integrated_gradients", "gradcam"):
        attribution = explain_prediction(skipnet, x, 3, method)
        assert attribution.heatmap.shape == (28, 28) and np.isfinite(attribution.heatmap).all()
    gate = explain_decision(skipnet, x, "layer2.0", attribution_targets({"kind": "skip", "layer": "layer2.0"})[0])
    assert gate.heatmap.shape == (28, 28) and gate.delta is not None and gate.delta < 0.05
    assert np.abs(gate.heatmap).sum() > 0
    assert all(p.grad is None for p in skipnet.parameters()), "attributions must not touch the shared model"


def test_charts_for_every_kind(skipnet, images):
    from routescope.models.data import normalize

    trace = trace_batch(skipnet, normalize(images[0][:1], skipnet.meta["mean"], skipnet.meta["std"]), ["x"])[0]
    ((kind, strip),) = inspect_charts(trace["decisions"])
    assert kind == "skip" and list(strip.data[0].x) == list(skipnet.gate_names)
    assert len(top_classes(trace).data[0].y) == 5
    width = [
        {
            "layer": "layer3",
            "kind": "width",
            "width": 0.5,
            "channels": 32,
            "max_channels": 64,
            "probabilities": [0.1, 0.6, 0.2, 0.1],
        }
    ]
    assert len(inspect_charts(width)) == 2
    routing = [{"layer": "layer3.0", "kind": "routing", "weights": [0.9, 0.1, 0.4, 0.2]}]
    assert np.asarray(inspect_charts(routing)[0][1].data[0].z).shape == (1, 4)
    groups = {"layer": "l", "kind": "groups", "groups": 2, "group_of_channel": [0, 1, 0, 1]}
    assert np.asarray(inspect_charts([groups])[0][1].data[0].z).tolist()[0] == [1, 0, 1, 0]
    filters = {"layer": "l", "kind": "filters", "overlap": [0.1, 0.3], "dropped": [1]}
    bars = inspect_charts([filters])[0][1].data[0]
    assert bars.marker.color[1] != bars.marker.color[0]
    exits = [
        {"layer": "layer1.1", "kind": "exit", "confidence": 0.4, "exited": False},
        {"layer": "layer2.0", "kind": "exit", "confidence": 0.95, "exited": True},
    ]
    bars = inspect_charts(exits)[0][1].data[0]
    assert list(bars.x) == ["layer1.1", "layer2.0"] and bars.marker.color[0] != bars.marker.color[1]


def test_every_declared_kind_has_a_view():
    """A method that declares a decision kind in models/ also says, in analysis/methods, how to show it."""
    from routescope.models.decisions import decision_kinds

    views = kind_views()
    for name, kind in decision_kinds().items():
        assert name in views, f"no KindView for {name!r}"
        if kind.per == "image":
            assert views[name].columns is not None and views[name].inspect is not None, name


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, skipnet):
    folder = tmp_path_factory.mktemp("models")
    save_checkpoint(folder / "tiny_skipnet.pt", skipnet, skipnet.meta)
    baseline = with_meta(create_model("resnet8", in_chans=1), "tiny_resnet")
    save_checkpoint(folder / "tiny_resnet.pt", baseline, baseline.meta)
    return folder


@pytest.mark.heavy
def test_figures_cli_writes_pdf_png_and_captions(checkpoint_dir, tmp_path):
    args = [
        "--out",
        str(tmp_path),
        "--checkpoint",
        str(checkpoint_dir / "tiny_skipnet.pt"),
        "--checkpoint",
        str(checkpoint_dir / "tiny_resnet.pt"),
        "--dataset",
        "fashion-mnist-subset",
    ]
    assert figures.main(args) == 0
    names = {p.stem for p in tmp_path.glob("*.pdf")}
    assert {
        "overview_accuracy_vs_macs",
        "skipnet_skip_ratio",
        "skipnet_easy_vs_hard",
        "skipnet_blocks_per_class",
        "skipnet_input_scale",
        "skipnet_alpha_sweep",
    } <= names
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.txt").read_text().strip().endswith("Test images: fashion-mnist-subset (500).")
        assert b"/FontFile2" in (tmp_path / f"{name}.pdf").read_bytes(), "TrueType fonts must be embedded"
    only = tmp_path / "only"
    assert (
        figures.main(
            [
                "--out",
                str(only),
                "--only",
                "baseline",
                "--checkpoint",
                str(checkpoint_dir / "tiny_resnet.pt"),
                "--dataset",
                "fashion-mnist-subset",
            ]
        )
        == 0
    )
    assert {p.stem for p in only.glob("*.pdf")} == {"overview_accuracy_vs_macs"}


def test_bench_prints_ratios(checkpoint_dir, capsys):
    args = [
        "--checkpoint",
        str(checkpoint_dir / "tiny_skipnet.pt"),
        "--images",
        "4",
        "--batch",
        "8",
        "--rounds",
        "1",
        "--json",
    ]
    assert bench.main(args) == 0
    dense, masked = json.loads(capsys.readouterr().out)
    assert dense["vs"] == bench.DENSE and masked["vs"].startswith(
        "same gates, masked"
    )  # what a user runs instead first
    row = masked
    assert 0 < row["mac_ratio"] <= 1.0 and row["latency_ms"] > 0 and row["throughput_ratio"] > 0
    assert row["image_size"] == 28
    assert bench.main(args + ["--image-size", "56"]) == 0
    _, big = json.loads(capsys.readouterr().out)
    assert (
        big["image_size"] == 56 and 3.5 < big["macs_ref"] / row["macs_ref"] <= 4
    )  # each conv sees 4x the pixels, the fc not


def test_results_table_from_manifest(tmp_path):
    manifest = {
        "m": {
            "metrics": {
                "test_acc": 0.9,
                "n_test": 10,
                "macs_mean": 2e6,
                "mac_ratio": 0.5,
                "macs_min": 1e6,
                "macs_max": 3e6,
                "params": 5,
                "variants": {"static width 0.5": {"test_acc": 0.8, "macs_mean": 1e6, "mac_ratio": 0.25}},
            },
            "wall_time_s": 120,
            "machine": "x",
            "date": "d",
            "command": "python -m models.train --model m",
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    table = results.results_table(tmp_path / "manifest.json")
    assert "| `m` | 90.00% (10 images) | 2.00 M | 50% |" in table
    assert "`m`, static width 0.5 | 80.00% | 1.00 M | 25% |" in table
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- generated:results -->\nold\n<!-- /generated:results -->\n"
        "<!-- generated:variants:m -->\n<!-- /generated:variants:m -->\noutro\n"
    )
    assert results.stale_blocks([readme], tmp_path) == ["README.md: results", "README.md: variants:m"]
    assert results.update_documents([readme], tmp_path) == [readme]
    text = readme.read_text()
    assert (
        "old" not in text and "| `m` |" in text and "| static width 0.5 | 80.00% |" in text and text.endswith("outro\n")
    )
    assert results.stale_blocks([readme], tmp_path) == []


def test_readme_and_docs_are_up_to_date():
    """Every number of the README and docs/ is a generated block that matches the manifest and benchmarks."""
    assert results.main(["--check"]) == 0, "run: python -m analysis.results --update"


def test_figures_cli_as_a_module(checkpoint_dir, tmp_path):
    """Run as ``python -m`` (``__main__``), the per-method files must register into the same registry."""
    import subprocess
    import sys

    from helpers import REPO

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.figures",
            "--out",
            str(tmp_path),
            "--only",
            "baseline",
            "--checkpoint",
            str(checkpoint_dir / "tiny_resnet.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-1000:]
    assert (tmp_path / "overview_accuracy_vs_macs.pdf").exists()


def test_bench_rows_of_a_dsnet_include_narrowest_vs_widest_and_the_static_subnets_of_equal_macs(images):
    from routescope.models.dsnet import SAME_WIDTHS

    torch.manual_seed(0)
    model = with_meta(create_model("dsnet_resnet8", in_chans=1), "tiny_dsnet")
    rows = {r["vs"]: r for r in bench.bench_model(model, images[0][:4], batch=8, rounds=1)}
    assert set(rows) == {
        bench.DENSE,
        SAME_WIDTHS,
        "static widest subnet",
        "static narrowest subnet",
        "narrowest vs widest (static)",
    }
    same = rows[SAME_WIDTHS]  # the same widths without the gates: the gates' own MACs are all that differs
    assert 1.0 < same["mac_ratio"] < 1.01
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.benchmark_references()[SAME_WIDTHS](x), model(x), atol=1e-5)
    pair = rows["narrowest vs widest (static)"]
    assert pair["test_acc"] is None and rows[bench.DENSE]["test_acc"] == 0.5
    assert pair["macs_mean"] == rows["static narrowest subnet"]["macs_ref"]
    assert pair["macs_ref"] == rows["static widest subnet"]["macs_ref"] and pair["mac_ratio"] < 0.5


def test_bench_times_a_static_model_against_itself_for_the_noise(images):
    model = with_meta(create_model("resnet8", in_chans=1), "tiny_resnet")
    (row,) = bench.bench_model(model, images[0][:4], batch=8, rounds=1)
    assert row["vs"] == bench.SAME and row["mac_ratio"] == 1.0


def test_bench_measures_condconv_throughput_at_its_own_batch_unless_told(images):
    torch.manual_seed(0)
    model = with_meta(create_model("condconv_resnet8", in_chans=1), "tiny_condconv")
    (row,) = bench.bench_model(model, images[0][:4], rounds=1)
    assert row["batch"] == model.benchmark_batch == 64 and row["vs"] == bench.DENSE
    assert row["mac_ratio"] > 1.0  # routing and kernel mixing cost MACs the plain ResNet does not spend
    (row,) = bench.bench_model(model, images[0][:4], batch=8, rounds=1)
    assert row["batch"] == 8


def test_pareto_front_keeps_only_undominated_models():
    import pandas as pd

    from routescope.analysis.core.pareto import pareto_front

    frame = pd.DataFrame(
        {"name": list("abcdef"), "macs_mean": [10, 5, 5, 8, 12, 3], "test_acc": [0.94, 0.90, 0.92, 0.91, 0.93, 0.80]}
    )
    # b loses to c (same MACs, less accurate), d to c (more MACs, less accurate), e to a
    assert pareto_front(frame)["name"].tolist() == ["f", "c", "a"]


def test_alpha_sweep_series_follow_the_training_lineage():
    from types import SimpleNamespace

    from routescope.analysis.methods.skipnet import sweep_point

    def run(**args):
        return SimpleNamespace(meta={"recipe": {"args": args}})

    models = {
        "sp": run(epochs=3, rl_epochs=0),
        "a1": run(epochs=0, rl_epochs=3, alpha=1.0),
        "a1_blr": run(epochs=0, rl_epochs=3, alpha=1.0, rl_backbone_lr=1e-4),
        "a1_ft": run(epochs=0, rl_epochs=0, ft_epochs=2, alpha=0.05, init_from="models/pretrained/a1.pt"),
        "orphan_ft": run(rl_epochs=0, ft_epochs=2, init_from="elsewhere/x.pt"),
        "a1_fta": run(epochs=0, rl_epochs=0, ft_epochs=3, ft_anchor=1.0, init_from="models/pretrained/a1.pt"),
        "a1_fta2": run(epochs=0, rl_epochs=0, ft_epochs=3, ft_anchor=1.0, init_from="models/pretrained/a1_fta.pt"),
        "a1_ftakd": run(
            epochs=0,
            rl_epochs=0,
            ft_epochs=6,
            ft_anchor=1.0,
            ft_teacher="models/pretrained/resnet20.pt",
            init_from="models/pretrained/a1.pt",
        ),
        "a1_ft_rl": run(epochs=0, rl_epochs=1, alpha=0.5, rl_backbone_lr=1e-4, init_from="a1_ft.pt"),
    }
    assert sweep_point("sp", models) == ("supervised pre-training only", None)
    assert sweep_point("a1", models) == ("hybrid RL (paper)", 1.0)
    assert sweep_point("a1_blr", models) == ("hybrid RL, backbone lr 0.0001", 1.0)
    assert sweep_point("a1_ft", models) == ("+ fine-tuned under the fixed policy", 1.0), "alpha of the policy it kept"
    assert sweep_point("orphan_ft", models) == ("+ fine-tuned under the fixed policy", None)
    assert (
        sweep_point("a1_fta", models)
        == sweep_point("a1_fta2", models)
        == ("+ fine-tuned, gates anchored to the policy", 1.0)
    )
    assert sweep_point("a1_ftakd", models) == (
        "+ fine-tuned, gates anchored to the policy, distilled from a teacher",
        1.0,
    )
    assert sweep_point("a1_ft_rl", models) == ("fine-tuned, then hybrid RL again", 0.5)


def test_seeds_section_lists_only_sources_with_finished_runs(tmp_path):
    import shutil

    from routescope.analysis.core.catalog import PRETRAINED

    shutil.copy(PRETRAINED / "convnet3_fmnist.pt", tmp_path / "convnet3_fmnist.pt")
    unfinished = tmp_path / "experiments" / "repr_fmnist"
    unfinished.mkdir(parents=True)
    (unfinished / "convnet3_s1.last.pt").write_bytes(b"resumable state")
    assert results.seed_sources(tmp_path) == {
        title: [tmp_path / "convnet3_fmnist.pt"] for title in results.SEED_EXPERIMENTS if "RePr" in title
    }
    section = results.seeds_section(tmp_path)
    assert "experiments/repr_fmnist" not in section and "| convnet3 | baseline |" in section


def test_paper_scale_forces_the_bundled_rates_onto_resnet110():
    from routescope.analysis.core.catalog import PRETRAINED
    from routescope.analysis.core.kinds import kind_view
    from routescope.models.checkpoint import load_checkpoint

    bundled = load_checkpoint(PRETRAINED / "skipnet_resnet20_fmnist_a0.75_fta6kd.pt")
    table = dataset_table(bundled, *load_test_images())
    target = create_model("skipnet_resnet110", in_chans=3)
    sample = kind_view("skip").force_like(table, bundled, target)
    rng = np.random.default_rng(0)
    draws = [sample(rng) for _ in range(400)]
    assert set(draws[0]) == set(target.gate_names)
    share = np.mean([d[layer]["executed"] for d in draws for layer in target.gate_names])
    bundled_share = table[[c for c in table.columns if c.endswith("/executed")]].to_numpy().mean()
    assert abs(share - bundled_share) < 0.1  # the same execution rate, block by block on average
    row = bench.paper_scale_row(bundled, images=2, rounds=1)
    assert row["model"].startswith("skipnet_resnet110") and row["batch"] == 1 and 0.3 < row["mac_ratio"] < 0.9
    row = bench.paper_scale_row(bundled, images=2, rounds=1, batch=4)  # each image of a batch forced on its own
    assert row["batch"] == 4 and 0.3 < row["throughput_mac_ratio"] < 0.9 and row["throughput"] > 0
    assert row["throughput_time_ratio_low"] <= 1 / row["throughput_ratio"] * 1.0001


def test_static_frontier_interpolates_in_macs():
    variants = {
        "static width 0.25": {"macs_mean": 10.0, "test_acc": 0.90},
        "static width 0.5": {"macs_mean": 20.0, "test_acc": 0.92},
        "threshold 0.9": {"macs_mean": 15.0, "test_acc": 0.99},
    }  # not a static network: ignored
    assert results.static_at(variants, 15.0, "static width") == (
        pytest.approx(0.91),
        "static width 0.25",
        "static width 0.5",
    )
    assert results.static_at(variants, 20.0, "static width")[0] == pytest.approx(0.92)
    assert results.static_at(variants, 25.0, "static width") is None


def test_a_speed_target_is_met_only_when_the_whole_interval_clears_it():
    from routescope.analysis.results import target_status

    row = {"mac_ratio": 0.6, "latency_ratio": 0.70, "latency_ratio_low": 0.66, "latency_ratio_high": 0.74}
    assert target_status(row, ("saving", 0.5), noise=0.01) == "yes"  # a 50% saving is a ratio of 0.80
    assert target_status(row, ("saving", 0.7), noise=0.01) == "within noise"  # 0.72 is the ratio that meets it
    assert target_status(row, ("saving", 0.95), noise=0.01) == "**no**"  # 0.62: below the whole interval
    assert target_status(row, ("ratio", 0.72), noise=0.05) == "not measurable"  # the noise exceeds the margin
    assert target_status({**row, "latency_ratio_high": 0.69, "latency_ratio_low": 0.6}, ("ratio", 0.7), 0.0) == "yes"


def test_bench_plans_times_measured_against_reference_plans(tmp_path, capsys):
    out = tmp_path / "bench_plans.json"
    args = ["--plans", "--batch", "24", "--rounds", "2", "--images", "8", "--save", str(out)]
    condconv, dense = PRETRAINED / "condconv_resnet20_fmnist.pt", PRETRAINED / "resnet20_fmnist.pt"
    assert bench.main(args + ["--checkpoint", str(condconv), "--checkpoint", str(dense)]) == 0
    (row,) = json.loads(out.read_text())["rows"]  # the dense ResNet has no layer with plans: no row
    assert row["model"] == "condconv_resnet20_fmnist" and row["batch"] == 24 and sum(row["plans"].values()) == 6
    assert "with the reference plans" in capsys.readouterr().out
    assert "| `condconv_resnet20_fmnist` | 24 |" in results.plans_table(tmp_path)


def test_bench_formats_times_each_memory_format_and_the_measured_one(tmp_path, capsys):
    out = tmp_path / "bench_formats.json"
    args = ["--formats", "--rounds", "2", "--images", "4", "--save", str(out)]
    assert bench.main(args + ["--checkpoint", str(PRETRAINED / "resnet20_fmnist.pt")]) == 0
    options = [r["option"] for r in json.loads(out.read_text())["rows"]]
    assert options[0].startswith("fast form (measured: ") and options[1:3] == [
        "fast form, contiguous",
        "fast form, channels_last",
    ]
    assert "| `resnet20_fmnist` | fast form, channels_last |" in results.formats_table(tmp_path)
    record = {"command": "c", "machine": "here", "torch": "2", "date": "today"}
    rows = [{"memory_formats": ["channels_last", "channels_last"]}, {"memory_formats": ["contiguous", None]}]
    assert "channels_last on 2 of 3 timed sides, contiguous on 1 of 3" in results.bench_source(record | {"rows": rows})
    assert "memory format" not in results.bench_source(record | {"rows": [{}]}), "runs saved before: no sentence"


def test_batched_rows_and_device_checks_are_generated_from_their_saved_runs(tmp_path):
    assert "No batched paper-scale run" in results.batched_targets(tmp_path)
    assert "No GPU run recorded yet" in results.device_checks(tmp_path)
    row = {"model": "m", "vs": "dense r, same form", "batch": 64, "throughput": 300.0, "throughput_ref": 200.0}
    row |= {"throughput_ratio": 1.5, "throughput_mac_ratio": 0.5}
    row |= {"throughput_time_ratio_low": 0.64, "throughput_time_ratio_high": 0.69}
    itself = row | {"model": "r", "vs": "itself (noise)", "throughput_mac_ratio": 1.0}
    itself |= {"throughput_time_ratio_low": 0.9, "throughput_time_ratio_high": 1.1}
    record = {"command": "python -m tools.bench", "machine": "here", "torch": "2", "date": "today", "rows": [row]}
    (tmp_path / "bench_paper.json").write_text(json.dumps(record | {"rows": [row, itself]}))
    noisy = results.batched_targets(tmp_path)
    assert "| `m` | 64 | 0.500 | 0.667 (0.640-0.690) | 67% | saving >= 70% | not measurable |" in noisy
    assert "`r`" not in noisy and "time ratio spread by ±0.100" in noisy, "the noise row is the run's noise"
    (tmp_path / "bench_paper.json").write_text(json.dumps(record))
    table = results.batched_targets(tmp_path)
    assert "| `m` | 64 | 0.500 | 0.667 (0.640-0.690) | 67% | saving >= 70% | within noise |" in table
    check = {"model": "m", "agreement": 1.0, "batch1_agreement": 0.999, "latency_ms": 1.0, "latency_dense_ms": 2.0}
    check |= {"throughput": 100.0, "throughput_dense": 50.0, "host_reads": 2, "device_syncs": 3, "batch": 256}
    run = {"device": "cuda", "device_name": "GPU X", "torch": "2", "date": "today", "command": "c", "singles": 8}
    (tmp_path / "device_check_cuda.json").write_text(json.dumps(run | {"rows": [check]}))
    text = results.device_checks(tmp_path)
    assert "GPU X" in text and "| 1.0000 / 0.9990 | 1.00 | 2.00 | 0.500 | 100 | 50 | 2.000 | 2 | 3 |" in text
    assert "No GPU run" not in text
    assert "No GPU run recorded yet" in results.gpu_targets(tmp_path)
    (tmp_path / "bench_paper_cuda.json").write_text(json.dumps(record | {"machine": "GPU X"}))
    assert "on GPU X" in results.gpu_targets(tmp_path)
    assert results.batched_targets(tmp_path) == table, "a GPU's run stays out of this machine's tables"


def test_a_method_that_saves_no_macs_keeps_its_latency_target_at_paper_scale():
    """CondConv forced to one expert saves no MACs: held to its own latency ratio, not to a share of a saving."""
    assert results.paper_target(["ratio", 1.15]) == ("ratio", 1.15)
    assert results.paper_target(["saving", 0.7]) == ("saving", results.PAPER_TARGET)
    assert results.paper_target(None) == ("saving", results.PAPER_TARGET)


def test_each_run_is_judged_with_its_own_noise(tmp_path):
    """A paper-scale run with a dense-vs-itself row is judged with its own spread, not the 28 x 28 run's; the noise
    rows themselves set no target."""
    (tmp_path / "featured.json").write_text((PRETRAINED / "featured.json").read_text())

    def row(model, vs, ratio, low, high, mac_ratio=0.5, method="skipnet"):
        return {
            "model": model,
            "vs": vs,
            "method": method,
            "mac_ratio": mac_ratio,
            "latency_ratio": ratio,
            "latency_ratio_low": low,
            "latency_ratio_high": high,
        }

    quiet = [row("resnet20_fmnist", "itself (noise)", 1.0, 0.99, 1.01, 1.0, "baseline")]
    near = row("skipnet_resnet110 at 32x32", "dense resnet110, same form", 0.56, 0.55, 0.57)  # target ratio 0.575
    (tmp_path / "bench.json").write_text(json.dumps({"rows": quiet}))
    for noisy, status in ((0.10, "not measurable"), (0.004, "yes")):
        itself = row(
            "resnet110 at 32x32 (random weights)", "itself (noise)", 1.0, 1 - noisy, 1 + noisy, 1.0, "baseline"
        )
        (tmp_path / "bench_paper.json").write_text(json.dumps({"rows": [near, itself]}))
        text = results.speed_targets(tmp_path)
        assert f"| saving >= 85% | {status} |" in text
        assert "resnet110 at 32x32 (random weights)`" not in text, "a noise row sets no target"
        assert f"`bench.json` ±0.010; `bench_paper.json` ±{noisy:.3f}" in text


def test_the_paper_scale_noise_row_times_the_dense_network_against_itself():
    r = bench.noise_row(bench.paper_dense("resnet110", 8), "resnet110 at 8x8", 8, images=1, rounds=2, batch=2)
    assert r["vs"] == bench.SAME and r["mac_ratio"] == 1.0 and r["throughput_mac_ratio"] == 1.0
    assert r["model"] == "resnet110 at 8x8" and r["macs_mean"] == r["macs_ref"] > 0
    assert r["latency_ratio_low"] <= r["latency_ratio_high"] and r["batch"] == 2 and r["throughput"] > 0
