"""Every number of the README and docs/, generated from ``models/pretrained/manifest.json``, ``bench.json`` and the
seed experiments (never typed by hand).

A document marks a block ``<!-- generated:KEY -->`` ... ``<!-- /generated:KEY -->`` (keys: ``results``,
``featured``, ``speed`` (``bench.json``), ``speed:NAME`` (``NAME.json``), ``speed:targets``, ``seeds``,
``variants:NAME``, ``models:A,B,...``, ``frontier:A,B,...``, ``comparison:NAME`` (``COMPARISONS``)).
``python -m analysis.results --update`` rewrites them all; ``--check`` exits 1 when one is stale (the test suite runs
it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from routescope.analysis.core.catalog import PRETRAINED, bundled_checkpoints, featured, read_checkpoints
from routescope.analysis.core.runs import (
    collect_runs,
    display_table,
    group_members,
    markdown_table,
    seed_of,
    seeds_table,
    summarize_runs,
)
from routescope.models import create_model
from routescope.models.data import REPO_ROOT
from routescope.models.dsnet import SAME_WIDTHS
from routescope.models.recipe_files import command_argv

# Replicated experiments: the seed-0 run is bundled, seeds 1+ live in models/pretrained/experiments/<name>/
# (paths relative to the models folder; each folder's manifest.json holds every run's command); the uniform-group
# control of DGConv bundles both its seeds
SEED_EXPERIMENTS = {
    "RePr vs standard training (ConvNet: 20 epochs; ResNet-20: 5 epochs; no augmentation)": (
        "experiments/repr_fmnist",
        "convnet3_fmnist.pt",
        "repr_convnet3_fmnist.pt",
    ),
    "CondConv vs the same-budget ResNet-20 (4 epochs from the bundled ResNet-20)": (
        "experiments/condconv_fmnist",
        "condconv_resnet20_fmnist.pt",
        "resnet20_fmnist_ft4.pt",
    ),
    "CondConv closer to the paper (8 experts, CondConv in layer2 and layer3; 4 epochs from the bundled ResNet-20; "
    "one seed: no better than the 4-expert model and the control above, so not replicated)": (
        "experiments/condconv_e8_fmnist",
    ),
    "DGConv budget 0.6 vs the same-budget ResNet-20 and the ResNet-20 with uniform groups (2, 4, 1) of the same MACs "
    "(8 epochs from the bundled ResNet-20)": (
        "experiments/dgconv_fmnist",
        "dgconv_resnet20_fmnist_b0.6_e8.pt",
        "resnet20_fmnist_ft8.pt",
        "grouped_resnet20_fmnist_g241_e8_s0.pt",
        "grouped_resnet20_fmnist_g241_e8_s1.pt",
    ),
    "SkipNet alpha 0.75, 6 anchored fine-tuning epochs distilled from the ResNet-20 (lr 0.05)": (
        "experiments/skipnet_fmnist",
        "skipnet_resnet20_fmnist_a0.75_fta6kd.pt",
    ),
}


# A claim against its controls, every seed of each: ``(label, checkpoints relative to the models folder)`` per row;
# the first row is the method, the second the control its claim is tested against (``comparison:NAME`` blocks)
COMPARISONS = {
    "dgconv": (
        (
            "learned groups (DGConv, budget 0.6)",
            ("dgconv_resnet20_fmnist_b0.6_e8.pt", "experiments/dgconv_fmnist/dgconv_resnet20_fmnist_b0.6_e8_s1.pt"),
        ),
        (
            "uniform groups (2, 4, 1), same MACs",
            ("grouped_resnet20_fmnist_g241_e8_s0.pt", "grouped_resnet20_fmnist_g241_e8_s1.pt"),
        ),
        ("dense, the same 8 epochs", ("resnet20_fmnist_ft8.pt", "experiments/dgconv_fmnist/resnet20_fmnist_ft8_s1.pt")),
        ("dense, where the three start", ("resnet20_fmnist.pt",)),
    )
}


def _has_runs(path: Path) -> bool:
    """A checkpoint file, or a folder with at least one finished run (resumable ``*.last.pt`` do not count)."""
    return path.is_file() or (path.is_dir() and bool(bundled_checkpoints(path)))


def seed_sources(folder: Path = PRETRAINED) -> dict[str, list[Path]]:
    """``SEED_EXPERIMENTS`` with the paths under ``folder`` that hold runs (an experiment with none is left out)."""
    found = {title: [folder / p for p in paths if _has_runs(folder / p)] for title, paths in SEED_EXPERIMENTS.items()}
    return {title: paths for title, paths in found.items() if paths}


def seeds_section(folder: Path = PRETRAINED) -> str:
    """Per experiment: the ``analysis.experiments`` table and the command that prints it."""
    parts = []
    for title, paths in seed_sources(folder).items():
        sources = " ".join(str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p) for p in paths)
        parts.append(
            f"**{title}** (`python -m analysis.experiments {sources} --markdown`)\n\n"
            f"{markdown_table(display_table(seeds_table(paths)))}"
        )
    return "\n\n".join(parts) or "_No replicated experiments yet._"


def seed_statistics(folder: Path = PRETRAINED) -> dict[str, tuple[float, float, int]]:
    """``{checkpoint name: (mean, std, runs)}`` of the test accuracy of the replicated group (``SEED_EXPERIMENTS``:
    two or more runs whose options differ only in the seed) each checkpoint belongs to."""
    out: dict[str, tuple[float, float, int]] = {}
    for paths in seed_sources(folder).values():
        runs = collect_runs(paths)
        for _, group in summarize_runs(runs).iterrows():
            if group["n_runs"] < 2 or group["varies"]:
                continue
            for path in group_members(runs, group)["path"]:
                out.setdefault(Path(path).stem, (group["test_acc_mean"], group["test_acc_std"], int(group["n_runs"])))
    return out


def results_table(manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    manifest = json.loads(manifest_path.read_text())
    lines = [
        "| model | test accuracy | mean MACs / image | of dense | min - max MACs | params | "
        "training wall time | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in sorted(manifest.items()):
        m = entry["metrics"]
        lines.append(
            f"| `{name}` | {m['test_acc'] * 100:.2f}% ({m['n_test']:,} images) | {m['macs_mean'] / 1e6:.2f} M | "
            f"{m['mac_ratio'] * 100:.0f}% | {m['macs_min'] / 1e6:.2f} - {m['macs_max'] / 1e6:.2f} M | "
            f"{m['params']:,} | "
            f"{entry['wall_time_s'] / 60:.0f} min ({entry['machine']}, {entry['date']}) | `{entry['command']}` |"
        )
        for label, v in m.get("variants", {}).items():  # e.g. DS-Net's static widths, same images
            lines.append(
                f"| &nbsp;&nbsp;`{name}`, {label} | {v['test_acc'] * 100:.2f}% | {v['macs_mean'] / 1e6:.2f} M | "
                f"{v['mac_ratio'] * 100:.0f}% | | | | |"
            )
    return "\n".join(lines)


SPEED_COLUMNS = (
    "model",
    "vs",
    "mac_ratio",
    "latency_ms",
    "latency_ref_ms",
    "latency_ratio",
    "batch",
    "throughput",
    "throughput_ref",
    "throughput_ratio",
)


def saved_bench(bench_path: Path) -> dict | None:
    """The record ``python -m tools.bench --save`` wrote (rows plus command, machine, torch, date), or None."""
    return json.loads(bench_path.read_text()) if bench_path.exists() else None


def memory_formats(rows: list[dict]) -> str:
    """What memory format the timed networks chose (rows saved before ``models.memory_format``: nothing)."""
    formats = Counter(f for r in rows for f in r.get("memory_formats", []) if f)
    sides = sum(formats.values())
    chosen = ", ".join(f"{name} on {n} of {sides} timed sides" for name, n in formats.most_common())
    return (
        f" Weights in the memory format each network measured faster (`models.memory_format`): {chosen}."
        if chosen
        else ""
    )


def bench_source(record: dict) -> str:
    return (
        f"Measured by `{record['command']}` on {record['machine']} (torch {record['torch']}), {record['date']}; "
        "ratios are model / reference, measured alternately in one run." + memory_formats(record.get("rows", []))
    )


def speed_table(bench_path: Path = PRETRAINED / "bench.json") -> str:
    """The benchmark rows saved by ``python -m tools.bench --save``, with their command, machine and date."""
    record = saved_bench(bench_path)
    if record is None:
        return "_No benchmark saved yet: run `python -m tools.bench --save models/pretrained/bench.json`._"
    lines = [
        bench_source(record),
        "",
        "| model | vs | MAC ratio | batch-1 latency (ms) | reference (ms) | latency ratio | batch | "
        "throughput (img/s) | reference | throughput ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| `{r['model']}` | {r['vs']} | {r['mac_ratio']:.3f} | {r['latency_ms']:.2f} | "
            f"{r['latency_ref_ms']:.2f} | "
            f"{r['latency_ratio']:.3f} | {r.get('batch', '')} | "
            + (
                f"{r['throughput']:.0f} | {r['throughput_ref']:.0f} | {r['throughput_ratio']:.3f} |"
                if r.get("throughput") is not None
                else "- | - | - |"
            )
        )
    return "\n".join(lines)


PAPER_TARGET = 0.85  # share of the MAC saving that should show in latency at paper scale
CONVERTED_CONDCONV = 1.15  # a converted CondConv EfficientNet against its dense network, batch 1
GATE_OVERHEAD = 1.1  # DS-Net against its static subnets of equal MACs: what its gates and dispatch may cost


def interval_text(r: dict) -> str:
    """The interval of a row's latency ratio as " (low-high)"; "" for a row saved before intervals were recorded."""
    return f" ({r['latency_ratio_low']:.3f}-{r['latency_ratio_high']:.3f})" if "latency_ratio_low" in r else ""


