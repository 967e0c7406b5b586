"""How the app shows numbers: one column format per column name for every table (``show_table``), and the
metric deltas of cost and latency. The units and the text formatters are ``analysis.core.units``' (the charts use
them too): MACs ``20.19 M``, percentages ``94.2%`` (accuracy, share, "of dense" ``65%``), latencies ``1.23 ms``,
throughput ``6,365`` img/s, counts ``275,877``.

A table is shown from a copy scaled to its unit and rounded to what is shown (MACs in millions, fractions in
percent), so its cells, its sorting and its accessible text agree; the page's downloads are made from the original
frame, with the raw numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from routescope.analysis.core.latency import NO_DIFFERENCE, Latency, latency_comparison
from routescope.analysis.core.units import MILLION, change, count, macs, ms, params, percent, throughput, width

__all__ = [
    "change",
    "count",
    "cost_delta",
    "latency_delta",
    "macs",
    "ms",
    "params",
    "percent",
    "show_table",
    "shown",
    "table_height",
    "throughput",
    "width",
]

ROW_PX = 35  # st.dataframe's row (and header) height


@dataclass(frozen=True)
class Column:
    """How one column is shown: ``label`` (None: its name), a Streamlit number ``format`` (printf-style or a
    preset), the ``scale`` applied to the shown copy and the decimals it is rounded to."""

    label: str | None = None
    format: str | None = None
    scale: float = 1.0
    digits: int | None = None
    help: str | None = None


def _macs(label: str, help: str | None = None) -> Column:
    return Column(label, "%.2f M", 1 / MILLION, 2, help or "multiply-accumulates per image, in millions")


def _percent(label: str, digits: int = 1, help: str | None = None) -> Column:
    return Column(label, f"%.{digits}f%%", 100, digits, help)


COLUMNS: dict[str, Column] = {
    "macs": _macs("MACs", "multiply-accumulates this image executed, in millions"),
    "macs_mean": _macs("mean MACs"),
    "macs_min": _macs("min MACs"),
    "macs_max": _macs("max MACs"),
    "macs_decided": _macs("MACs decided", "what the decisions say should have run, in millions"),
    "macs_full": _macs("dense MACs", "the dense network's MACs per image, in millions"),
    "accuracy": _percent("accuracy"),
    "test_acc": _percent("test accuracy", 2),
    "train_acc": _percent("train accuracy", 2),
    "share": _percent("share", help="share of the images"),
    "confidence": _percent("confidence", help="probability of the predicted class"),
    "probability": _percent("probability"),
    "mac_ratio": _percent("of dense", 0, "mean MACs as a share of the dense network's"),
    "latency_ms": Column("latency", "%.2f ms", digits=3, help="batch 1, median per image"),
    "latency_ref_ms": Column("reference latency", "%.2f ms", digits=3, help="batch 1, median per image"),
    "latency_ratio": Column("latency ratio", "%.2f×", digits=3, help="model / reference, batch 1"),
    "throughput": Column("throughput (img/s)", "localized", digits=0, help="images per second at the batch size"),
    "throughput_ref": Column("reference (img/s)", "localized", digits=0, help="the reference's images per second"),
    "throughput_ratio": Column("throughput ratio", "%.2f×", digits=3, help="model / reference"),
    "params": _macs("params", "parameters, in millions"),
    "n_test": Column("test images", "localized"),
    "images": Column("images", "localized"),
    "brightness": Column("brightness", "%.3f", digits=3, help="mean pixel value, 0-1"),
    "contrast": Column("contrast", "%.3f", digits=3, help="standard deviation of the pixels, 0-1"),
    "overlap": Column("overlap", "%.3f", digits=3),
    "train_loss": Column("train loss", "%.4f", digits=4),
    "elapsed_s": Column("elapsed", "%.0f s", digits=0),
    "lr": Column("learning rate", "%.2e"),
    "value": Column(None, "%g"),
}

# the decision columns of the per-image table (``layer/field``), by field (trailing digits dropped: expert0 -> expert)
FIELDS: dict[str, Column] = {
    "p": Column(None, "%.2f", digits=3, help="gate probability of running the block"),
    "expert": Column(None, "%.2f", digits=3, help="routing weight of this expert"),
    "width": Column(None, "%g×", help="fraction of the stage's channels"),
    "confidence": _percent(None, help="this exit's max softmax"),
}


def column_spec(name: str) -> Column | None:
    """How column ``name`` is shown: by its name, by its decision field (``layer/field``), or as one model's column
    in a two-model table (``macs_1``, ``confidence_2``)."""
    if name in COLUMNS:
        return COLUMNS[name]
    paired = re.fullmatch(r"(.+)_[12]", name)
    if paired and paired.group(1) in COLUMNS:
        return COLUMNS[paired.group(1)]
    if "/" in name:
        return FIELDS.get(re.sub(r"\d+$", "", name.rsplit("/", 1)[1]))
    return None


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def shown(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The copy of ``frame`` a table shows (each known column scaled and rounded, other floats rounded to 4
    decimals) and the column configs that label and format it."""
    out, config = frame.copy(), {}
    for column in frame.columns:
        spec = column_spec(str(column))
        values = frame[column]
        if spec is None:
            if pd.api.types.is_float_dtype(values):
                out[column] = values.round(4)
            continue
        if not _numeric(values):
            values = pd.to_numeric(values, errors="coerce")
            if values.isna().all() and frame[column].notna().any():
                continue  # text in a column that usually holds numbers: shown as it is
        values = values * spec.scale if spec.scale != 1 else values
        out[column] = values.round(spec.digits) if spec.digits is not None else values
        config[column] = st.column_config.NumberColumn(spec.label, format=spec.format, help=spec.help)
    return out, config


def table_height(rows: int, most: int = 10) -> int:
    """Pixels for a header and ``rows`` rows (at most ``most``: the table scrolls past them), no empty row."""
    return ROW_PX * (max(1, min(rows, most)) + 1) + 3


def show_table(
    frame: pd.DataFrame,
    container=None,
    most: int = 10,
    hide_index: bool = True,
    column_config: dict | None = None,
    **kwargs,
):
    """``st.dataframe`` of ``frame`` in the app's formats (``shown``), as tall as its rows (at most ``most``)."""
    data, config = shown(frame)
    config.update(column_config or {})
    return (container or st).dataframe(
        data, hide_index=hide_index, column_config=config, height=table_height(len(frame), most), **kwargs
    )


def cost_delta(executed: float, dense: float) -> tuple[str, str]:
    """A metric's delta for MACs against the dense network and its colour: fewer MACs is good, so green points
    down (``delta_color="inverse"``); the same cost is grey."""
    ratio = executed / dense if dense else 1.0
    if abs(ratio - 1) < 0.005:
        return f"same as the dense {macs(dense, 2)}", "off"
    return f"{change(ratio - 1)} vs the dense {macs(dense, 2)}", "inverse"


def latency_delta(latency: Latency, dense: Latency) -> tuple[str, str]:
    """A latency metric's delta against the dense network, timed alternately in one run: the relative change when
    the interquartile ranges do not overlap (less is good: inverse colours), else "no measurable difference"."""
    verdict = latency_comparison(latency, dense)
    if verdict is None:
        return f"{NO_DIFFERENCE} from the dense {ms(dense.median_ms)}", "off"
    return f"{change(verdict - 1)} vs the dense {ms(dense.median_ms)}", "inverse"
