"""Speed benchmarks: ``python -m tools.bench [--checkpoint P ...] [--json]``.

For each model, every comparison it offers (``model.benchmark_references()``: e.g. SkipNet's true skipping
vs masking, DS-Net's widths, DGConv's export vs its dense masked form; by default the dense backbone)
is measured in one run on the same test images, alternating the two sides round by round so that the
machine's noise hits both: median batch-1 latency per image, batched throughput, and the MAC ratio.
Numbers are printed, never asserted: the machine is shared and noisy.

``--image-size S`` upsamples the test images to S x S first (the ResNets are fully convolutional): at
28 x 28 a batch-1 forward on a CPU is mostly per-operator overhead, which a narrower or skipped layer does
not remove, so this shows how the latency ratios move once the convolutions themselves dominate.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from routescope.analysis.core.catalog import bundled_checkpoints, featured, read_checkpoints
from routescope.analysis.core.kinds import kind_view
from routescope.models.host_sync import alternating
from routescope.analysis.core.table import dataset_table, load_test_images
from routescope.analysis.core.testsets import add_test_set_arguments, open_test_set, test_set_of
from routescope.models import create_model, list_models
from routescope.models.checkpoint import load_checkpoint
from routescope.models.cost import count_macs
from routescope.models.data import DataNotFoundError, normalize
from routescope.models.devices import add_device_argument, model_device, resolve_device
from routescope.models.errors import UsageError
from routescope.models.inference import fast_form
from routescope.models.protocol import RouteScopeModel, RunsCompiled
from routescope.models.layers.plans import MeasuredPlans, reference_plans
from routescope.models.memory_format import FORMATS, set_memory_format
from routescope.models.trace import PerRow, check_interventions, forced_forward, traced_forward

Forward = Callable[[torch.Tensor], torch.Tensor]


def comparisons(model: RouteScopeModel) -> dict[str, Forward | tuple[Forward, Forward]]:
    """What to time the model against: first the dense network of its family in the same inference form (what a
    user would run instead); a static model against itself (the noise of the run); then the model's declared
    references (masked execution, static subnets)."""
    counterpart = model.dense_counterpart()
    out: dict = {DENSE: counterpart.eval()} if counterpart is not None else {SAME: copy.deepcopy(model)}
    out.update({label: ref for label, ref in model.benchmark_references().items() if label != "dense backbone"})
    return out


@torch.no_grad()
def mean_macs(forward: Forward, images: torch.Tensor) -> float:
    """Mean MACs per image over batch-1 forwards (FlopCounterMode, 2 FLOPs per MAC)."""
    total = 0
    for i in range(len(images)):
        with FlopCounterMode(display=False) as counter:
            forward(images[i : i + 1])
        total += counter.get_total_flops() // 2
    return total / len(images)


def batch_one_pass(forward: Forward, inputs: Sequence[torch.Tensor]) -> Callable[[], None]:
    """One timed side: ``forward`` on each batch-1 input in turn, through ``forced_forward`` (the path the app's
    latency times too: the model's own batch-1 control flow and compiled kernels, nothing recorded)."""

    def run() -> None:
        for x in inputs:
            forced_forward(forward, x, checked=True)

    return run


def medians(times: list[list[float]]) -> list[float]:
    return [statistics.median(t) for t in times]


def ratio_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """The spread of the per-round ratios a/b (rounds timed alternately): their interquartile range, or the range
    of fewer than four rounds; what decides whether a target is met or within the noise."""
    ratios = sorted(x / y for x, y in zip(a, b))
    if len(ratios) < 4:
        return ratios[0], ratios[-1]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


@torch.no_grad()
def paired_timing(
    a: Forward, b: Forward, images: torch.Tensor, batch: int, rounds: int
) -> tuple[float, float, float, float, tuple[float, float]]:
    """(a, b) median seconds per image at batch 1, (a, b) images/s at ``batch``, and the batch-1 ratio's interval,
    measured alternately (all batch-1 rounds first, so the big batches do not flush the caches between them)."""
    big = (
        images[:batch]
        if len(images) >= batch
        else images.repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch]
    )
    singles = [images[i : i + 1] for i in range(min(len(images), 64))]
    for forward in (a, b):  # warm-up
        forward(singles[0]), forward(big)
    times_a, times_b = alternating([batch_one_pass(a, singles), batch_one_pass(b, singles)], rounds, images.device)
    lat_a, lat_b = medians([times_a, times_b])
    big_a, big_b = medians(alternating([lambda: a(big), lambda: b(big)], rounds, images.device))
    interval = ratio_interval(times_a, times_b)
    return lat_a / len(singles), lat_b / len(singles), len(big) / big_a, len(big) / big_b, interval


