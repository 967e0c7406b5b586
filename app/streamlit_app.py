"""RouteScope app entry: ``streamlit run app/streamlit_app.py``."""
from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="RouteScope", page_icon=":material/route:", layout="wide")
navigation = st.navigation([
    st.Page(PAGES / "inspect.py", title="Inspect", icon=":material/image_search:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "structure.py", title="Structure", icon=":material/grid_view:"),
    st.Page(PAGES / "figures.py", title="Figures", icon=":material/insert_chart:"),
])
navigation.run()
