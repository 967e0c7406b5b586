"""RouteScope app entry: ``streamlit run app/streamlit_app.py``."""
import os
from pathlib import Path

import streamlit as st
import torch

# One intra-op thread unless OMP_NUM_THREADS says otherwise: a single image is a few ms of work, and with
# several sessions (or another job) on two cores, OpenMP teams spin against each other and one forward
# pass took seconds instead of milliseconds. Sessions run in their own threads, so cores are still used.
if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() != 1:
    torch.set_num_threads(1)

PAGES = Path(__file__).parent / "views"  # not pages/: Streamlit would also list that folder's files as pages

st.set_page_config(page_title="RouteScope", page_icon=":material/route:", layout="wide")
navigation = st.navigation([
    st.Page(PAGES / "inspect.py", title="Inspect", icon=":material/image_search:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "structure.py", title="Structure", icon=":material/grid_view:"),
    st.Page(PAGES / "figures.py", title="Figures", icon=":material/insert_chart:"),
    st.Page(PAGES / "results.py", title="Results", icon=":material/leaderboard:"),
    st.Page(PAGES / "training.py", title="Training", icon=":material/monitoring:"),
])
navigation.run()