def machine_name(device: torch.device) -> str:
    """What the numbers were measured on: the CPU, or the GPU's name."""
    cpu = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    return f"{torch.cuda.get_device_name(device)} ({cpu})" if device.type == "cuda" else cpu


DEFAULT_BATCH = 256
DENSE, SAME = "dense network, same form", "itself (noise)"


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size`` x ``size`` (bilinear), still uint8 so ``normalize`` applies as usual."""
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def bench_model(model: RouteScopeModel, images: torch.Tensor, batch: int | None = None, rounds: int = 6) -> list[dict]:
    """One row per comparison of ``model`` with one of its references.

    Throughput is measured at ``batch`` if given, else at the model's own ``benchmark_batch`` (CondConv: 64,
    the batch its issue compares at), else at ``DEFAULT_BATCH``.
    """
    batch = batch or model.benchmark_batch or DEFAULT_BATCH
    x = normalize(images, model.meta["mean"], model.meta["std"]).to(model_device(model))
    rows = []
    metrics = model.meta.get("metrics", {})
    for label, reference in comparisons(model).items():
        # a reference is a forward to compare the model with, or a (subject, reference) pair of its own
        # (DS-Net: narrowest vs widest static subnet); the accuracy column is the model's only for the model
        subject, reference = reference if isinstance(reference, tuple) else (model, reference)
        macs_model, macs_ref = mean_macs(subject, x), mean_macs(reference, x)
        lat_model, lat_ref, thr_model, thr_ref, (low, high) = paired_timing(subject, reference, x, batch, rounds)
        rows.append(
            {
                "model": model.meta["name"],
                "method": model.meta["method"],
                "vs": label,
                "test_acc": metrics.get("test_acc") if subject is model else None,
                "macs_mean": macs_model,
                "macs_ref": macs_ref,
                "mac_ratio": macs_model / macs_ref,
                "latency_ms": lat_model * 1e3,
                "latency_ref_ms": lat_ref * 1e3,
                "latency_ratio": lat_model / lat_ref,
                "latency_ratio_low": low,
                "latency_ratio_high": high,
                "throughput": thr_model,
                "throughput_ref": thr_ref,
                "throughput_ratio": thr_model / thr_ref,
                "batch": batch,
                "images": len(images),
                "image_size": images.shape[-1],
                "threads": torch.get_num_threads(),
                "memory_formats": formats_of(subject, reference),
            }
        )
    return rows


def formats_of(*forwards: Forward) -> list[str | None]:
    """The memory format each side's weights run in (``models.memory_format``; None: a forward of another model's)."""
    return [getattr(f, "memory_format", None) for f in forwards]


# the networks of ``--scale paper``: the CIFAR ResNet-110 of the SkipNet and SDN papers and the ImageNet ResNet-50
# (SkipNet's and DS-Net's ImageNet backbone), each with its input side and the bundled model's builder options that
# do not carry over (ResNet-50 has its own widths)
PAPER_NETS = {"resnet110": (32, ()), "resnet50": (224, ("widths",))}


def flagships(paths: list[Path]) -> dict[str, Path]:
    """Per dynamic method its featured flagship (``featured.json``; CondConv's costs more MACs than dense, and is
    still its method's flagship), else the most accurate checkpoint that saves compute (mean MACs < 90% of dense)."""
    chosen = {method: entry["flagship"] for method, entry in featured().items()}
    best: dict[str, tuple[float, Path]] = {}
    for path, payload in read_checkpoints(paths):
        meta = payload["meta"]
        metrics = meta.get("metrics", {})
        if chosen.get(meta.get("method")) == path.stem:
            best[meta["method"]] = (math.inf, path)
        if meta.get("method") == "baseline" or metrics.get("mac_ratio", 1.0) >= 0.9:
            continue
        if metrics.get("test_acc", 0) > best.get(meta["method"], (-1.0, None))[0]:
            best[meta["method"]] = (metrics["test_acc"], path)
    return {method: path for method, (_, path) in best.items()}


@torch.no_grad()
def paper_scale_row(
    bundled: torch.nn.Module,
    net: str = "resnet110",
    images: int = 16,
    rounds: int = 6,
    seed: int = 0,
    size: int | None = None,
    device: torch.device | str = "cpu",
    target: torch.nn.Module | None = None,
    batch: int = 0,
) -> dict | None:
    """``bundled``'s method on ``net`` (``PAPER_NETS``) at ``size`` x ``size`` x 3 with random weights, its decisions
    forced to the rates ``bundled`` shows on the bundled test subset (each kind's ``KindView.force_like``), timed at
    batch 1 against the dense ``net`` in the same form, alternately. ``target``: time this model (a converted
    checkpoint, in its fast form) instead of a random-weight ``net``. ``batch``: also the throughput of batches of
    that many images, each image forced to decisions of its own (``PerRow``), against the dense ``net`` on the same
    batch. None if no kind of the method can be forced or the method has no ``net``."""
    side, layout_keys = PAPER_NETS[net]
    size = size or (target.meta["input_size"][-1] if target is not None else side)
    table = dataset_table(bundled, *load_test_images())
    views = [kind_view(k) for k in sorted(set(bundled.decision_layers().values()))]
    views = [v for v in views if v is not None and v.force_like is not None]
    if not views:  # a method with no per-image decision to force (RePr, DGConv)
        return None
    arch = bundled.arch.replace(f"resnet{bundled.depth}", net) if target is None else target.arch
    if target is None and (arch == bundled.arch or arch not in list_models()):
        return None
    config = {k: v for k, v in bundled.arch_config.items() if k not in ("num_classes", "in_chans", *layout_keys)}
    torch.manual_seed(seed)
    label = f"{arch} at {size}x{size} (random weights, decisions of {bundled.meta['name']})"
    converted = target is not None
    if converted:
        label = f"{target.meta['name']} at {size}x{size} (converted, decisions of {bundled.meta['name']})"
    else:
        target = fast_form(create_model(arch, num_classes=10, in_chans=3, **config).to(device).eval(), (3, size, size))
    dense = target.dense_counterpart()
    reference = getattr(dense, "arch", target.arch) if converted else net  # a converted model's own dense network
    samplers = [v.force_like(table, bundled, target) for v in views]
    rng = np.random.default_rng(seed)
    xs = [torch.randn(1, 3, size, size).to(device) for _ in range(images)]
    overrides = [{layer: fields for sample in samplers for layer, fields in sample(rng).items()} for _ in xs]
    macs = [float(traced_forward(target, x, overrides=o)[1].macs[0]) for x, o in zip(xs, overrides)]
    dense_macs = count_macs(dense, xs[0])
    overrides = [check_interventions(target, o, None)[0] for o in overrides]  # checked once, not in the timed loop

    def subject() -> None:
        for x, o in zip(xs, overrides):
            forced_forward(target, x, o, checked=True)

    for x, o in zip(xs[:2], overrides):  # warm-up
        forced_forward(target, x, o, checked=True), dense(x)
    times = alternating([subject, batch_one_pass(dense, xs)], rounds, device)
    batched = batched_forced_throughput(target, dense, samplers, rng, batch, size, rounds, device) if batch else {}
    return {
        "model": label,
        "method": bundled.meta["method"],
        "vs": f"dense {reference}, same form",
        "memory_formats": formats_of(target, dense),
        "test_acc": None,
        "macs_mean": statistics.mean(macs),
        "macs_ref": dense_macs,
        "mac_ratio": statistics.mean(macs) / dense_macs,
        **timed_fields(*times, len(xs), size, batched),
    }


def timed_fields(times: list[float], times_ref: list[float], images: int, size: int, batched: dict) -> dict:
    """A paper-scale row's timing columns: batch-1 latencies from the alternating rounds' seconds per pass over
    ``images`` images of ``size`` x ``size``, their ratio's interval, and the batched columns (``batched``) if any."""
    latency, latency_ref = (t / images for t in medians([times, times_ref]))
    low, high = ratio_interval(times, times_ref)
    return {
        "latency_ms": latency * 1e3,
        "latency_ref_ms": latency_ref * 1e3,
        "latency_ratio": latency / latency_ref,
        "latency_ratio_low": low,
        "latency_ratio_high": high,
        "throughput": None,
        "throughput_ref": None,
        "throughput_ratio": None,
        "batch": 1,
        **batched,
        "images": images,
        "image_size": size,
        "threads": torch.get_num_threads(),
    }


def paper_dense(net: str, size: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The dense ``net`` of ``PAPER_NETS`` with random weights (seed 0) in its fast form at ``size`` x ``size`` x 3."""
    torch.manual_seed(0)
    return fast_form(create_model(net, num_classes=10, in_chans=3).to(device).eval(), (3, size, size))


@torch.no_grad()
def noise_row(
    dense: torch.nn.Module,
    label: str,
    size: int,
    images: int = 16,
    rounds: int = 6,
    device: torch.device | str = "cpu",
    batch: int = 0,
) -> dict:
    """A paper-scale run's dense network timed against a copy of itself, as the rows beside it are timed (batch 1 on
    random images and, with ``batch``, batched): the noise of the run, which says where its targets are measurable."""
    twin = copy.deepcopy(dense)
    xs = [torch.randn(1, 3, size, size).to(device) for _ in range(images)]
    sides = [batch_one_pass(dense, xs), batch_one_pass(twin, xs)]
    for side in sides:  # warm-up
        side()
    times = alternating(sides, rounds, device)
    batched = {}
    if batch:
        x = torch.randn(batch, 3, size, size).to(device)
        dense(x), twin(x)
        batched = throughput_fields(batch, *alternating([lambda: dense(x), lambda: twin(x)], rounds, device), 1.0)
    macs = count_macs(dense, xs[0])
    return {
        "model": label,
        "method": "baseline",
        "vs": SAME,
        "memory_formats": formats_of(dense, twin),
        "test_acc": None,
        "macs_mean": macs,
        "macs_ref": macs,
        "mac_ratio": 1.0,
        **timed_fields(*times, len(xs), size, batched),
    }


@torch.no_grad()
def batched_forced_throughput(
    target: torch.nn.Module,
    dense: torch.nn.Module,
    samplers: list[Callable],
    rng: np.random.Generator,
    batch: int,
    size: int,
    rounds: int,
    device: torch.device | str,
) -> dict:
    """Images per second of ``target`` on a batch of random images, each forced to decisions drawn for it, and of
    ``dense`` on the same batch, alternately; with the batch's own MAC ratio and the interval of the time ratio."""
    x = torch.randn(batch, 3, size, size).to(device)
    drawn = [{layer: fields for sample in samplers for layer, fields in sample(rng).items()} for _ in range(batch)]
    overrides = check_interventions(target, PerRow.combine(drawn), None)[0]
    macs = float(traced_forward(target, x, overrides=overrides)[1].macs.mean())
    forward = lambda: forced_forward(target, x, overrides, checked=True)  # noqa: E731
    forward(), dense(x)  # warm-up
    times, times_ref = alternating([forward, lambda: dense(x)], rounds, device)
    return throughput_fields(batch, times, times_ref, macs / count_macs(dense, x[:1]))


def throughput_fields(batch: int, times: list[float], times_ref: list[float], mac_ratio: float) -> dict:
    """A row's batched columns from the alternating rounds' seconds per batch of each side."""
    seconds, seconds_ref = medians([times, times_ref])
    low, high = ratio_interval(times, times_ref)
    return {
        "batch": batch,
        "throughput": batch / seconds,
        "throughput_ref": batch / seconds_ref,
        "throughput_ratio": seconds_ref / seconds,
        "throughput_time_ratio_low": low,
        "throughput_time_ratio_high": high,
        "throughput_mac_ratio": mac_ratio,
    }


@torch.no_grad()
def plan_rows(path: Path, images: torch.Tensor, batch: int, rounds: int, device: torch.device) -> list[dict]:
    """Batched throughput of a model whose layers run the plans measured fastest (``models.layers.plans``: DGConv's
    exported convs, CondConv's chunks) against the same model running every layer's reference plan, alternately;
    [] for a model without such layers."""
    model = load_checkpoint(path, map_location=device)
    layers = [m for m in model.modules() if isinstance(getattr(m, "plans", None), MeasuredPlans)]
    if not layers:
        return []
    x = normalize(images, model.meta["mean"], model.meta["std"])
    x = x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch].to(device)

    def reference() -> None:
        with reference_plans():
            model(x)

    with torch.inference_mode():
        model(x), reference()  # the first call measures each layer's plans for this shape
        times, times_ref = alternating([lambda: model(x), reference], rounds, device)
    chosen = Counter(plan for m in layers for (_, _, batch, *_), plan in m.plans.chosen.items() if batch == len(x))
    seconds, seconds_ref = medians([times, times_ref])
    low, high = ratio_interval(times, times_ref)
    return [
        {
            "model": model.meta["name"],
            "batch": len(x),
            "plans": dict(sorted(chosen.items())),
            "throughput": len(x) / seconds,
            "throughput_ref": len(x) / seconds_ref,
            "time_ratio": seconds / seconds_ref,
            "time_ratio_low": low,
            "time_ratio_high": high,
        }
    ]


