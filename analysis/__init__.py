"""Reads models: per-image traces, compute accounting, dataset tables, attributions, figures, benchmarks."""

if __name__ == "analysis":  # ``python -m analysis.X`` from a checkout: the package is routescope.analysis, once
    from routescope.models._one_name import become

    become(__name__, "routescope.analysis")
