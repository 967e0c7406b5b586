"""Does RouteScope give the same results on this device? ``python -m tools.device_check [--device cuda]``.

Every featured flagship (and the dense ResNet they are measured against) is loaded on the CPU and on the device.
On the same test images it compares, batched and at batch 1: the predictions (agreement), the decisions and the
mean MACs each image really executed; then it times the model against its dense counterpart on the device (batch-1
latency through the app's and the bench's timing path, batched throughput), alternately in one run, and counts the
host reads of one batched forward (``models.host_sync.HostReads``; on CUDA also the synchronisations PyTorch
reports). A decision whose gate sits on its threshold may flip with float rounding, so agreement is reported, not
required to be 1; the exit status is non-zero when agreement falls below ``--min-agreement`` or the mean MACs differ
by more than 1%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import warnings
from pathlib import Path

import torch

from routescope.analysis.core.catalog import bundled_checkpoints, featured
from routescope.analysis.core.latency import dense_counterpart, paired_latency
from routescope.analysis.core.table import dataset_table, load_test_images
from routescope.models.checkpoint import CheckpointError, load_checkpoint
from routescope.models.data import normalize
from routescope.models.devices import add_device_argument, model_device, resolve_device
from routescope.models.errors import UsageError
from routescope.models.host_sync import HostReads, alternating
from routescope.models.trace import forced_forward
from tools.bench import formats_of, machine_name


def flagship_names() -> list[str]:
    """Each method's featured flagship, then the dense network of their family (``resnet20_fmnist``) if bundled."""
    names = [entry["flagship"] for entry in featured().values()]
    return names + [n for n in ("resnet20_fmnist",) if n in bundled_checkpoints() and n not in names]


def compare_tables(cpu, dev) -> dict:
    """Agreement of two per-image tables of the same images: predictions, routing patterns, MACs."""
    out = {
        "agreement": float((cpu["predicted"] == dev["predicted"]).mean()),
        "macs_cpu": float(cpu["macs"].mean()),
        "macs_device": float(dev["macs"].mean()),
    }
    out["macs_rel_diff"] = abs(out["macs_device"] - out["macs_cpu"]) / out["macs_cpu"]
    if "pattern" in cpu:
        out["same_decisions"] = float((cpu["pattern"] == dev["pattern"]).mean())
    return out


@torch.no_grad()
def batch_one_agreement(cpu_model, dev_model, x: torch.Tensor) -> float:
    """Share of images whose batch-1 fast-path prediction (compiled kernels on the CPU, the PyTorch path on the
    device) agrees between CPU and device."""
    device = model_device(dev_model)
    same = [
        int(forced_forward(cpu_model, x[i : i + 1]).argmax())
        == int(forced_forward(dev_model, x[i : i + 1].to(device)).argmax())
        for i in range(len(x))
    ]
    return sum(same) / len(same)


@torch.no_grad()
def throughput(model, dense, x: torch.Tensor, rounds: int, device: torch.device) -> tuple[float, float]:
    """Images per second of ``model`` and ``dense`` on the batch ``x``, alternately."""
    model(x), dense(x)  # warm-up
    a, b = (statistics.median(t) for t in alternating([lambda: model(x), lambda: dense(x)], rounds, device))
    return len(x) / a, len(x) / b


@torch.no_grad()
def host_reads(model, x: torch.Tensor) -> tuple[int, int | None]:
    """Reads of device values by the host in one batched forward (``HostReads``, any device) and, on CUDA, the
    synchronising operations PyTorch itself reports (``torch.cuda.set_sync_debug_mode``)."""
    with torch.inference_mode(), HostReads() as reads:
        model(x)
    if x.device.type != "cuda":
        return reads.total, None
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return reads.total, sum("synchroniz" in str(w.message) for w in caught)


