"""RouteScope's one place for its commands: ``routescope COMMAND ...`` (or ``python -m routescope COMMAND ...``).

The table in ``routescope.commands`` names every entry point and the module that holds it; each such module is a
thin command line over the library (``models`` below ``analysis`` below ``app``), and no library module imports
one (the import contract in pyproject.toml).
"""
