"""A gallery of test-set images, each with a link that opens it in Inspect (the session's model and test set
follow, ``?index=N`` picks the image)."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from routescope.analysis.core.testsets import ModelImages
from routescope.app.components import page_link
from routescope.app.formatting import macs
from routescope.app.resources import SetChoice, chosen_bundled_name, picture

COLUMNS = 8


def image_caption(row: pd.Series) -> str:
    """``Coat → Shirt · 20.2 M``: the image's class (? without a label), the prediction and the MACs executed."""
    label = f"{row['class']} → " if isinstance(row["class"], str) else "? → "
    return label + f"{row['predicted']} · {macs(row['macs'])}".replace(" M", "\u00a0M")


def gallery(
    choice: SetChoice, images: ModelImages, subset: pd.DataFrame, caption: Callable[[pd.Series], str] = image_caption
) -> None:
    """The images of ``subset`` (rows indexed by image), decoded only now: a big test set is never held in memory."""
    link = {"model": chosen_bundled_name(), "testset": None if choice.upload else choice.key}
    link = {k: v for k, v in link.items() if v}
    rows = list(subset.iterrows())
    for start in range(0, len(rows), COLUMNS):
        for column, (i, row) in zip(st.columns(COLUMNS), rows[start : start + COLUMNS]):
            with column:
                st.image(picture(images, i), caption=caption(row), width=84)
                page_link("inspect", f"#{i}", {**link, "index": str(i)}, help=f"Open image #{i} in Inspect")