def target_status(r: dict, target: tuple[str, float], noise: float) -> str:
    """ "yes" when the whole interval of the ratio (interquartile range of the alternating rounds) clears the target,
    "**no**" when none of it does, "within noise" between; "not measurable" when the run's same-vs-same spread
    (``noise``) is larger than the distance to the target."""
    kind, value = target
    # a saving target as the latency ratio that meets it exactly
    wanted = 1 - value * (1 - r["mac_ratio"]) if kind == "saving" else value
    low, high = r.get("latency_ratio_low", r["latency_ratio"]), r.get("latency_ratio_high", r["latency_ratio"])
    if noise > abs(r["latency_ratio"] - wanted):
        return "not measurable"
    if high <= wanted:
        return "yes"
    return "**no**" if low > wanted else "within noise"


OWN_ROUTING = "dense network, with its own routing (router and a mixture per image)"


def paper_target(method_target: list | tuple | None) -> tuple[str, float]:
    """A paper-scale row's target: its method's latency-ratio target, else PAPER_TARGET of the MAC saving."""
    if method_target is not None and method_target[0] == "ratio":
        return ("ratio", float(method_target[1]))
    return ("saving", PAPER_TARGET)


def same_vs_same(r: dict) -> bool:
    """Whether a saved row times a network against itself (``tools.bench``'s "itself (noise)"): its run's noise."""
    return r["vs"].startswith("itself")


