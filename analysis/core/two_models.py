"""Two models on one test set: where their predictions and costs differ, and which images one finds easy and the
other hard. "Easy" is relative to each model: an image's rank among the images by MACs executed, ties by confidence
(the surer first), as Compare's easy-vs-hard galleries order them: 0 = its easiest, 1 = its hardest. So a model that
is cheaper everywhere still has hard images of its own, and a static model's (one cost for all) are its least sure."""

from __future__ import annotations

import numpy as np
import pandas as pd

OUTCOMES = ("both right", "only the first right", "only the second right", "both wrong")


def paired(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The per-image tables of two models on the same images (``analysis.core.table``: one row per image index),
    joined: each model's prediction, correctness, MACs and cost rank (``_1``, ``_2``), whether they agree, the
    outcome (``OUTCOMES``; unlabelled where the image has no label) and ``rank_gap`` (second's rank - first's:
    positive where the first finds the image easier than the second does)."""
    common = first.index.intersection(second.index)
    if len(common) == 0:
        raise ValueError("the two tables share no image: they are not of the same test set")
    columns = ["predicted", "correct", "confidence", "macs"]
    out = first.loc[common, ["class"]].join(
        [first.loc[common, columns].add_suffix("_1"), second.loc[common, columns].add_suffix("_2")]
    )
    for n in ("1", "2"):
        out[f"rank_{n}"] = hardness_rank(out[f"macs_{n}"].to_numpy(), out[f"confidence_{n}"].to_numpy())
    out["agree"] = out["predicted_1"] == out["predicted_2"]
    out["rank_gap"] = out["rank_2"] - out["rank_1"]
    out["outcome"] = [_outcome(a, b) for a, b in zip(out["correct_1"], out["correct_2"])]
    return out


def hardness_rank(macs: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Each image's place from easiest to hardest, in (0, 1): by MACs, ties by confidence (the surer easier)."""
    order = np.lexsort((-np.asarray(confidence, dtype=float), np.asarray(macs, dtype=float)))
    ranks = np.empty(len(order))
    ranks[order] = (np.arange(len(order)) + 0.5) / max(len(order), 1)
    return ranks


def _outcome(first, second) -> str:
    if pd.isna(first) or pd.isna(second):
        return "unlabelled"
    return OUTCOMES[2 * (not first) + (not second)]


def summary(pairs: pd.DataFrame) -> dict:
    """Counts and means of ``paired``: images, agreement, each outcome's count, each model's mean MACs, and the
    Spearman correlation of the two models' MACs (1: the same images cost both the most; NaN where one model's
    cost is the same for every image: nothing to correlate)."""
    counts = pairs["outcome"].value_counts()
    return {
        "images": len(pairs),
        "agree": float(pairs["agree"].mean()),
        **{outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES},
        "macs_1": float(pairs["macs_1"].mean()),
        "macs_2": float(pairs["macs_2"].mean()),
        "cost_correlation": _spearman(pairs["macs_1"], pairs["macs_2"]),
    }


def _spearman(a: pd.Series, b: pd.Series) -> float:
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def easy_for_one(pairs: pd.DataFrame, k: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` images the first model finds easiest relative to the second (largest ``rank_gap``), and the ``k``
    the second finds easiest relative to the first (smallest), each only where the gap is positive for it."""
    ordered = pairs.sort_values("rank_gap", kind="stable")
    easy_first = ordered[ordered["rank_gap"] > 0].iloc[::-1].head(k)
    easy_second = ordered[ordered["rank_gap"] < 0].head(k)
    return easy_first, easy_second
