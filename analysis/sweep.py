"""Budget-knob sweeps: ``python -m analysis.sweep --checkpoint P --knob NAME --values V1,V2,... [--dataset D] [--json]``.

For each value of one inference setting (``model.knobs()``: SkipNet's gate threshold, the early-exit
confidence threshold, DS-Net's width bias), the accuracy and the mean/min/max MACs each test image really
executed, on the same images. The model is never changed: the value travels in the trace of each call.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

import pandas as pd
import torch
from torch.utils.data import TensorDataset
from tqdm import tqdm

from analysis.core.table import load_test_images
from models.checkpoint import CheckpointError, load_checkpoint
from models.data import DataNotFoundError
from models.devices import add_device_argument, model_device, resolve_device
from models.evaluate import accuracy_and_macs
from models.trace import check_interventions


def knob_sweep(model: torch.nn.Module, knob: str, values: Sequence[float], images: torch.Tensor, labels: torch.Tensor,
               progress: Callable[[float], None] | None = None, bar: bool = False) -> pd.DataFrame:
    """One row per value: ``value, accuracy, macs_mean, macs_min, macs_max``; ``progress(fraction)`` after each."""
    for value in values:
        check_interventions(model, None, {knob: value})
    data = TensorDataset(images, labels)
    device = model_device(model)
    rows = []
    for i, value in enumerate(tqdm(values, desc=f"sweep {knob}", disable=not bar)):
        correct, macs = accuracy_and_macs(model, data, model.meta["mean"], model.meta["std"], device, progress=False,
                                          knobs={knob: float(value)})
        rows.append({"value": float(value), "accuracy": correct.float().mean().item(), "macs_mean": macs.mean().item(),
                     "macs_min": macs.min().item(), "macs_max": macs.max().item()})
        if progress is not None:
            progress((i + 1) / len(values))
    return pd.DataFrame(rows, columns=["value", "accuracy", "macs_mean", "macs_min", "macs_max"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--knob", required=True, help="an inference setting of the model (see --list)")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 0.3,0.5,0.7")
    p.add_argument("--dataset", default="fashion-mnist-subset", choices=["fashion-mnist", "fashion-mnist-subset"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print a JSON list of {value, accuracy, macs_mean, macs_min, macs_max}")
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        values = [float(v) for v in args.values.split(",") if v.strip()]
        model = load_checkpoint(args.checkpoint, map_location=resolve_device(args.device))
        images, labels = load_test_images(args.dataset, args.data_dir)
        table = knob_sweep(model, args.knob, values, images, labels, bar=True)
    except (CheckpointError, DataNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{k: (round(v, 6) if k == "accuracy" else v) for k, v in row.items()} for row in table.to_dict("records")]))
    else:
        print(f"{model.meta['name']}: {args.knob} over {len(images):,} {args.dataset} images "
              f"(trained value {model.knobs()[args.knob]['default']:g})")
        print(table.assign(accuracy=table["accuracy"] * 100).to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
