"""Figures: every paper-style figure of ``python -m analysis.figures``, downloadable as PNG, PDF and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import streamlit as st

from routescope.analysis.core.catalog import bundled_checkpoints
from routescope.analysis.core.figures import (
    FIGURES,
    FigureContext,
    available_figures,
    figure_bytes,
    load_figure_modules,
)
from routescope.app.resources import SetChoice, choose_test_set, images_for_meta, load_bundled

load_figure_modules()


FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


@st.cache_resource(show_spinner=False, max_entries=2)
def _context(key: tuple, images_key: tuple, _choice: SetChoice) -> FigureContext:
    """Loaded models and traced tables of one set of checkpoint files (``key``: name, path, mtime) on one test set
    (``images_key``: a server set's name and folder, or an uploaded zip's digest); a retrained checkpoint makes a new
    key, so only the newest sets stay in memory. The bundled 500-image subset, the default, keeps the page responsive
    (tables are stored: a set is traced once); captions name the test set."""
    checkpoints = {name: Path(path) for name, path, _ in key}
    if _choice.test_set is not None:
        return FigureContext(checkpoints, dataset=_choice.test_set.name, data_dir=_choice.test_set.data_dir)
    upload = _choice.label

    def source(meta: dict):
        images = images_for_meta(meta, _choice)
        if images is None:
            raise ValueError(f"{upload} has no images this model can take")
        return images

    return FigureContext(checkpoints, dataset=upload, source=source)


def images_key(choice: SetChoice) -> tuple:
    return ("server", choice.test_set.name, choice.test_set.data_dir) if choice.test_set else ("zip", choice.digest)


@st.cache_data(show_spinner="Drawing the figure (the first time traces the test images)…", max_entries=64)
def render(name: str, key: tuple, images_key: tuple, _choice: SetChoice) -> dict[str, bytes]:
    figure = FIGURES[name].make(_context(key, images_key, _choice))
    files = {fmt: figure_bytes(figure, fmt) for fmt in FORMATS}
    plt.close(figure)
    return files


st.title("Figures")
st.caption(
    "The paper-style figures of every method (matplotlib), drawn from the bundled models on the chosen test set, "
    "each downloadable as PNG, PDF or SVG. Try: another method, or your own test images (a .zip) as the test set."
)
checkpoints = bundled_checkpoints()
# mtimes in the key: a retrained checkpoint under the same name must not show last run's figures
key = tuple(sorted((name, str(path), path.stat().st_mtime) for name, path in checkpoints.items()))
if not checkpoints:
    st.info("No bundled checkpoints, so no figures.")
    st.stop()
chosen = choose_test_set(load_bundled(key[0][0]))
if chosen is None:
    st.stop()
choice = chosen[0]
context = _context(key, images_key(choice), choice)
specs = available_figures(context)
if not specs:
    st.info("No figure fits the bundled checkpoints.")
    st.stop()
EVERY = "every figure"
methods = sorted({s.method for s in specs} - {"all"})
overview = [s for s in specs if s.method == "all"]  # the figures of every model at once (accuracy vs MACs)
options = (["overview"] if overview else []) + methods + [EVERY]
method = st.selectbox(
    "Method",
    options,
    key="figures-method",
    format_func=lambda m: {"overview": "overview (all models)", EVERY: "all: every figure of every method"}.get(m, m),
    help="One method's figures, the overview of all models, or every figure (the first time traces every method's "
    "test images: slower).",
)
shown_specs = (
    specs if method == EVERY else overview if method == "overview" else [s for s in specs if s.method == method]
)
for spec in shown_specs:
    with st.container(border=True):
        st.markdown(f"**{spec.name}**")
        st.caption(context.caption(spec))
        try:
            files = render(spec.name, key, images_key(choice), choice)
        except Exception as e:  # a figure that cannot be drawn must not take the page down
            st.error(f"{spec.name} could not be drawn: {e}")
            continue
        st.image(files["png"])
        for column, (fmt, mime) in zip(st.columns(len(FORMATS)), FORMATS.items()):
            column.download_button(
                f"Download {fmt.upper()}", files[fmt], f"{spec.name}.{fmt}", mime, key=f"{spec.name}-{fmt}"
            )
