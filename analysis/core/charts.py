"""Plotly figures shared by every method (no Streamlit here): the top classes of one trace, accuracy vs MACs
of many models. Each kind's own charts live in its method module (``analysis/methods``) and are found
through its ``KindView``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


COMPACT = dict(margin=dict(l=10, r=10, t=40, b=10))


def top_classes(trace: dict) -> go.Figure:
    top = trace["top"][::-1]
    figure = go.Figure(
        go.Bar(
            x=[t["probability"] for t in top],
            y=[t["label"] for t in top],
            orientation="h",
            marker_color="#4c78a8",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    return figure.update_layout(
        title="Top classes", xaxis=dict(range=[0, 1], title="probability"), height=230, **COMPACT
    )


def accuracy_vs_macs(frame: pd.DataFrame, front: pd.DataFrame) -> go.Figure:
    """Every model's test accuracy vs mean MACs (``analysis.core.pareto.models_frame``), its Pareto front dashed."""
    figure = px.scatter(
        frame,
        x=frame["macs_mean"] / 1e6,
        y=frame["test_acc"] * 100,
        color="method",
        symbol="method",
        hover_name="name",
        hover_data={"params": ":,", "mac_ratio": ":.3f"},
        labels={"x": "mean MACs per image (millions)", "y": "test accuracy (%)"},
    )
    figure.add_trace(
        go.Scatter(
            x=front["macs_mean"] / 1e6,
            y=front["test_acc"] * 100,
            mode="lines",
            name="Pareto front",
            line=dict(dash="dash", color="gray", shape="hv"),
            hoverinfo="skip",
        )
    )
    figure.update_traces(marker=dict(size=11), selector=dict(mode="markers"))
    return figure.update_layout(height=460, **COMPACT)
