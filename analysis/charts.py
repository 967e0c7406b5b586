"""Plotly figures of routing traces, one builder per kind of decision or structure (no Streamlit here).

Each builder takes the JSON-ready entries of a trace (DESIGN.md) and returns a ``go.Figure``, so the app,
notebooks and tests share them. ``CHARTS`` maps a decision/structure kind to its builder; a new method
adds a kind here and the Inspect page shows it without changes.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from analysis.group_structure import mask_from_groups

COMPACT = dict(margin=dict(l=10, r=10, t=40, b=10))


def top_classes(trace: dict) -> go.Figure:
    top = trace["top"][::-1]
    figure = go.Figure(go.Bar(x=[t["probability"] for t in top], y=[t["label"] for t in top], orientation="h",
                              marker_color="#4c78a8", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    return figure.update_layout(title="Top classes", xaxis=dict(range=[0, 1], title="probability"), height=230, **COMPACT)


def skip_strip(decisions: list[dict]) -> go.Figure:
    """One cell per gated block: executed (dark) or skipped (light), with the gate probability."""
    layers = [d["layer"] for d in decisions]
    executed = [[1 if d["executed"] else 0 for d in decisions]]
    text = [[f"{d['probability']:.2f}" for d in decisions]]
    figure = go.Figure(go.Heatmap(z=executed, x=layers, y=["gate"], text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                  colorscale=[[0, "#e8eef6"], [1, "#1f4e8c"]], showscale=False, xgap=3,
                                  hovertemplate="%{x}: p(execute)=%{text}<extra></extra>"))
    n_run = sum(executed[0])
    return figure.update_layout(title=f"Blocks executed: {n_run} of {len(layers)} gated (dark = run, number = gate probability)",
                                height=170, **COMPACT)


def width_bars(decisions: list[dict]) -> go.Figure:
    """Chosen channels vs the stage's maximum, per dynamic stage."""
    layers = [d["layer"] for d in decisions]
    figure = go.Figure([
        go.Bar(x=layers, y=[d["max_channels"] for d in decisions], name="max channels", marker_color="#e8eef6"),
        go.Bar(x=layers, y=[d["channels"] for d in decisions], name="chosen", marker_color="#f58518",
               text=[f"{d['width']:g}x" for d in decisions], textposition="inside"),
    ])
    return figure.update_layout(title="Width chosen per stage", barmode="overlay", height=260, yaxis_title="channels", **COMPACT)


def width_probabilities(decisions: list[dict]) -> go.Figure:
    z = [d["probabilities"] for d in decisions]
    n = len(z[0]) if z else 0
    figure = go.Figure(go.Heatmap(z=z, y=[d["layer"] for d in decisions], x=[f"choice {i}" for i in range(n)], zmin=0, zmax=1,
                                  colorscale="Oranges", texttemplate="%{z:.2f}"))
    return figure.update_layout(title="Width-gate probabilities", height=120 + 40 * len(z), **COMPACT)


def routing_heatmap(decisions: list[dict]) -> go.Figure:
    """Layers x experts heatmap of CondConv routing weights (sigmoid, not normalized)."""
    z = [d["weights"] for d in decisions]
    n = len(z[0]) if z else 0
    figure = go.Figure(go.Heatmap(z=z, y=[d["layer"] for d in decisions], x=[f"expert {e}" for e in range(n)], zmin=0, zmax=1,
                                  colorscale="Greens", texttemplate="%{z:.2f}"))
    return figure.update_layout(title="Routing weights", height=120 + 40 * len(z), **COMPACT)


def group_mask(entry: dict) -> go.Figure:
    """The learned connectivity U of a DGConv layer: U[i, j] = 1 when channels i and j share a group."""
    mask = entry.get("mask") or mask_from_groups(entry["group_of_channel"]).tolist()
    figure = go.Figure(go.Heatmap(z=mask, colorscale=[[0, "white"], [1, "#54a24b"]], showscale=False))
    figure.update_yaxes(autorange="reversed", title="output channel", scaleanchor="x")
    return figure.update_layout(title=f"{entry['layer']}: {entry['groups']} groups", xaxis_title="input channel", height=320, **COMPACT)


def filter_overlap(entry: dict) -> go.Figure:
    """Overlap score of each filter (RePr's ranking); dropped filters highlighted."""
    dropped = set(entry.get("dropped", []))
    scores = entry["overlap"]
    figure = go.Figure(go.Bar(x=list(range(len(scores))), y=scores,
                              marker_color=["#e45756" if i in dropped else "#4c78a8" for i in range(len(scores))]))
    return figure.update_layout(title=f"{entry['layer']}: filter overlap (red = dropped in the last cycle)",
                                xaxis_title="filter", yaxis_title="overlap", height=240, **COMPACT)


def decision_charts(kind: str, entries: list[dict]) -> list[go.Figure]:
    """All charts of one kind of decision (per image) or structure (per model)."""
    if kind == "width":
        return [width_bars(entries), width_probabilities(entries)]
    if kind in ("groups", "filters"):
        return [CHARTS[kind](e) for e in entries]
    return [CHARTS[kind](entries)]


CHARTS: dict[str, Callable] = {"skip": skip_strip, "width": width_bars, "routing": routing_heatmap,
                               "groups": group_mask, "filters": filter_overlap}


def accuracy_vs_macs(frame: pd.DataFrame, front: pd.DataFrame) -> go.Figure:
    """Every model's test accuracy vs mean MACs (``analysis.pareto.models_frame``), its Pareto front dashed."""
    figure = px.scatter(frame, x=frame["macs_mean"] / 1e6, y=frame["test_acc"] * 100, color="method", symbol="method",
                        hover_name="name", hover_data={"params": ":,", "mac_ratio": ":.3f"},
                        labels={"x": "mean MACs per image (millions)", "y": "test accuracy (%)"})
    figure.add_trace(go.Scatter(x=front["macs_mean"] / 1e6, y=front["test_acc"] * 100, mode="lines", name="Pareto front",
                                line=dict(dash="dash", color="gray", shape="hv"), hoverinfo="skip"))
    figure.update_traces(marker=dict(size=11), selector=dict(mode="markers"))
    return figure.update_layout(height=460, **COMPACT)
