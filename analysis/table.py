"""The per-image table of a model on a test set, as Parquet:
``python -m analysis.table --checkpoint P [--dataset D --data-dir DIR] [--out T.parquet] [--knob NAME=VALUE]``.

Streams the images from disk in batches (``--workers`` decode an ImageFolder in parallel), with a tqdm bar; each
chunk is stored as it is traced, so running the same command again after a kill resumes where it stopped, and a
finished table is reused (``analysis.core.table_store``; ``--out`` also copies it there). Under
``torchrun --nproc_per_node N -m analysis.table ...`` the chunks are shared out over the processes (gloo on the
CPU, nccl with ``--device cuda``) and the first process merges them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from routescope.analysis.core.interventions import parse_interventions
from routescope.analysis.core.table_store import build_parts, merge_parts, table_path
from routescope.analysis.core.testsets import add_test_set_arguments, open_test_set, test_set_of
from routescope.models.data import DataNotFoundError
from routescope.models.devices import add_device_argument, resolve_device
from routescope.models.loading import add_model_arguments, model_from_arguments
from routescope.models.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.table", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    add_test_set_arguments(p)
    p.add_argument("--out", help="also write the table here (Parquet)")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE", help="an inference setting")
    p.add_argument("--batch-size", type=int, default=None, help="default: about 2M input values (256 images of 28x28)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding images")
    p.add_argument(
        "--store", help="where tables are stored (default: $ROUTESCOPE_CACHE/tables or ~/.cache/routescope/tables)"
    )
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    args = p.parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    try:
        device = resolve_device(args.device)
        if world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        model = model_from_arguments(args, map_location=device)
        _, knobs = parse_interventions([], args.knob)
        test_set = test_set_of(args, model.meta)
        images = open_test_set(test_set, model.meta)
        out = table_path(model, images, knobs, Path(args.store) if args.store else None)
        start = time.perf_counter()
        if not out.exists():
            with tqdm(total=len(images), disable=args.no_progress or rank != 0, unit="img") as bar:
                build_parts(
                    model,
                    images,
                    out,
                    knobs,
                    args.batch_size,
                    args.workers,
                    rank=rank,
                    world=world,
                    progress=lambda state: bar.update(state.done * world - bar.n) if rank == 0 else None,
                )
            if world > 1:
                dist.barrier()
        if rank == 0:
            table = merge_parts(model, images, out) if not out.exists() else None
            rows = len(table) if table is not None else len(images)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out, args.out)
            print(
                f"{rows} images of {images.fingerprint} ({test_set.label}) in "
                f"{time.perf_counter() - start:.1f} s: {args.out or out}"
            )
    except (DataNotFoundError, UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
