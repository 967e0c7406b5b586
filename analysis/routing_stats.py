"""CondConv routing statistics over a dataset table: routing per image, class specificity, top classes per expert.

The paper's observation to test: early CondConv layers route about the same for every class, late layers
route by class. ``class_specificity`` puts one number on that per layer.
"""
from __future__ import annotations

import pandas as pd

from analysis.dataset_table import routing_by_class, routing_columns, routing_layers


def routing_by_image(table: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Routing weights of ``layer`` (rows: images grouped by class in class order, columns: experts)."""
    ordered = table.sort_values("class", kind="stable")  # categorical: sorted in class order
    return ordered[routing_columns(table, layer)].rename(columns=lambda c: c.split("/")[1])


def class_specificity(table: pd.DataFrame) -> pd.Series:
    """Per routing layer: the spread over classes (population std) of each expert's mean weight, averaged
    over experts. Near 0: every class routes alike (class-agnostic); larger: routing depends on the class."""
    return pd.Series({layer: float(routing_by_class(table, layer).std(ddof=0).mean()) for layer in routing_layers(table)},
                     name="class_specificity", dtype=float)


def top_classes_per_expert(table: pd.DataFrame, layer: str, k: int = 3) -> pd.DataFrame:
    """For each expert of ``layer``, the ``k`` classes whose images give it the highest mean weight
    (long format: expert, rank, class, weight)."""
    by_class = routing_by_class(table, layer)
    rows = [{"expert": expert, "rank": rank, "class": str(cls), "weight": float(weight)}
            for expert in by_class.columns
            for rank, (cls, weight) in enumerate(by_class[expert].dropna().nlargest(k).items(), 1)]
    return pd.DataFrame(rows, columns=["expert", "rank", "class", "weight"])