def run_noise(rows: list[dict], low: str = "latency_ratio_low", high: str = "latency_ratio_high") -> float | None:
    """A run's noise: half the largest spread of its same-vs-same rows' ratios (None: the run has no such row)."""
    spreads = [(r[high] - r[low]) / 2 for r in rows if same_vs_same(r) and r.get(low) is not None]
    return max(spreads) if spreads else None


def speed_targets(folder: Path = PRETRAINED) -> str:
    """Each flagship's batch-1 latency against the dense network (bench.json) and each paper-scale row
    (bench_paper*.json), set against its target: ``featured.json``'s ``speed_target``, the share of the MAC saving
    that shows in latency (``["saving", at least]``) or, for a method that saves no MACs, ``["ratio", at most]``.
    A target is met when the ratio's whole interval clears it (``target_status``), judged with the noise of the run
    the row comes from (bench.json's for a run saved without a same-vs-same row)."""
    lines = [
        "| model | MAC ratio | latency ratio (interval) | MAC saving shown in latency | target | met |",
        "|---|---|---|---|---|---|",
    ]
    targets = {entry["flagship"]: entry.get("speed_target") for entry in featured(folder).values()}
    runs = {"bench.json": (saved_bench(folder / "bench.json") or {}).get("rows", [])}
    bench = runs["bench.json"]
    # (row, target, the run it comes from)
    rows = [
        (r, targets.get(r["model"]), "bench.json")
        for r in bench
        if r["model"] in targets and r["vs"].startswith("dense")
    ]
    # DS-Net's gate and dispatch overhead: against the static subnets of equal MACs (each image at its widths)
    rows += [
        (r, ("ratio", GATE_OVERHEAD), "bench.json") for r in bench if r["model"] in targets and r["vs"] == SAME_WIDTHS
    ]
    # paper-scale and converted rows (decisions forced at the flagship's rates): a method that saves MACs is held to
    # PAPER_TARGET of its saving; one that does not (CondConv: forced to one expert) to its own latency ratio
    by_method = {method: entry.get("speed_target") for method, entry in featured(folder).items()}
    for path in cpu_runs(folder, "bench_paper*.json"):
        runs[path.name] = saved_bench(path)["rows"]
        rows += [
            (r, paper_target(by_method.get(r.get("method"))), path.name) for r in runs[path.name] if not same_vs_same(r)
        ]
    # the converted CondConv EfficientNet-B0 with its own routing (router and mixture per image), for comparison
    runs["bench_converted.json"] = (saved_bench(folder / "bench_converted.json") or {}).get("rows", [])
    rows += [
        (r | {"vs": OWN_ROUTING}, ("ratio", CONVERTED_CONDCONV), "bench_converted.json")
        for r in runs["bench_converted.json"]
        if r["vs"].startswith("dense")
    ]
    noises = {name: noise for name, noise in ((n, run_noise(rs)) for n, rs in runs.items()) if noise is not None}
    for r, target, run in rows:
        if target is None:
            continue
        share = (1 - r["latency_ratio"]) / (1 - r["mac_ratio"]) if r["mac_ratio"] < 1 else None
        kind, value = target
        wanted = f"saving >= {value:.0%}" if kind == "saving" else f"latency ratio <= {value:.2f}"
        interval = interval_text(r)
        against = "" if r["vs"].startswith("dense") and r["vs"] != OWN_ROUTING else f" vs {r['vs']}"
        noise = noises.get(run, noises.get("bench.json", 0.0))
        lines.append(
            f"| `{r['model']}`{against} | {r['mac_ratio']:.3f} | {r['latency_ratio']:.3f}{interval} | "
            f"{'-' if share is None else f'{share:.0%}'} | {wanted} | {target_status(r, target, noise)} |"
        )
    if not noises:
        return "\n".join(lines)
    each = "; ".join(f"`{name}` ±{value:.3f}" for name, value in noises.items())
    return "\n".join(
        [
            *lines,
            "",
            f"Noise of each run (half the largest spread of its same-vs-same rows' ratios): {each}; a run saved "
            "without such a row is judged with `bench.json`'s.",
        ]
    )


