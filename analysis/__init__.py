"""Reads models: per-image traces, compute accounting, dataset tables, attributions, figures, benchmarks."""
