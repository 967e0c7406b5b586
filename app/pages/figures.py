"""Figures: every paper-style figure of ``python -m analysis.figures``, downloadable as PNG, PDF and SVG."""
from __future__ import annotations

import matplotlib.pyplot as plt
import streamlit as st

from analysis.catalog import bundled_checkpoints
from analysis.figure_registry import FIGURES, FigureContext, available_figures, figure_bytes, load_figure_modules

load_figure_modules()


@st.cache_resource(show_spinner=False)
def _context(key: tuple) -> FigureContext:
    return FigureContext(dict(key))


@st.cache_data(show_spinner="Drawing the figure (the first time traces the test images)…", max_entries=64)
def render(name: str, key: tuple) -> dict[str, bytes]:
    figure = FIGURES[name].make(_context(key))
    files = {fmt: figure_bytes(figure, fmt) for fmt in ("png", "pdf", "svg")}
    plt.close(figure)
    return files


st.title("Figures")
checkpoints = bundled_checkpoints()
key = tuple(sorted((name, str(path)) for name, path in checkpoints.items()))
specs = available_figures(_context(key))
if not specs:
    st.info("No bundled checkpoints, so no figures.")
    st.stop()
methods = sorted({s.method for s in specs})
method = st.selectbox("Method", methods, index=methods.index("all") if "all" in methods else 0)
for spec in [s for s in specs if s.method == method]:
    with st.container(border=True):
        st.markdown(f"**{spec.name}**")
        st.caption(spec.caption)
        try:
            files = render(spec.name, key)
        except Exception as e:  # a figure that cannot be drawn must not take the page down
            st.error(f"{spec.name} could not be drawn: {e}")
            continue
        st.image(files["png"])
        columns = st.columns(3)
        for column, (fmt, mime) in zip(columns, (("png", "image/png"), ("pdf", "application/pdf"), ("svg", "image/svg+xml"))):
            column.download_button(f"Download {fmt.upper()}", files[fmt], f"{spec.name}.{fmt}", mime, key=f"{spec.name}-{fmt}")
