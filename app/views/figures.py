"""Figures: every paper-style figure of ``python -m analysis.figures``, downloadable as PNG, PDF and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import streamlit as st

from analysis.core.catalog import bundled_checkpoints
from analysis.core.figures import FIGURES, FigureContext, available_figures, figure_bytes, load_figure_modules
from analysis.core.testsets import BUNDLED
from app.resources import choose_test_set, load_bundled

load_figure_modules()


FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}
# the test sets a FigureContext draws every figure on: those of the bundled models' own images (its ``images()``
# hands them to the figures as they are); the others are for Compare
FIGURE_SETS = (BUNDLED, "fashion-mnist")


@st.cache_resource(show_spinner=False, max_entries=2)
def _context(key: tuple, dataset: str, data_dir: str | None) -> FigureContext:
    """Loaded models and traced tables of one set of checkpoint files (``key``: name, path, mtime) on one test set;
    a retrained checkpoint makes a new key, so only the newest sets stay in memory. The bundled 500-image subset, the
    default, keeps the page responsive (tables are stored: a set is traced once); captions name the test set."""
    return FigureContext({name: Path(path) for name, path, _ in key}, dataset=dataset, data_dir=data_dir)


@st.cache_data(show_spinner="Drawing the figure (the first time traces the test images)…", max_entries=64)
def render(name: str, key: tuple, dataset: str, data_dir: str | None) -> dict[str, bytes]:
    figure = FIGURES[name].make(_context(key, dataset, data_dir))
    files = {fmt: figure_bytes(figure, fmt) for fmt in FORMATS}
    plt.close(figure)
    return files


st.title("Figures")
checkpoints = bundled_checkpoints()
# mtimes in the key: a retrained checkpoint under the same name must not show last run's figures
key = tuple(sorted((name, str(path), path.stat().st_mtime) for name, path in checkpoints.items()))
if not checkpoints:
    st.info("No bundled checkpoints, so no figures.")
    st.stop()
chosen = choose_test_set(load_bundled(key[0][0]), uploads=False, allowed=lambda t: t.name in FIGURE_SETS)
if chosen is None:
    st.stop()
test_set = chosen[0].test_set
context = _context(key, test_set.name, test_set.data_dir)
specs = available_figures(context)
if not specs:
    st.info("No figure fits the bundled checkpoints.")
    st.stop()
methods = sorted({s.method for s in specs})
method = st.selectbox("Method", methods, index=methods.index("all") if "all" in methods else 0)
for spec in [s for s in specs if s.method == method]:
    with st.container(border=True):
        st.markdown(f"**{spec.name}**")
        st.caption(context.caption(spec))
        try:
            files = render(spec.name, key, test_set.name, test_set.data_dir)
        except Exception as e:  # a figure that cannot be drawn must not take the page down
            st.error(f"{spec.name} could not be drawn: {e}")
            continue
        st.image(files["png"])
        for column, (fmt, mime) in zip(st.columns(len(FORMATS)), FORMATS.items()):
            column.download_button(
                f"Download {fmt.upper()}", files[fmt], f"{spec.name}.{fmt}", mime, key=f"{spec.name}-{fmt}"
            )
