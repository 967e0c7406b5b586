"""RouteScope's Streamlit front end: thin pages over ``analysis``."""

if __name__ == "app":  # ``python -m app.X`` from a checkout: the package is routescope.app, once
    from routescope.models._one_name import become

    become(__name__, "routescope.app")
