"""Evaluation CLI: ``python -m models.evaluate --checkpoint P [--dataset D] [--write]``.

Prints test accuracy and the mean/min/max MACs each test image really executed (from the per-image
trace), plus the dense backbone's MACs. ``--write`` stores them in the checkpoint's meta and in the
manifest beside it, which is how the bundled models' numbers are produced (another data set's, e.g. the
bundled subset's, under ``metrics["datasets"]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from . import checkpoint as ckpt
from .data import DataNotFoundError, load_dataset
from .devices import add_device_argument, resolve_device
from .errors import UsageError
from .evaluation import evaluate
from .loading import add_model_arguments, model_from_arguments
from .manifest import write_manifest_entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument(
        "--dataset",
        default=None,
        help="default: the checkpoint's data set (fashion-mnist-subset for the bundled subset)",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test images only")
    p.add_argument("--write", action="store_true", help="store the metrics in the checkpoint meta and manifest.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        model = model_from_arguments(args, map_location=resolve_device(args.device))
        if args.write and not (args.checkpoint and Path(args.checkpoint).is_file()):
            raise UsageError("--write stores the metrics in a checkpoint file: name one with --checkpoint")
        dataset = args.dataset or model.meta.get("dataset")
        if not dataset:
            raise UsageError(f"{args.checkpoint}: its meta names no data set: pass --dataset")
        if dataset == "folder":
            raise UsageError(
                "a plain folder of images has no labels, so no accuracy: its routing and cost are in "
                "python -m analysis.table --dataset folder --data-dir DIR"
            )
        data, info = load_dataset(dataset, "test", args.data_dir)
        if list(info.input_size) != list(model.meta["input_size"]):
            raise UsageError(
                f"{dataset} images are {info.input_size}, the model expects {tuple(model.meta['input_size'])}"
            )
        metrics = evaluate(model, data, info, args.limit)
    except (DataNotFoundError, UsageError) as e:  # CheckpointError is a UsageError; anything else is a bug: traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics))
    else:
        name = Path(args.checkpoint).name if args.checkpoint else model.meta["name"]
        print(f"{name} on {dataset} test ({metrics['n_test']} images): accuracy {metrics['test_acc'] * 100:.2f}%")
        print(
            f"MACs per image: mean {metrics['macs_mean']:,} min {metrics['macs_min']:,} max {metrics['macs_max']:,} "
            f"(dense backbone {metrics['macs_full']:,}, ratio {metrics['mac_ratio']:.3f}); params {metrics['params']:,}"
        )
    if args.write:
        if args.limit:
            print("error: --write needs a whole test set, not --limit", file=sys.stderr)
            return 2
        write_metrics(Path(args.checkpoint), metrics, None if dataset == model.meta["dataset"] else dataset)
    return 0


def write_metrics(path: Path, metrics: dict, dataset: str | None = None) -> None:
    """Update the checkpoint's meta["metrics"] (keeping training-time entries) and the manifest beside it; the
    metrics of another test set (e.g. the bundled subset the tests use) go under ``metrics["datasets"][name]``."""
    payload = ckpt.read_checkpoint(path)
    model = ckpt.build_from_payload(payload, str(path))
    meta = payload["meta"]
    old = meta.get("metrics", {})
    if dataset is None:
        meta["metrics"] = {**old, **metrics}
    else:
        meta["metrics"] = {**old, "datasets": {**old.get("datasets", {}), dataset: metrics}}
    ckpt.save_checkpoint(path, model, meta)
    write_manifest_entry(
        path.parent / "manifest.json",
        meta["name"],
        {"file": path.name, "metrics": metrics if dataset is None else meta["metrics"]},
    )


if __name__ == "__main__":
    sys.exit(main())