def check(
    name: str,
    path: Path,
    device: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    singles: int,
    rounds: int,
) -> dict:
    cpu_model, dev_model = load_checkpoint(path), load_checkpoint(path, map_location=device)
    row = {
        "model": name,
        "method": cpu_model.meta["method"],
        **compare_tables(dataset_table(cpu_model, images, labels), dataset_table(dev_model, images, labels)),
    }
    x = normalize(images, cpu_model.meta["mean"], cpu_model.meta["std"])
    row["batch1_agreement"] = batch_one_agreement(cpu_model, dev_model, x[:singles])
    dense = dense_counterpart(dev_model)
    dense = dev_model if dense is None else dense.eval()
    ms, ms_dense = [], []
    for i in range(min(singles, 8)):
        model_latency, dense_latency = paired_latency(dev_model, dense, x[i : i + 1], rounds=rounds)
        ms.append(model_latency.median_ms)
        ms_dense.append(dense_latency.median_ms)
    row["latency_ms"], row["latency_dense_ms"] = statistics.median(ms), statistics.median(ms_dense)
    big = x[:batch].to(device) if len(x) >= batch else x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch].to(device)
    row["throughput"], row["throughput_dense"] = throughput(dev_model, dense, big, rounds, device)
    row["batch"] = len(big)
    row["host_reads"], row["device_syncs"] = host_reads(dev_model, big)
    row["memory_formats"] = formats_of(dev_model, dense)  # measured on the device
    return row


def format_rows(rows: list[dict]) -> str:
    header = (
        f"{'model':<38} {'agree':>6} {'b1 agree':>8} {'same dec':>8} {'MACs cpu':>9} {'MACs dev':>9} "
        f"{'b1 ms':>7} {'dense ms':>8} {'img/s':>9} {'dense img/s':>11} {'reads':>5} {'syncs':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        same = f"{r['same_decisions']:.4f}" if "same_decisions" in r else "-"
        lines.append(
            f"{r['model']:<38} {r['agreement']:>6.4f} {r['batch1_agreement']:>8.4f} {same:>8} "
            f"{r['macs_cpu'] / 1e6:>8.2f}M {r['macs_device'] / 1e6:>8.2f}M {r['latency_ms']:>7.2f} "
            f"{r['latency_dense_ms']:>8.2f} {r['throughput']:>9.0f} {r['throughput_dense']:>11.0f} "
            f"{r['host_reads']:>5} {'-' if r['device_syncs'] is None else r['device_syncs']:>5}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.device_check", description=__doc__.split("\n")[0])
    add_device_argument(p)
    p.add_argument("--checkpoint", action="append", default=[], help="check these (default: the featured flagships)")
    p.add_argument("--dataset", default="fashion-mnist-subset", help="test images (default: the bundled 500)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch", type=int, default=256, help="batch size of the throughput measurement")
    p.add_argument("--singles", type=int, default=64, help="images checked at batch 1")
    p.add_argument("--rounds", type=int, default=10, help="alternating timing rounds")
    p.add_argument("--min-agreement", type=float, default=0.998)
    p.add_argument("--save", type=Path, default=None, metavar="JSON", help="also write the rows with the device's name")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
        images, labels = load_test_images(args.dataset, args.data_dir)
        paths = {Path(c).stem: Path(c) for c in args.checkpoint} or {
            n: bundled_checkpoints()[n] for n in flagship_names()
        }
        name = machine_name(device)
        print(f"device: {device} = {name}; {len(images)} {args.dataset} images; torch {torch.__version__}", flush=True)
        rows = []
        for model_name, path in paths.items():
            rows.append(check(model_name, path, device, images, labels, args.batch, args.singles, args.rounds))
            print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    except (CheckpointError, UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + format_rows(rows))
    if args.save:
        args.save.write_text(
            json.dumps(
                {
                    "device": str(device),
                    "device_name": name,
                    "torch": torch.__version__,
                    "date": dt.date.today().isoformat(),
                    "command": "python -m tools.device_check " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "singles": args.singles,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    bad = [
        r["model"]
        for r in rows
        if min(r["agreement"], r["batch1_agreement"]) < args.min_agreement or r["macs_rel_diff"] > 0.01
    ]
    if bad:
        print(f"differs from the CPU beyond float rounding: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