@torch.no_grad()
def profile_table(model: torch.nn.Module, images: torch.Tensor, rows: int = 15) -> str:
    """``torch.profiler`` over batch-1 forwards of the model and of its dense counterpart: operators by self CPU
    time (where the time goes when the latency ratio does not follow the MAC ratio)."""
    from torch.profiler import ProfilerActivity, profile

    x = normalize(images, model.meta["mean"], model.meta["std"])
    out = []
    for label, forward in {
        "model": model,
        **{k: v for k, v in comparisons(model).items() if k in (DENSE, SAME)},
    }.items():
        for i in range(min(4, len(x))):
            forward(x[i : i + 1])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(len(x)):
                forward(x[i : i + 1])
        out.append(
            f"{label} ({len(x)} batch-1 forwards):\n"
            + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        )
    return "\n".join(out)


@torch.no_grad()
def form_rows(path: Path, images: torch.Tensor, rounds: int) -> list[dict]:
    """The inference-form options measured on one checkpoint at batch 1, each against the training form."""
    train = load_checkpoint(path, form="train")
    fast = load_checkpoint(path)
    x = normalize(images, train.meta["mean"], train.meta["std"])
    operators_only = copy.deepcopy(fast)
    for module in operators_only.modules():
        if isinstance(module, RunsCompiled) and module.compiled:
            module.compiled = False  # the compiled batch-1 kernels off (models.layers.fused)
    options = {
        f"fast form (measured: {fast.memory_format})": fast,
        **{f"fast form, {name}": set_memory_format(copy.deepcopy(fast), name) for name in FORMATS},
        "fast form, no compiled kernels": operators_only,
    }
    rows = []
    for label, forward in options.items():
        latency, latency_ref = _paired(forward, train, x, rounds)
        rows.append(
            {
                "model": train.meta["name"],
                "option": label,
                "latency_ms": latency * 1e3,
                "train_form_ms": latency_ref * 1e3,
                "ratio": latency / latency_ref,
            }
        )
    return rows


