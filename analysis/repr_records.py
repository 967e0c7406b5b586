"""What a RePr checkpoint says about its own training, as plain data: the accuracy curves with the phase of
every epoch, the spans trained as a sub-network, the filters each cycle dropped, the ranking that chose
them, and the inter-filter overlap matrices of a model's convs.

The figures in ``figures_repr`` only draw these, so tests can check the numbers without reading pixels.
Everything here reads ``model.meta["history"]`` as ``models.train.Trainer`` writes it (one row per epoch,
RePr rows carrying ``repr_phase``, ``repr_event``, ``repr_test_acc_before`` and, on each re-init,
``repr_cycle_record``; see ``models.repr``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch.nn as nn

from models.checkpoint import training_args
from models.filter_overlap import overlap_matrix
from models.repr import REPR_DEFAULTS, filter_layers, prunable_layers, repr_record

CURVE_COLUMNS = ("epoch", "train_acc", "test_acc", "phase", "event", "test_acc_before_event")


def accuracy_curves(history: list[dict]) -> pd.DataFrame:
    """One row per trained epoch; ``epoch`` counts epochs completed (1-based), where the row's accuracy was measured.

    ``test_acc_before_event`` is the test accuracy just before the drop or re-init at the end of that
    epoch (its ``test_acc`` is measured after it), so a figure can show the jump an event causes.
    """
    rows = [{"epoch": row.get("global_epoch", i) + 1, "train_acc": row.get("train_acc"), "test_acc": row.get("test_acc"),
             "phase": row.get("repr_phase"), "event": row.get("repr_event"),
             "test_acc_before_event": row.get("repr_test_acc_before")} for i, row in enumerate(history)]
    curves = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    for column in ("train_acc", "test_acc", "test_acc_before_event"):
        curves[column] = pd.to_numeric(curves[column], errors="coerce")
    for column in ("phase", "event"):  # None, not NaN, where an epoch has none
        curves[column] = curves[column].astype(object).where(curves[column].notna(), None)
    return curves


def pruned_spans(history: list[dict]) -> list[tuple[int, int]]:
    """Runs of consecutive epochs trained as a sub-network, as (start, end) on the completed-epochs axis.

    Epoch ``e`` (0-based) trains between ``e`` and ``e + 1`` epochs completed, so pruned epochs 4 and 5
    give the span (4, 6).
    """
    spans: list[list[int]] = []
    for epoch in sorted(repr_record(history)["pruned_epochs"]):
        if spans and spans[-1][1] == epoch:
            spans[-1][1] = epoch + 1
        else:
            spans.append([epoch, epoch + 1])
    return [(start, end) for start, end in spans]


def cycle_records(history: list[dict]) -> list[dict]:
    """The finished prune / re-init cycles, in order (``models.repr.repr_record``)."""
    return repr_record(history)["cycles"]


def dropped_grid(cycles: list[dict]) -> dict[str, np.ndarray]:
    """Per prunable layer, in network order, a (cycles, filters) bool grid: True where that cycle dropped that filter.

    A layer's filter count comes from the record's per-filter ``overlap_before`` scores, which cover every
    prunable layer (also those a cycle took nothing from).
    """
    sizes: dict[str, int] = {}
    for record in cycles:
        for name, scores in (record.get("overlap_before") or {}).items():
            sizes[name] = max(sizes.get(name, 0), len(scores))
        for name, rows in (record.get("dropped") or {}).items():
            sizes[name] = max(sizes.get(name, 0), max(rows, default=-1) + 1)
    grid = {name: np.zeros((len(cycles), size), dtype=bool) for name, size in sizes.items()}
    for c, record in enumerate(cycles):
        for name, rows in (record.get("dropped") or {}).items():
            grid[name][c, rows] = True
    return grid


def repr_ranking(meta: dict) -> str | None:
    """The filter ranking a RePr run used (None for other methods).

    Read from its cycle records (what really ran), else from the training arguments, else the default the
    recipe falls back to. Only RePr runs have one: every checkpoint's args carry ``repr_ranking``, because
    ``models.train`` adds all methods' options to one parser.
    """
    if meta.get("method") != "repr":
        return None
    for record in cycle_records(meta.get("history") or []):
        if record.get("ranking"):
            return record["ranking"]
    return training_args(meta).get("repr_ranking") or REPR_DEFAULTS["repr_ranking"]


def dense_arch(arch: str) -> str:
    """The standard-trained architecture a RePr model is built on (``repr_convnet3`` -> ``convnet3``).

    RePr changes the training, not the layers; ``models.repr`` registers each RePr model as ``repr_`` + the
    name of the plain model it subclasses.
    """
    return arch.removeprefix("repr_")


def overlap_layers(model: nn.Module, max_layers: int = 6) -> list[str]:
    """The convs an overlap figure shows: all of them for a small net, else up to ``max_layers`` prunable ones
    evenly spread over the depth (a ResNet-20 has 21 convs)."""
    names = [layer.name for layer in filter_layers(model)]
    if len(names) <= max_layers:
        return names
    prunable = [layer.name for layer in prunable_layers(model)] or names
    picks = np.unique(np.linspace(0, len(prunable) - 1, min(max_layers, len(prunable))).round().astype(int))
    return [prunable[i] for i in picks]


def overlap_matrices(model: nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    """``|W W^T|`` of each named conv's normalized flattened filters (F, F), zero diagonal (``models.filter_overlap``)."""
    modules = dict(model.named_modules())
    return {name: overlap_matrix(modules[name].weight).numpy() for name in names}


def mean_overlap(matrix: np.ndarray) -> float:
    """Mean over the off-diagonal entries: the layer's mean filter score of ``models.filter_overlap.filter_scores``."""
    n = matrix.shape[0]
    return float(matrix.sum() / (n * (n - 1))) if n > 1 else 0.0
