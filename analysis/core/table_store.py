"""Per-image tables of any size, built once: streamed from disk in batches, stored as Parquet, resumed, sharded.

A table is keyed by what decides its rows: the model's weights and config (``model_fingerprint``), the test set's
files (``ModelImages.fingerprint``) and the knobs. It is built in chunks of images; each chunk is written as its
own Parquet part as soon as it is traced, so a build that was killed resumes at the first missing chunk, and
under ``torchrun`` every process traces the chunks of its rank and the first merges the parts. Memory stays
bounded by one chunk of rows and one batch of images (``DataLoader`` workers decode an ImageFolder lazily).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from routescope.analysis.core.table import as_table, table_rows
from routescope.analysis.core.testsets import ModelImages
from routescope.models.data import collate_batch

CHUNK = 2048  # images per Parquet part: what a killed build loses at most, and the rows held in memory
LAYOUT = 1  # the rows' layout: raise it when a table's columns or their meaning change, so old tables are not read


def cache_root() -> Path:
    """Where stored tables live: ``$ROUTESCOPE_CACHE/tables``, else ``~/.cache/routescope/tables``."""
    base = os.environ.get("ROUTESCOPE_CACHE") or Path.home() / ".cache" / "routescope"
    return Path(base) / "tables"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the architecture, its config, every weight and buffer, and what the table reads from the meta
    (classes, input size, normalization, crop): kept on the model after the first call (a loaded model's weights
    and meta do not change)."""
    cached = getattr(model, "_routescope_fingerprint", None)
    if cached:
        return cached
    meta = getattr(model, "meta", {})
    reads = {k: meta.get(k) for k in ("classes", "input_size", "mean", "std", "crop_pct", "dark_background")}
    identity = [getattr(model, "arch", type(model).__name__), getattr(model, "config", {}), reads]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()[:16]
    object.__setattr__(model, "_routescope_fingerprint", value)
    return value


def knobs_key(knobs: dict | None) -> str:
    return "default" if not knobs else "_".join(f"{k}={float(v):g}" for k, v in sorted(knobs.items()))


def table_path(
    model: torch.nn.Module, images: ModelImages, knobs: dict | None = None, root: Path | None = None
) -> Path:
    """Where the table of ``model`` on ``images`` with ``knobs`` is stored."""
    folder = (root or cache_root()) / f"v{LAYOUT}" / model_fingerprint(model) / images.fingerprint
    return folder / f"{knobs_key(knobs)}.parquet"


@dataclass
class Progress:
    """What a progress display needs: images done of the total, the seconds so far (for an ETA), and the rows of
    the batch just traced (a display can show the first rows while the rest are traced)."""

    done: int
    total: int
    seconds: float
    rows: tuple = ()

    @property
    def eta_s(self) -> float | None:
        return self.seconds / self.done * (self.total - self.done) if self.done else None


BATCH_PIXELS = 1 << 21  # values per batch: 256 Fashion-MNIST images, 13 ImageNet-sized ones


def batch_size_for(images: ModelImages) -> int:
    """A batch of about ``BATCH_PIXELS`` input values (a power of two, 8 to 256): large inputs give their first rows,
    and memory back, sooner."""
    values = math.prod(images.shape)
    return max(8, min(256, 1 << max(0, (BATCH_PIXELS // values).bit_length() - 1)))


def _chunks(total: int, chunk: int) -> list[range]:
    return [range(start, min(start + chunk, total)) for start in range(0, total, chunk)]


def _part(parts: Path, number: int) -> Path:
    return parts / f"part-{number:06d}.parquet"


def _write_atomic(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp)
    os.replace(tmp, path)


def build_parts(
    model: torch.nn.Module,
    images: ModelImages,
    out: Path,
    knobs: dict | None = None,
    batch_size: int | None = None,
    workers: int = 0,
    chunk: int = CHUNK,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[Progress], None] | None = None,
) -> int:
    """Trace the chunks of ``rank`` (every ``world``-th) that have no part yet into ``OUT.parts/``, in batches of
    ``batch_size`` (default ``batch_size_for``); returns how many images this call traced (0: nothing was left)."""
    batch_size = batch_size or batch_size_for(images)
    parts = out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    mine = [(n, r) for n, r in enumerate(_chunks(len(images), chunk)) if n % world == rank]
    todo = [(n, r) for n, r in mine if not _part(parts, n).exists()]
    total = sum(len(r) for _, r in mine)
    done, traced, start = total - sum(len(r) for _, r in todo), 0, time.perf_counter()
    for number, indices in todo:
        loader = DataLoader(
            Subset(images, indices), batch_size=batch_size, num_workers=workers, collate_fn=collate_batch
        )
        rows, position = [], indices.start
        for batch, labels in loader:
            latest = table_rows(model, batch, labels, range(position, position + len(batch)), knobs)
            rows += latest
            position += len(batch)
            done += len(batch)
            traced += len(batch)
            if progress is not None:
                progress(Progress(done, total, time.perf_counter() - start, tuple(latest)))
        _write_atomic(as_table(rows, model.meta["classes"]), _part(parts, number))
    return traced


def merge_parts(model: torch.nn.Module, images: ModelImages, out: Path, chunk: int = CHUNK) -> pd.DataFrame:
    """The parts of every chunk as one table, written to ``out`` (the parts are then removed)."""
    parts = out.with_suffix(".parts")
    numbers = range(len(_chunks(len(images), chunk)))
    missing = [n for n in numbers if not _part(parts, n).exists()]
    if missing:
        raise RuntimeError(f"{out}: {len(missing)} of {len(numbers)} parts are missing (a build is unfinished)")
    table = pd.concat([pd.read_parquet(_part(parts, n)) for n in numbers])
    table["class"] = pd.Categorical(table["class"].astype(object), categories=list(model.meta["classes"]))
    _write_atomic(table, out)
    shutil.rmtree(parts, ignore_errors=True)
    return table


def stored_frame(
    model: torch.nn.Module, images: ModelImages, what: str, make: Callable[[], pd.DataFrame], root: Path | None = None
) -> pd.DataFrame:
    """Any other data-set level result of ``model`` on ``images`` (a static-width table, a threshold sweep), made by
    ``make()`` once and stored beside its tables under the name ``what``."""
    out = table_path(model, images, root=root).with_name(f"{what}.parquet")
    if out.exists():
        return pd.read_parquet(out)
    frame = make()
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(frame, out)
    return frame


def stored_table(
    model: torch.nn.Module,
    images: ModelImages,
    knobs: dict | None = None,
    root: Path | None = None,
    batch_size: int | None = None,
    workers: int = 0,
    progress: Callable[[Progress], None] | None = None,
    chunk: int = CHUNK,
) -> pd.DataFrame:
    """The table of ``model`` on ``images``: read from the store, or built (resuming a killed build) and stored."""
    out = table_path(model, images, knobs, root)
    if out.exists():
        return pd.read_parquet(out)
    build_parts(model, images, out, knobs, batch_size, workers, chunk, progress=progress)
    return merge_parts(model, images, out, chunk)
