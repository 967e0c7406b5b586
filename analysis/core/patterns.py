"""Routing patterns over a dataset table: which distinct paths images take, how often, at what cost and accuracy,
and a 2-D map of the images' decision vectors (PCA by SVD) to see whether paths cluster by class or difficulty."""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.analysis.core.kinds import pattern_parts


def pattern_summary(table: pd.DataFrame, top_classes: int = 3) -> pd.DataFrame:
    """One row per routing pattern, most frequent first: ``pattern, images, share, accuracy, macs_mean, classes``
    (the ``top_classes`` most common classes with their counts). Empty without a ``pattern`` column."""
    columns = ["pattern", "images", "share", "accuracy", "macs_mean", "classes"]
    if "pattern" not in table.columns:
        return pd.DataFrame(columns=columns)
    groups = table.groupby("pattern", sort=False)
    out = groups.agg(images=("macs", "size"), accuracy=("correct", "mean"), macs_mean=("macs", "mean")).reset_index()
    out["share"] = out["images"] / len(table)
    out["classes"] = [
        ", ".join(f"{c} ({n})" for c, n in group["class"].value_counts().head(top_classes).items() if n)
        for _, group in groups
    ]
    return out.sort_values(["images", "macs_mean"], ascending=[False, True])[columns].reset_index(drop=True)


def readable_patterns(table: pd.DataFrame) -> tuple[pd.Series | None, list[str]]:
    """Each image's routing pattern as the app writes it (each kind's ``PatternPart``, " | " between kinds: DS-Net's
    widths always ``/``-separated, ``1/1`` rather than the signature's ``11``) and one legend line per kind; (None,
    []) when no kind of the table has one. The ``pattern`` column itself is left as it is (stored tables)."""
    parts = pattern_parts(table)
    if not parts:
        return None, []
    values = parts[0].values.astype(str)
    for part in parts[1:]:
        values = values + " | " + part.values.astype(str)
    return values, [part.legend for part in parts]


def pattern_labels(table: pd.DataFrame) -> dict[str, str]:
    """``{pattern: readable pattern}`` over the table's patterns (the signature where no kind offers a reading)."""
    if "pattern" not in table.columns:
        return {}
    readable, _ = readable_patterns(table)
    if readable is None:
        return {p: p for p in table["pattern"].unique()}
    return readable.groupby(table["pattern"], sort=False).first().to_dict()


def decision_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The numeric decision columns (``layer/field``) of the table, bools as 0/1: each image's decision vector."""
    columns = [
        c
        for c in table.columns
        if "/" in c and (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]
    return table[columns].astype(float).fillna(0.0)


def decision_map(table: pd.DataFrame) -> pd.DataFrame | None:
    """``pc1, pc2`` per image: the first two principal components of the standardized decision vectors (numpy
    SVD), with the explained variance ratios in ``attrs["explained"]``; None when the table has no decision
    that varies (a static model, or every image decided alike)."""
    matrix = decision_matrix(table)
    if matrix.empty:
        return None
    values = matrix.to_numpy()
    spread = values.std(axis=0)
    values = values[:, spread > 1e-9]
    if values.shape[1] == 0 or len(values) < 2:
        return None
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    u, s, _ = np.linalg.svd(values, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] == 1:
        coords = np.hstack([coords, np.zeros((len(coords), 1))])
    out = pd.DataFrame(coords, index=table.index, columns=["pc1", "pc2"])
    variance = s**2
    out.attrs["explained"] = [float(v) for v in (variance[:2] / variance.sum())]
    return out
