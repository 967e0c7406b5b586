"""RouteScope's Streamlit front end: thin pages over ``analysis``."""