BATCHED_TARGET = 0.70  # share of the MAC saving that should show in batched throughput (the issue sets it on a GPU)
GPU_LATENCY, GPU_THROUGHPUT = 1.2, 0.8  # the 28 x 28 flagships on a GPU: batch-1 latency at most, throughput at least
GPU = "_cuda.json"  # a saved run of tools/device_run.sh on a GPU (bench_cuda.json, bench_paper_cuda.json, ...)


def cpu_runs(folder: Path, pattern: str) -> list[Path]:
    """The saved runs matching ``pattern`` measured here (the GPU's runs have their own block)."""
    return [path for path in sorted(folder.glob(pattern)) if not path.name.endswith(GPU)]


def batched_table(record: dict) -> list[str]:
    """A bench record's batched paper-scale rows (``--paper-batch N``), set against BATCHED_TARGET."""
    lines = [
        bench_source(record),
        "",
        "| model | batch | MAC ratio | time ratio (interval) | MAC saving shown in throughput | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    noise = run_noise(record["rows"], "throughput_time_ratio_low", "throughput_time_ratio_high")
    for r in record["rows"]:
        if r.get("throughput") is None or same_vs_same(r):
            continue
        timed = {
            "mac_ratio": r["throughput_mac_ratio"],
            "latency_ratio": 1 / r["throughput_ratio"],
            "latency_ratio_low": r["throughput_time_ratio_low"],
            "latency_ratio_high": r["throughput_time_ratio_high"],
        }
        saving = timed["mac_ratio"] < 0.99
        share = f"{(1 - timed['latency_ratio']) / (1 - timed['mac_ratio']):.0%}" if saving else "-"
        target = ("saving", BATCHED_TARGET) if saving else ("ratio", CONVERTED_CONDCONV)
        wanted = f"saving >= {BATCHED_TARGET:.0%}" if saving else f"time ratio <= {CONVERTED_CONDCONV:.2f}"
        lines.append(
            f"| `{r['model']}` | {r['batch']} | {timed['mac_ratio']:.3f} | {timed['latency_ratio']:.3f} "
            f"{interval_text(timed).strip()} | {share} | {wanted} | "
            f"{target_status(timed, target, noise or 0.0)} |"
        )
    if noise is not None:
        lines += ["", f"Noise of the run: the dense network against itself, time ratio spread by ±{noise:.3f}."]
    return lines


def batched_targets(folder: Path = PRETRAINED) -> str:
    """The paper-scale rows measured batched here (``tools.bench --scale paper --paper-batch N``): throughput
    against the dense network on the same batch, each image forced to decisions of its own."""
    records = [saved_bench(path) for path in cpu_runs(folder, "bench_paper*.json")]
    records = [r for r in records if any(row.get("throughput") is not None for row in r["rows"])]
    if not records:
        return "_No batched paper-scale run saved yet: `python -m tools.bench --scale paper --paper-batch 64`._"
    return "\n\n".join("\n".join(batched_table(record)) for record in records)


def gpu_targets(folder: Path = PRETRAINED) -> str:
    """The runs of ``tools/device_run.sh`` on a GPU (``bench_cuda.json``, ``bench_paper_cuda.json``) against the
    issue's GPU targets: each 28 x 28 flagship's batch-1 latency at most GPU_LATENCY and batch-256 throughput at
    least GPU_THROUGHPUT of the dense network's, and the paper-scale batches' BATCHED_TARGET."""
    bench, paper = saved_bench(folder / f"bench{GPU}"), saved_bench(folder / f"bench_paper{GPU}")
    if bench is None and paper is None:
        return (
            "_No GPU run recorded yet: on a lent GPU, `sh tools/device_run.sh` (see below), its JSON copied into "
            "models/pretrained/, then `python -m routescope.analysis.results --update`._"
        )
    lines = []
    if bench is not None:
        flagships = {entry["flagship"] for entry in featured(folder).values()}
        lines += [
            bench_source(bench),
            "",
            "| model | MAC ratio | batch-1 latency ratio (interval) | target | met | batch | throughput ratio | "
            "target | met |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in bench["rows"]:
            if r["model"] not in flagships or not r["vs"].startswith("dense"):
                continue
            interval = interval_text(r)
            met = "yes" if r["throughput_ratio"] >= GPU_THROUGHPUT else "**no**"
            lines.append(
                f"| `{r['model']}` | {r['mac_ratio']:.3f} | {r['latency_ratio']:.3f}{interval} | "
                f"<= {GPU_LATENCY:.2f} | {target_status(r, ('ratio', GPU_LATENCY), 0.0)} | {r['batch']} | "
                f"{r['throughput_ratio']:.3f} | >= {GPU_THROUGHPUT:.2f} | {met} |"
            )
        lines.append("")
    if paper is not None:
        lines += batched_table(paper)
    return "\n".join(lines).strip()


def training(entry: dict) -> str:
    """Epochs and wall time of a run's whole ``init_from`` chain when the manifest records them, else of the run."""
    if "cumulative_wall_time_s" in entry:
        return f"{entry['cumulative_epochs']} epochs, {entry['cumulative_wall_time_s'] / 60:.0f} min"
    return f"{entry['wall_time_s'] / 60:.0f} min"


def featured_table(manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    """One row per featured checkpoint (``featured.json``): method, role, accuracy (and, where the model was
    replicated, the mean and std over its seeds), MACs, training, from the manifest."""
    manifest = json.loads(manifest_path.read_text())
    seeds = seed_statistics(manifest_path.parent)
    lines = [
        "| method | model | role | test accuracy | over seeds | mean MACs / image | of dense "
        "| training (whole chain) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in featured(manifest_path.parent).items():
        for role, name in [("flagship", entry["flagship"])] + [("control", c) for c in entry["controls"]]:
            if name not in manifest:
                continue
            m, e = manifest[name]["metrics"], manifest[name]
            mean, std, n = seeds.get(name, (None, None, 1))
            over = "-" if mean is None else f"{mean * 100:.2f} ± {std * 100:.2f}% ({n} seeds)"
            lines.append(
                f"| {method if role == 'flagship' else ''} | `{name}` | {role} | {m['test_acc'] * 100:.2f}% | "
                f"{over} | {m['macs_mean'] / 1e6:.2f} M | {m['mac_ratio'] * 100:.0f}% | {training(e)} |"
            )
    return "\n".join(lines)


def _distinct(values: list, form) -> str:
    """One value if all are equal, else each (in the rows' seed order)."""
    return form(values[0]) if len(set(values)) == 1 else " / ".join(map(form, values))


def comparison_table(name: str, folder: Path = PRETRAINED) -> str:
    """``COMPARISONS[name]``: each row's test accuracy per seed, their mean and sample std, MACs, parameters (each
    checkpoint's ``models.evaluate`` record), and the batch-1 latency of its first checkpoint against the dense
    ResNet in the same run (``bench.json``); then the first row against the second, in points and in seed stds."""
    record = saved_bench(folder / "bench.json")
    timed: dict[str, dict] = {}
    for r in (record or {}).get("rows", []):
        if r["vs"].startswith(("dense", "itself")):
            timed.setdefault(r["model"], r)
    lines = [
        "| model | checkpoints (seed) | test accuracy per seed | mean ± std | mean MACs / image | of dense "
        "| params | batch-1 latency | of the dense ResNet's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary, missing = [], []
    for label, files in COMPARISONS[name]:
        paths = [folder / f for f in files if (folder / f).is_file()]
        runs = [(path, payload["meta"]) for path, payload in read_checkpoints(paths)]
        if not runs:
            continue
        metrics = [meta["metrics"] for _, meta in runs]
        accuracy = [m["test_acc"] for m in metrics]
        mean, std = statistics.mean(accuracy), (statistics.stdev(accuracy) if len(accuracy) > 1 else None)
        summary.append((label, mean, std, len(accuracy)))
        bench_row = timed.get(runs[0][1]["name"])
        if bench_row is None:
            missing.append(runs[0][1]["name"])
        latency = "-" if bench_row is None else f"{bench_row['latency_ms']:.2f} ms"
        ratio = (
            "-"
            if bench_row is None
            else f"{bench_row['latency_ratio']:.3f}"
            + ("" if bench_row["vs"].startswith("dense") else " (itself: noise)")
        )
        names = ", ".join(f"`{meta['name']}` ({seed_of(meta, path)})" for path, meta in runs)
        lines.append(
            f"| {label} | {names} | {' / '.join(f'{a * 100:.2f}%' for a in accuracy)} | "
            f"{mean * 100:.2f}" + ("% (one seed)" if std is None else f" ± {std * 100:.2f}%") + " | "
            f"{_distinct([m['macs_mean'] for m in metrics], lambda v: f'{v / 1e6:.2f} M')} | "
            f"{_distinct([m['mac_ratio'] for m in metrics], lambda v: f'{v * 100:.1f}%')} | "
            f"{_distinct([m['params'] for m in metrics], lambda v: f'{v:,}')} | {latency} | {ratio} |"
        )
    notes = [
        "",
        "Accuracy, MACs and parameters: each checkpoint's `python -m models.evaluate` record on the 10,000 "
        "test images; std: sample standard deviation over the seeds. Latency: median per image at batch 1 in the "
        "fast form, the row's first checkpoint against the dense ResNet-20, alternately. "
        + (bench_source(record) if record else "No `bench.json` saved yet."),
    ]
    if missing and record:
        notes.append(f"Not in that run yet: {', '.join(f'`{n}`' for n in missing)} (re-run `{record['command']}`).")
    if len(summary) >= 2 and summary[0][2] is not None and summary[1][2] is not None:
        (a, mean_a, std_a, n_a), (b, mean_b, std_b, n_b) = summary[:2]
        diff, spread = (mean_a - mean_b) * 100, max(std_a, std_b) * 100
        notes.append(
            f"{a[0].upper()}{a[1:]} minus {b}: {diff:+.2f} points of mean test accuracy ({n_a} and {n_b} "
            f"seeds), {'within' if abs(diff) <= spread else 'more than'} one seed standard deviation (the "
            f"larger of the two: {spread:.2f} points); {min(n_a, n_b)} seeds a side are no significance test."
        )
    return "\n".join(lines) + "\n\n".join(notes)


def variants_table(name: str, manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    """A model's evaluation variants (DS-Net's static widths, early exit's thresholds and static exits) beside
    its own operating point, all on the same test images."""
    m = json.loads(manifest_path.read_text())[name]["metrics"]
    lines = [
        "| setting | test accuracy | mean MACs / image | of dense |",
        "|---|---|---|---|",
        f"| `{name}` as bundled | {m['test_acc'] * 100:.2f}% | {m['macs_mean'] / 1e6:.2f} M | "
        f"{m['mac_ratio'] * 100:.1f}% |",
    ]
    lines += [
        f"| {label} | {v['test_acc'] * 100:.2f}% | {v['macs_mean'] / 1e6:.2f} M | {v['mac_ratio'] * 100:.1f}% |"
        for label, v in m.get("variants", {}).items()
    ]
    return "\n".join(lines)


def static_prefix(entry: dict) -> str | None:
    """The label prefix of the evaluation variants that are static networks (``static_variants`` of the model's
    class: DS-Net's static widths, early exit's truncated networks), read from a build on the meta device."""
    argv = command_argv(entry["command"])
    with torch.device("meta"):
        return create_model(argv[argv.index("--model") + 1]).static_variants


def static_at(variants: dict, macs: float, prefix: str) -> tuple[float, str, str] | None:
    """The static networks' accuracy at ``macs``, linear in MACs between the two variants labelled ``prefix...``
    that bracket it, with their labels; None outside their range."""
    points = sorted((v["macs_mean"], v["test_acc"], label) for label, v in variants.items() if label.startswith(prefix))
    below, above = [p for p in points if p[0] <= macs], [p for p in points if p[0] >= macs]
    if not below or not above:
        return None
    (m0, a0, l0), (m1, a1, l1) = below[-1], above[0]
    return (a0 if m1 == m0 else a0 + (macs - m0) / (m1 - m0) * (a1 - a0)), l0, l1


def frontier_table(names: list[str], manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    """Each dynamic model against its own static networks at equal mean MACs, on the same test images."""
    manifest = json.loads(manifest_path.read_text())
    lines = [
        "| model | mean MACs / image | of dense | accuracy | static at the same MACs | interpolated between | "
        "dynamic - static |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        m, prefix = manifest[name]["metrics"], static_prefix(manifest[name])
        static = static_at(m.get("variants", {}), m["macs_mean"], prefix) if prefix else None
        head = f"| `{name}` | {m['macs_mean'] / 1e6:.2f} M | {m['mac_ratio'] * 100:.1f}% | {m['test_acc'] * 100:.2f}% |"
        if static is None:
            lines.append(head + " outside the static networks' range | - | - |")
            continue
        acc, low, high = static
        gain = round((m["test_acc"] - acc) * 100, 2) + 0.0  # + 0.0: no "-0.00"
        lines.append(head + f" {acc * 100:.2f}% | {low}, {high} | {gain:+.2f} points |")
    return "\n".join(lines)


def models_table(names: list[str], manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    """A few named models side by side: accuracy, MACs and the training that made them (from the manifest)."""
    manifest = json.loads(manifest_path.read_text())
    lines = ["| model | test accuracy | mean MACs / image | of dense | training time |", "|---|---|---|---|---|"]
    for name in names:
        m, e = manifest[name]["metrics"], manifest[name]
        lines.append(
            f"| `{name}` | {m['test_acc'] * 100:.2f}% | {m['macs_mean'] / 1e6:.2f} M | {m['mac_ratio'] * 100:.1f}% | "
            f"{e['wall_time_s'] / 60:.0f} min |"
        )
    return "\n".join(lines)


def table_bench(path: Path) -> str:
    """The per-image table's speed and memory (``python -m tools.table_bench --save``), or how to measure it."""
    record = saved_bench(path)
    if record is None:
        return "_Not measured yet: run `python -m tools.table_bench --save models/pretrained/table_bench.json`._"
    lines = [
        "| test set | model | images | images/s | first rows in the app (batch) | peak RSS | DataLoader workers' "
        "peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"fmnist": "Fashion-MNIST test set", "photos": "ImageFolder of 224x224 JPEGs"}
    for r in record["rows"]:
        workers = f"{r['peak_worker_rss_mb']:,} MB ({r['workers']} workers)" if r["workers"] else "none"
        lines.append(
            f"| {names.get(r['run'], r['run'])} | `{r['model']}` | {r['images']:,} | {r['images_per_s']:,.1f} "
            f"| {r['first_batch_s']:.2f} s ({r.get('batch', '?')}) | {r['peak_rss_mb']:,} MB | {workers} |"
        )
    return "\n".join(
        [
            *lines,
            "",
            f"Measured by `{record['command']}` on {record['machine']} (torch {record['torch']}), "
            f"{record['date']}, {r['threads']} threads; each run in its own process, into an empty store.",
        ]
    )


def device_checks(folder: Path = PRETRAINED) -> str:
    """Each saved ``tools.device_check`` run (``device_check_*.json``): agreement with the CPU, batch-1 latency and
    batched throughput against the dense network on that device, and the host reads of one batched forward."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("device_check_*.json"))]
    lines = []
    for run in runs:
        lines += [
            f"Measured by `{run['command']}` on {run['device_name']} (torch {run['torch']}), {run['date']}; "
            f"batch-1 over {run['singles']} images, throughput at batch {run['rows'][0]['batch']}, "
            f"ratios against the dense network in the same form, alternately in one run." + memory_formats(run["rows"]),
            "",
            "| model | agreement with the CPU (batched / batch 1) | batch-1 latency (ms) | dense (ms) | ratio "
            "| throughput (img/s) | dense (img/s) | ratio | host reads per batch | synchronisations reported |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in run["rows"]:
            syncs = "-" if r.get("device_syncs") is None else str(r["device_syncs"])
            lines.append(
                f"| `{r['model']}` | {r['agreement']:.4f} / {r['batch1_agreement']:.4f} | {r['latency_ms']:.2f} "
                f"| {r['latency_dense_ms']:.2f} | {r['latency_ms'] / r['latency_dense_ms']:.3f} "
                f"| {r['throughput']:,.0f} | {r['throughput_dense']:,.0f} "
                f"| {r['throughput'] / r['throughput_dense']:.3f} | {r['host_reads']} | {syncs} |"
            )
        lines.append("")
    if not any(run["device"].startswith("cuda") for run in runs):
        lines.append(
            "_No GPU run recorded yet: on a machine with a GPU, `python -m tools.device_check --device cuda --save "
            "models/pretrained/device_check_cuda.json`, then `python -m routescope.analysis.results --update`._"
        )
    return "\n".join(lines).strip()


def saved_rows_table(path: Path, flag: str, header: list[str], cells: Callable[[dict], list[str]]) -> str:
    """The rows ``python -m tools.bench FLAG --save PATH`` saved, one table row of ``cells(row)`` each, under their
    command, machine and date."""
    record = saved_bench(path)
    if record is None:
        return f"_Not measured yet: `python -m tools.bench {flag} --save models/pretrained/{path.name}`._"
    lines = [bench_source(record), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells(r)) + " |" for r in record["rows"]])


def plans_table(folder: Path = PRETRAINED) -> str:
    """``tools.bench --plans``: batched throughput with the measured plans against the reference plans."""
    header = [
        "model",
        "batch",
        "plans chosen (layers)",
        "throughput (img/s)",
        "reference plans",
        "time ratio (interval)",
    ]
    return saved_rows_table(
        folder / "bench_plans.json",
        "--plans",
        header,
        lambda r: [
            f"`{r['model']}`",
            str(r["batch"]),
            ", ".join(f"{plan} ({n})" for plan, n in r["plans"].items()),
            f"{r['throughput']:,.0f}",
            f"{r['throughput_ref']:,.0f}",
            f"{r['time_ratio']:.3f} ({r['time_ratio_low']:.3f}-{r['time_ratio_high']:.3f})",
        ],
    )


def formats_table(folder: Path = PRETRAINED) -> str:
    """``tools.bench --formats``: each inference-form option's batch-1 latency against the training form."""
    return saved_rows_table(
        folder / "bench_formats.json",
        "--formats",
        ["model", "form", "batch-1 latency (ms)", "training form (ms)", "ratio"],
        lambda r: [
            f"`{r['model']}`",
            r["option"],
            f"{r['latency_ms']:.2f}",
            f"{r['train_form_ms']:.2f}",
            f"{r['ratio']:.3f}",
        ],
    )


def speed_block(arg: str, folder: Path) -> str:
    """``speed:targets``, ``speed:batched``, ``speed:gpu``, ``speed:plans``, ``speed:formats``, else the rows of
    ``bench[_ARG].json``."""
    if arg == "targets":
        return speed_targets(folder)
    if arg == "batched":
        return batched_targets(folder)
    if arg == "gpu":
        return gpu_targets(folder)
    if arg == "plans":
        return plans_table(folder)
    if arg == "formats":
        return formats_table(folder)
    return speed_table(folder / f"bench{'_' + arg if arg else ''}.json")


def block_text(key: str, folder: Path = PRETRAINED) -> str:
    """The generated text of one block: ``results``, ``featured``, ``speed`` (``bench.json``), ``speed:paper``
    (``bench_paper.json``), ``speed:targets``, ``speed:batched``, ``device-check``, ``seeds``,
    ``variants:NAME``, ``comparison:NAME``, from the manifest and benchmarks in ``folder``."""
    kind, _, arg = key.partition(":")
    manifest = folder / "manifest.json"
    makers = {
        "results": lambda: results_table(manifest),
        "featured": lambda: featured_table(manifest),
        "seeds": lambda: seeds_section(folder),
        "variants": lambda: variants_table(arg, manifest),
        "models": lambda: models_table(arg.split(","), manifest),
        "frontier": lambda: frontier_table(arg.split(","), manifest),
        "comparison": lambda: comparison_table(arg, folder),
        "table-bench": lambda: table_bench(folder / "table_bench.json"),
        "device-check": lambda: device_checks(folder),
        "speed": lambda: speed_block(arg, folder),
    }
    if kind not in makers:
        raise ValueError(f"unknown generated block {key!r}")
    return makers[kind]()


BLOCK = re.compile(r"<!-- generated:(?P<key>[^ ]+) -->\n(?P<body>.*?)\n?<!-- /generated:(?P=key) -->", re.S)
DOCUMENTS = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("**/*.md")))


def regenerate(text: str, folder: Path = PRETRAINED) -> str:
    return BLOCK.sub(
        lambda m: f"<!-- generated:{m['key']} -->\n{block_text(m['key'], folder)}\n<!-- /generated:{m['key']} -->", text
    )


def stale_blocks(documents=DOCUMENTS, folder: Path = PRETRAINED) -> list[str]:
    """``FILE: block`` for every generated block whose text is not what its generator gives now."""
    out = []
    for path in documents:
        for match in BLOCK.finditer(path.read_text()):
            if match.group("body").strip("\n") != block_text(match.group("key"), folder):
                out.append(f"{path.name}: {match.group('key')}")
    return out


def update_documents(documents=DOCUMENTS, folder: Path = PRETRAINED) -> list[Path]:
    """Rewrite every generated block of the README and docs/; returns the files that changed."""
    changed = []
    for path in documents:
        text = path.read_text()
        new = regenerate(text, folder)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.results", description=__doc__.split("\n")[0])
    p.add_argument(
        "--update",
        "--update-readme",
        action="store_true",
        dest="update",
        help="rewrite every generated block of README.md and docs/",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if any generated block is stale")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print("run: python -m analysis.results --update", file=sys.stderr)
        return 1 if stale else 0
    if args.update:
        for path in update_documents():
            print(f"updated {path}")
        return 0
    print(results_table())
    print()
    print(speed_table())
    print()
    print(seeds_section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
