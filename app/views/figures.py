"""Figures: every paper-style figure of ``python -m analysis.figures``, downloadable as PNG, PDF and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import streamlit as st

from analysis.core.catalog import bundled_checkpoints
from analysis.core.figures import FIGURES, FigureContext, available_figures, figure_bytes, load_figure_modules

load_figure_modules()


FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


@st.cache_resource(show_spinner=False, max_entries=2)
def _context(key: tuple) -> FigureContext:
    """Loaded models and traced tables of one set of checkpoint files (``key``: name, path, mtime); a retrained
    checkpoint makes a new key, so only the newest sets stay in memory. The bundled 500-image subset keeps the page
    responsive (``python -m analysis.figures`` uses the full test set when it is installed); captions name it."""
    return FigureContext({name: Path(path) for name, path, _ in key}, dataset="fashion-mnist-subset")


@st.cache_data(show_spinner="Drawing the figure (the first time traces the test images)…", max_entries=64)
def render(name: str, key: tuple) -> dict[str, bytes]:
    figure = FIGURES[name].make(_context(key))
    files = {fmt: figure_bytes(figure, fmt) for fmt in FORMATS}
    plt.close(figure)
    return files


st.title("Figures")
checkpoints = bundled_checkpoints()
# mtimes in the key: a retrained checkpoint under the same name must not show last run's figures
key = tuple(sorted((name, str(path), path.stat().st_mtime) for name, path in checkpoints.items()))
specs = available_figures(_context(key))
if not specs:
    st.info("No bundled checkpoints, so no figures.")
    st.stop()
methods = sorted({s.method for s in specs})
method = st.selectbox("Method", methods, index=methods.index("all") if "all" in methods else 0)
for spec in [s for s in specs if s.method == method]:
    with st.container(border=True):
        st.markdown(f"**{spec.name}**")
        st.caption(_context(key).caption(spec))
        try:
            files = render(spec.name, key)
        except Exception as e:  # a figure that cannot be drawn must not take the page down
            st.error(f"{spec.name} could not be drawn: {e}")
            continue
        st.image(files["png"])
        for column, (fmt, mime) in zip(st.columns(len(FORMATS)), FORMATS.items()):
            column.download_button(
                f"Download {fmt.upper()}", files[fmt], f"{spec.name}.{fmt}", mime, key=f"{spec.name}-{fmt}"
            )