def _paired(a: Forward, b: Forward, x: torch.Tensor, rounds: int) -> tuple[float, float]:
    """Batch-1 medians of ``a`` and ``b`` over the images of ``x``, alternately."""
    singles = [x[i : i + 1] for i in range(min(len(x), 64))]
    a(singles[0]), b(singles[0])  # warm-up
    sides = [batch_one_pass(a, singles), batch_one_pass(b, singles)]
    return tuple(t / len(singles) for t in medians(alternating(sides, rounds)))  # type: ignore[return-value]


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'model':<30} {'vs':<30} {'acc':>6} {'MACs':>8} {'MAC ratio':>9} {'b1 ms':>7} {'ref ms':>7} "
        f"{'lat ratio':>9} {'batch':>5} {'img/s':>8} {'ref img/s':>9} {'thr ratio':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        acc = f"{r['test_acc'] * 100:.2f}" if r["test_acc"] is not None else "-"
        lines.append(
            f"{r['model']:<30} {r['vs']:<30} {acc:>6} {r['macs_mean'] / 1e6:>7.2f}M {r['mac_ratio']:>9.3f} "
            f"{r['latency_ms']:>7.2f} {r['latency_ref_ms']:>7.2f} {r['latency_ratio']:>9.3f} {r['batch']:>5} "
            + (
                f"{r['throughput']:>8.0f} {r['throughput_ref']:>9.0f} {r['throughput_ratio']:>9.3f}"
                if r["throughput"] is not None
                else f"{'-':>8} {'-':>9} {'-':>9}"
            )
        )
    return "\n".join(lines)


