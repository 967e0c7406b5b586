"""How fast and how lean the per-image table is built: ``python -m tools.table_bench [--photos 2000] [--json]``.

Two runs of ``analysis.core.table_store.build_parts`` into a fresh store, each in its own process (so its peak
resident memory is its own): the 10,000 Fashion-MNIST test images through the DS-Net flagship, and an ImageFolder
of 224x224 JPEGs (random crops of the bundled sample photos, made in a temporary folder) through the ResNet-50
DS-Net (random weights, fast form). Prints images per second, the time to the first traced batch (the first rows
the app shows under its progress bar, in the batch size the app uses) and the peak resident memory, with the
DataLoader workers' own peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
FLAGSHIP = REPO / "models" / "pretrained" / "dsnet_resnet20_fmnist_grid4_hw6_long.pt"
PHOTOS = ("photo-bag.png", "photo-dress.webp", "photo-sneaker.jpg")


def make_photos(folder: Path, count: int, side: int = 224, seed: int = 0) -> None:
    """``count`` JPEGs of ``side`` x ``side`` (random crops of the sample photos, resized) in one class folder each."""
    rng = random.Random(seed)
    sources = [Image.open(REPO / "models" / "assets" / "samples" / name).convert("RGB") for name in PHOTOS]
    for i in range(count):
        source = sources[i % len(sources)]
        crop = rng.randint(min(source.size) // 2, min(source.size))
        left, top = rng.randint(0, source.width - crop), rng.randint(0, source.height - crop)
        image = source.crop((left, top, left + crop, top + crop)).resize((side, side), Image.BICUBIC)
        target = folder / PHOTOS[i % len(PHOTOS)].split("-")[1].split(".")[0]
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{i:05d}.jpg", quality=90)


def run_one(kind: str, data_dir: str | None, workers: int, store: str) -> dict:
    """One build in this process: ``kind`` is ``fmnist`` or ``photos``."""
    import torch

    from routescope.analysis.core.table_store import batch_size_for, build_parts, table_path
    from routescope.analysis.core.testsets import TestSet, open_test_set
    from routescope.models import create_model, load_checkpoint
    from routescope.models.data import IMAGENET_MEAN, IMAGENET_STD
    from routescope.models.inference import fast_form

    if kind == "fmnist":
        model = load_checkpoint(FLAGSHIP)
        images = open_test_set(TestSet("fashion-mnist", data_dir), model.meta)
    else:
        model = fast_form(create_model("dsnet_resnet50", num_classes=3).eval(), (3, 224, 224))
        model.meta = {
            "name": "dsnet_resnet50 (random weights)",
            "classes": ["bag", "dress", "sneaker"],
            "input_size": [3, 224, 224],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "crop_pct": 1.0,
        }
        images = open_test_set(TestSet("imagefolder", data_dir), model.meta)
    out = table_path(model, images, root=Path(store))
    batch = batch_size_for(images)  # what the app and analysis.table use
    first: list[float] = []
    start = time.perf_counter()
    traced = build_parts(
        model,
        images,
        out,
        batch_size=batch,
        workers=workers,
        progress=lambda p: first.append(time.perf_counter() - start) if not first else None,
    )
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "run": kind,
        "model": model.meta["name"],
        "images": traced,
        "seconds": round(seconds, 1),
        "images_per_s": round(traced / seconds, 1),
        "first_batch_s": round(first[0], 2),
        "batch": batch,
        "peak_rss_mb": round(own),
        "peak_worker_rss_mb": round(children),
        "workers": workers,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.table_bench", description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=2000, help="224x224 JPEGs for the ImageFolder run (0: skip it)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the JPEGs")
    p.add_argument("--data-dir", default=os.environ.get("ROUTESCOPE_DATA"), help="where Fashion-MNIST is")
    p.add_argument("--json", action="store_true")
    p.add_argument("--save", type=Path, help="also write the rows with command, machine and date (for docs/data.md)")
    p.add_argument("--one", choices=["fmnist", "photos"], help=argparse.SUPPRESS)  # a child run
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.data_dir, args.workers if args.one == "photos" else 0, args.store)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("fmnist", args.data_dir)]
        if args.photos:
            make_photos(Path(tmp) / "photos" / "val", args.photos)
            runs.append(("photos", str(Path(tmp) / "photos")))
        for kind, data_dir in runs:
            command = [
                sys.executable,
                "-m",
                "tools.table_bench",
                "--one",
                kind,
                "--store",
                str(Path(tmp) / "store"),
                "--workers",
                str(args.workers),
            ] + (["--data-dir", data_dir] if data_dir else [])
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.save:
        import datetime as dt
        import platform

        import torch

        record = {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "torch": torch.__version__,
            "command": "python -m tools.table_bench " + " ".join(argv or sys.argv[1:]),
            "rows": rows,
        }
        args.save.write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['run']:<7} {r['model']:<40} {r['images']:>6} images {r['images_per_s']:>8.1f} img/s, first batch "
                f"{r['first_batch_s']:.2f} s, peak RSS {r['peak_rss_mb']} MB (workers {r['peak_worker_rss_mb']} MB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
