"""The README's results table, generated from ``models/pretrained/manifest.json`` (never typed by hand).

``python -m analysis.results`` prints the table; ``--update-readme`` rewrites the block between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers of README.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.core.catalog import PRETRAINED, bundled_checkpoints
from analysis.experiments import display_table, markdown_table, seeds_table
from models.data import REPO_ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"
# Replicated experiments: the seed-0 run is bundled, seeds 1+ live in models/pretrained/experiments/<name>/
# (paths relative to the models folder; each folder's manifest.json holds every run's command)
SEED_EXPERIMENTS = {
    "RePr vs standard training (ConvNet: 20 epochs; ResNet-20: 5 epochs; no augmentation)":
        ("experiments/repr_fmnist", "convnet3_fmnist.pt", "repr_convnet3_fmnist.pt"),
    "CondConv vs the same-budget ResNet-20 (4 epochs from the bundled ResNet-20)":
        ("experiments/condconv_fmnist", "condconv_resnet20_fmnist.pt", "resnet20_fmnist_ft4.pt"),
    "SkipNet alpha 0.75, 6 anchored fine-tuning epochs distilled from the ResNet-20 (lr 0.05)":
        ("experiments/skipnet_fmnist", "skipnet_resnet20_fmnist_a0.75_fta6kd.pt"),
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
        parts.append(f"**{title}** (`python -m analysis.experiments {sources} --markdown`)\n\n"
                     f"{markdown_table(display_table(seeds_table(paths)))}")
    return "\n\n".join(parts) or "_No replicated experiments yet._"


def results_table(manifest_path: Path = PRETRAINED / "manifest.json") -> str:
    manifest = json.loads(manifest_path.read_text())
    lines = [
        "| model | test accuracy | mean MACs / image | of dense | min - max MACs | params | training wall time | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in sorted(manifest.items()):
        m = entry["metrics"]
        lines.append(
            f"| `{name}` | {m['test_acc'] * 100:.2f}% ({m['n_test']:,} images) | {m['macs_mean'] / 1e6:.2f} M | "
            f"{m['mac_ratio'] * 100:.0f}% | {m['macs_min'] / 1e6:.2f} - {m['macs_max'] / 1e6:.2f} M | {m['params']:,} | "
            f"{entry['wall_time_s'] / 60:.0f} min ({entry['machine']}, {entry['date']}) | `{entry['command']}` |"
        )
        for label, v in m.get("variants", {}).items():  # e.g. DS-Net's static widths, same images
            lines.append(f"| &nbsp;&nbsp;`{name}`, {label} | {v['test_acc'] * 100:.2f}% | {v['macs_mean'] / 1e6:.2f} M | "
                         f"{v['mac_ratio'] * 100:.0f}% | | | | |")
    return "\n".join(lines)


SPEED_COLUMNS = ("model", "vs", "mac_ratio", "latency_ms", "latency_ref_ms", "latency_ratio", "batch", "throughput",
                 "throughput_ref", "throughput_ratio")


def saved_bench(bench_path: Path) -> dict | None:
    """The record ``python -m analysis.bench --save`` wrote (rows plus command, machine, torch, date), or None."""
    return json.loads(bench_path.read_text()) if bench_path.exists() else None


def bench_source(record: dict) -> str:
    return (f"Measured by `{record['command']}` on {record['machine']} (torch {record['torch']}), {record['date']}; "
            "ratios are model / reference, measured alternately in one run.")


def speed_table(bench_path: Path = PRETRAINED / "bench.json") -> str:
    """The benchmark rows saved by ``python -m analysis.bench --save``, with their command, machine and date."""
    record = saved_bench(bench_path)
    if record is None:
        return "_No benchmark saved yet: run `python -m analysis.bench --save models/pretrained/bench.json`._"
    lines = [
        bench_source(record),
        "",
        "| model | vs | MAC ratio | batch-1 latency (ms) | reference (ms) | latency ratio | batch | throughput (img/s) | reference | throughput ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(f"| `{r['model']}` | {r['vs']} | {r['mac_ratio']:.3f} | {r['latency_ms']:.2f} | {r['latency_ref_ms']:.2f} | "
                     f"{r['latency_ratio']:.3f} | {r.get('batch', '')} | {r['throughput']:.0f} | {r['throughput_ref']:.0f} | {r['throughput_ratio']:.3f} |")
    return "\n".join(lines)


def update_readme(readme: Path = REPO_ROOT / "README.md", manifest_path: Path = PRETRAINED / "manifest.json") -> None:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    bench = manifest_path.parent / "bench.json"
    readme.write_text(f"{head}{START}\n{results_table(manifest_path)}\n\n### Speed\n\n{speed_table(bench)}\n\n"
                      f"### Seeds\n\n{seeds_section(manifest_path.parent)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args(argv)
    if args.update_readme:
        update_readme()
    print(results_table())
    print()
    print(speed_table())
    print()
    print(seeds_section())


if __name__ == "__main__":
    main()
