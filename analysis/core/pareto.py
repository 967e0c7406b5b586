"""Accuracy vs compute of every checkpoint, and the Pareto front over methods (the view no paper offers).

Read from each checkpoint's meta (``metrics`` written by ``models.evaluate`` at the end of training), without
building the models, so the app's Results page and the overview figure show the same numbers as the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from routescope.analysis.core.catalog import read_checkpoints

COLUMNS = ("name", "method", "arch", "dataset", "test_acc", "macs_mean", "mac_ratio", "params", "n_test")


def models_frame(paths: Iterable[Path], on_error: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per evaluated checkpoint; unreadable files raise, or go to ``on_error`` (the app shows them)."""
    rows = []
    for path, payload in read_checkpoints(paths, on_error):
        meta, metrics = payload["meta"], payload["meta"].get("metrics") or {}
        if "test_acc" not in metrics or "macs_mean" not in metrics:
            continue  # never evaluated (a hand-made or interrupted checkpoint): nothing to place
        rows.append(
            {
                "name": meta.get("name", Path(path).stem),
                "method": meta.get("method"),
                "arch": payload["arch"],
                "dataset": meta.get("dataset"),
                "test_acc": float(metrics["test_acc"]),
                "macs_mean": float(metrics["macs_mean"]),
                "mac_ratio": metrics.get("mac_ratio"),
                "params": metrics.get("params"),
                "n_test": metrics.get("n_test"),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats on both axes (at most the MACs and at least the accuracy, one strictly),
    sorted by MACs; compare only models evaluated on the same data set."""
    ordered = frame.sort_values(["macs_mean", "test_acc"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, accuracy in ordered["test_acc"].items():
        if accuracy > best:
            keep.append(index)
            best = accuracy
    return ordered.loc[keep]
