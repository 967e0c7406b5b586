"""Dataset-level view of a dynamic model: one row per test image with its class, prediction, cost, decisions
and routing pattern (``pattern``: the concatenated signatures of its decisions, for models that decide).

Everything the Compare page and the figures show (easy vs hard images, per-class cost, per-layer skip
ratios, width distributions, mean routing per class) is a pandas operation on this table.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader

from routescope.analysis.core.kinds import decision_columns, routing_pattern
from routescope.models.data import collate_batch, load_dataset, normalize
from routescope.models.trace import traced_forward


@torch.no_grad()
def table_rows(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: list[int] | range,
    knobs: dict | None = None,
) -> list[dict]:
    """One traced batch (uint8 N x C x H x W) as table rows; label -1: an unlabelled image (no ``correct``)."""
    meta = model.meta
    classes = meta["classes"]
    logits, trace = traced_forward(model, normalize(images, meta["mean"], meta["std"]), knobs=knobs)
    confidence, predicted = logits.softmax(1).max(1)
    decided = trace.decided_macs  # a masking plug-in's: what its decisions say should have run
    pixels = images.float().flatten(1) / 255
    rows = []
    for i, index in enumerate(indices):
        label = int(labels[i])
        rows.append(
            {
                "index": int(index),
                "label": label,
                "class": classes[label] if label >= 0 else None,
                "predicted": classes[int(predicted[i])],
                "correct": int(predicted[i]) == label if label >= 0 else None,
                "confidence": float(confidence[i]),
                "macs": float(trace.macs[i]),
                **({} if decided is None else {"macs_decided": float(decided[i])}),
                "brightness": float(pixels[i].mean()),
                "contrast": float(pixels[i].std()),
                **decision_columns(trace.decisions[i]),
                **({"pattern": routing_pattern(trace.decisions[i])} if trace.decisions[i] else {}),
            }
        )
    return rows


def as_table(rows: list[dict], classes) -> pd.DataFrame:
    """Rows as the table every analysis reads: indexed by image, ``class`` categorical in the model's order."""
    table = pd.DataFrame(rows).set_index("index")
    table["class"] = pd.Categorical(table["class"], categories=list(classes))
    if table["correct"].isna().any():  # unlabelled images: accuracy over the labelled ones only
        table["correct"] = table["correct"].astype("boolean")
    return table


def dataset_table(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 250,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Trace every image (uint8, N x C x H x W, held in memory) in batches; ``progress(fraction)`` after each
    batch. A test set on disk streams through ``analysis.core.table_store.build_table`` instead."""
    rows = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        rows += table_rows(model, images[start:stop], labels[start:stop], range(start, stop))
        if progress is not None:
            progress(min(1.0, stop / len(images)))
    return as_table(rows, model.meta["classes"])


def load_test_images(
    dataset: str = "fashion-mnist-subset", data_dir=None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All test images of a data set as one uint8 tensor (the bundled subset by default)."""
    data, _ = load_dataset(dataset, "test", data_dir)
    images, labels = next(iter(DataLoader(data, batch_size=limit or len(data), collate_fn=collate_batch)))
    return images, labels


def easy_and_hard(table: pd.DataFrame, k: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` images that executed the fewest MACs (easy) and the most (hard); ties broken by confidence."""
    ordered = table.sort_values(["macs", "confidence"], ascending=[True, False])
    return ordered.head(k), ordered.tail(k).iloc[::-1]


def per_class_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max MACs and accuracy per class."""
    return table.groupby("class", observed=False).agg(
        images=("macs", "size"),
        macs_mean=("macs", "mean"),
        macs_min=("macs", "min"),
        macs_max=("macs", "max"),
        accuracy=("correct", "mean"),
    )


def layer_columns(table: pd.DataFrame, field: str) -> list[str]:
    """Columns ``layer/field`` in network order, e.g. ``layer_columns(t, "executed")``."""
    return [c for c in table.columns if c.endswith(f"/{field}")]
