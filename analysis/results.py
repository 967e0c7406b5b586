"""The README's results table, generated from ``models/pretrained/manifest.json`` (never typed by hand).

``python -m analysis.results`` prints the table; ``--update-readme`` rewrites the block between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers of README.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.catalog import PRETRAINED
from models.data import REPO_ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"


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


def speed_table(bench_path: Path = PRETRAINED / "bench.json") -> str:
    """The benchmark rows saved by ``python -m analysis.bench --save``, with their command, machine and date."""
    if not bench_path.exists():
        return "_No benchmark saved yet: run `python -m analysis.bench --save models/pretrained/bench.json`._"
    record = json.loads(bench_path.read_text())
    lines = [
        f"Measured by `{record['command']}` on {record['machine']} (torch {record['torch']}), {record['date']}; "
        "ratios are model / reference, measured alternately in one run.",
        "",
        "| model | vs | MAC ratio | batch-1 latency (ms) | reference (ms) | latency ratio | batch throughput (img/s) | reference | throughput ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(f"| `{r['model']}` | {r['vs']} | {r['mac_ratio']:.3f} | {r['latency_ms']:.2f} | {r['latency_ref_ms']:.2f} | "
                     f"{r['latency_ratio']:.3f} | {r['throughput']:.0f} | {r['throughput_ref']:.0f} | {r['throughput_ratio']:.3f} |")
    return "\n".join(lines)


def update_readme(readme: Path = REPO_ROOT / "README.md", manifest_path: Path = PRETRAINED / "manifest.json") -> None:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    bench = manifest_path.parent / "bench.json"
    readme.write_text(f"{head}{START}\n{results_table(manifest_path)}\n\n### Speed\n\n{speed_table(bench)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args(argv)
    if args.update_readme:
        update_readme()
    print(results_table())
    print()
    print(speed_table())


if __name__ == "__main__":
    main()
