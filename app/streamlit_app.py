"""RouteScope app entry: ``streamlit run app/streamlit_app.py``."""

import os
from pathlib import Path

import streamlit as st
import torch

# One intra-op thread unless OMP_NUM_THREADS says otherwise: a single image is a few ms of work, and with
# several sessions (or another job) on two cores, OpenMP teams spin against each other and one forward pass
# took seconds instead of milliseconds. Sessions run in their own threads, so cores are still used.
if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() != 1:
    torch.set_num_threads(1)

VIEWS = Path(__file__).parent / "views"  # not pages/: Streamlit would also list that folder's files as pages

# Every page has its own URL (/inspect, /compare, ...). Streamlit serves the default page at "/" only, so a
# page marked default=True would answer "Page not found" at its own name: the default is instead a hidden
# page that hands "/" (with its query parameters: old shared links) to Inspect, at /inspect.
PAGES = [
    st.Page(VIEWS / "inspect.py", title="Inspect", icon=":material/image_search:", url_path="inspect"),
    st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page(VIEWS / "structure.py", title="Structure", icon=":material/grid_view:", url_path="structure"),
    st.Page(VIEWS / "figures.py", title="Figures", icon=":material/insert_chart:", url_path="figures"),
    st.Page(VIEWS / "results.py", title="Results", icon=":material/leaderboard:", url_path="results"),
    st.Page(VIEWS / "training.py", title="Training", icon=":material/monitoring:", url_path="training"),
]


def _to_inspect() -> None:
    st.switch_page(PAGES[0], query_params={k: st.query_params.get_all(k) for k in st.query_params})


# a sidebar wide enough for the model picker's labels ("ResNet-20 · control, 30 epochs · 94.4% · 100% MACs")
st.set_page_config(page_title="RouteScope", page_icon=":material/route:", layout="wide", initial_sidebar_state=380)
start = st.Page(_to_inspect, title="RouteScope", url_path="start", default=True, visibility="hidden")
st.navigation([start, *PAGES]).run()