def save_record(path: Path, rows: list[dict], device: torch.device, argv: list[str] | None) -> None:
    """The rows with the date, machine, torch and command (what ``analysis.results`` generates the docs from)."""
    record = {
        "date": dt.date.today().isoformat(),
        "machine": machine_name(device),
        "torch": torch.__version__,
        "command": "python -m tools.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", default=[], help="benchmark these (default: every bundled model)")
    p.add_argument("--images", type=int, default=64, help="how many test images (a fixed random pick)")
    add_test_set_arguments(p)
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"throughput batch (default: the model's benchmark_batch, else {DEFAULT_BATCH})",
    )
    p.add_argument("--rounds", type=int, default=6, help="alternating timing rounds (ABBA order; even is balanced)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="upsample the test images to S x S (default: the data set's 28 x 28); with --scale paper, "
        "the random inputs' size (default: 32 for ResNet-110, 224 for ResNet-50)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="print a torch.profiler breakdown of batch-1 forwards of this model and its dense counterpart",
    )
    p.add_argument(
        "--formats",
        action="store_true",
        help="time the inference-form options (fast form, channels_last) against the training form",
    )
    p.add_argument(
        "--scale",
        choices=["bundled", "paper"],
        default="bundled",
        help="paper: each method's flagship decisions forced onto random-weight paper-size networks "
        "(CIFAR ResNet-110 at 32x32x3, ImageNet ResNet-50 at 224x224x3)",
    )
    p.add_argument(
        "--paper-net",
        action="append",
        choices=list(PAPER_NETS),
        default=None,
        help="with --scale paper: only this network (repeatable; default: all)",
    )
    p.add_argument(
        "--converted",
        action="append",
        type=Path,
        default=[],
        metavar="CHECKPOINT",
        help="with --scale paper: time this converted checkpoint (models.convert) with its method's flagship decision "
        "rates forced, against its dense network",
    )
    p.add_argument(
        "--paper-batch",
        type=int,
        default=0,
        metavar="N",
        help="with --scale paper: also time batches of N images, each forced to decisions of its own, against the "
        "dense network on the same batch (0: batch 1 only)",
    )
    p.add_argument(
        "--plans",
        action="store_true",
        help="batched throughput with each layer's measured plan against every layer's reference plan "
        "(models with such layers: DGConv, CondConv)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="JSON",
        help=(
            "also write the rows with the machine and date (the README's speed table reads "
            "models/pretrained/bench.json)"
        ),
    )
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(c) for c in args.checkpoint] or list(bundled_checkpoints().values())

    def images_of(model: torch.nn.Module) -> torch.Tensor:
        """``--images`` of the model's test set (``--dataset``; its default), as it takes them: a fixed pick."""
        test = open_test_set(test_set_of(args, model.meta), model.meta)
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.images]
        images = torch.stack([test[int(i)][0] for i in pick])
        return upsample(images, args.image_size) if args.image_size else images

    if args.profile:
        model = load_checkpoint(args.profile)
        print(profile_table(model, images_of(model)))
        return 0
    if args.plans:
        rows = [
            row
            for path in paths
            for row in plan_rows(
                path, images_of(load_checkpoint(path)), args.batch or DEFAULT_BATCH, args.rounds, device
            )
        ]
        for r in rows:
            print(
                f"{r['model']:<38} batch {r['batch']}: {r['throughput']:.0f} img/s with {r['plans']} vs "
                f"{r['throughput_ref']:.0f} with the reference plans: time ratio {r['time_ratio']:.3f} "
                f"({r['time_ratio_low']:.3f}-{r['time_ratio_high']:.3f})"
            )
        if args.save:
            save_record(args.save, rows, device, argv)
        return 0
    if args.formats:
        rows = [row for path in paths for row in form_rows(path, images_of(load_checkpoint(path)), args.rounds)]
        print(
            json.dumps(rows, indent=2)
            if args.json
            else "\n".join(
                f"{r['model']:<45} {r['option']:<26} {r['latency_ms']:6.2f} ms "
                f"vs training form {r['train_form_ms']:6.2f} ms "
                f"= {r['ratio']:.3f}"
                for r in rows
            )
        )
        if args.save:
            save_record(args.save, rows, device, argv)
        return 0
    rows = []
    try:
        images = min(args.images, 16)  # random images per paper-scale row, each forced to its own decisions
        if args.scale == "paper" and args.converted:
            chosen = flagships(paths)
            for path in args.converted:
                target = load_checkpoint(path, map_location=device)
                bundled = load_checkpoint(chosen[target.meta["method"]], map_location=device)
                row = paper_scale_row(bundled, "resnet110", images, args.rounds, device=device, target=target)
                rows += [row] if row is not None else []
                size = target.meta["input_size"][-1]
                dense = target.dense_counterpart()
                label = (
                    f"{getattr(dense, 'arch', target.arch)} at {size}x{size} (dense network of {target.meta['name']})"
                )
                rows.append(noise_row(dense, label, size, images, args.rounds, device))
        elif args.scale == "paper":
            for net in args.paper_net or PAPER_NETS:
                for path in flagships(paths).values():
                    row = paper_scale_row(
                        load_checkpoint(path, map_location=device),
                        net,
                        images=images,
                        rounds=args.rounds,
                        size=args.image_size,
                        device=device,
                        batch=args.paper_batch,
                    )
                    rows += [row] if row is not None else []
                size = args.image_size or PAPER_NETS[net][0]
                dense = paper_dense(net, size, device)
                label = f"{net} at {size}x{size} (random weights)"
                rows.append(noise_row(dense, label, size, images, args.rounds, device, args.paper_batch))
        else:
            for path in paths:
                model = load_checkpoint(path, map_location=device)
                rows += bench_model(model, images_of(model), args.batch, args.rounds)
    except (UsageError, DataNotFoundError) as e:  # a checkpoint or a test set that is not there or does not fit
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.save:
        save_record(args.save, rows, device, argv)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        print(
            f"\n{args.images} test images of {args.dataset or 'each model’s default test set'}"
            f"{f' at {args.image_size} x {args.image_size}' if args.image_size else ''}, "
            f"throughput batch {args.batch or 'per row'}, {args.rounds} alternating rounds, "
            f"{torch.get_num_threads()} threads, "
            f"torch {torch.__version__}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
