"""A Shallow-Deep Network (internal classifiers, early exit) in plain PyTorch (``sdn_exit.models``) and its RouteScope
plug-in declaration (``sdn_exit.plugin``)."""
