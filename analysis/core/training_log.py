"""Training logs: the ``NAME.metrics.jsonl`` files ``models.train`` writes beside its checkpoints (one JSON line
per finished epoch: the Trainer's history row)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

SUFFIX = ".metrics.jsonl"


class MetricsError(ValueError):
    """A metrics file that is missing or is not JSON lines of epoch rows."""


def metrics_files(roots: Iterable[Path]) -> list[Path]:
    """Every ``**/*.metrics.jsonl`` under ``roots``, the most recently written first (a live run on top)."""
    found = {p.resolve(): p for root in roots if Path(root).is_dir() for p in Path(root).glob(f"**/*{SUFFIX}")}
    return sorted(found.values(), key=lambda p: (-p.stat().st_mtime, str(p)))


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The epoch rows of a metrics file; a last line still being written is left out, any other bad line is an
    error (``MetricsError``)."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"no metrics file {path}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path}: unreadable ({e})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the line of the epoch being appended right now
            raise MetricsError(f"{path}: line {number} is not JSON") from None
        if not isinstance(row, dict) or not {"stage", "train_loss", "test_acc"} <= set(row):
            raise MetricsError(f"{path}: line {number} is not an epoch row (stage, train_loss, test_acc, ...)")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty and "global_epoch" not in frame:
        frame["global_epoch"] = range(len(frame))
    return frame
