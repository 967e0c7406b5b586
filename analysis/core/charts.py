"""Plotly figures shared by every method (no Streamlit here): the top classes of one trace, accuracy vs MACs
of many models. Each kind's own charts live in its method module (``analysis/methods``) and are found
through its ``KindView``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from routescope.analysis.core.units import MILLION, macs_axis

COMPACT = dict(margin=dict(l=10, r=10, t=40, b=10))


def top_classes(trace: dict) -> go.Figure:
    top = trace["top"][::-1]
    figure = go.Figure(
        go.Bar(
            x=[t["probability"] for t in top],
            y=[t["label"] for t in top],
            orientation="h",
            marker_color="#4c78a8",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    return figure.update_layout(
        title="Top classes", xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"), height=230, **COMPACT
    )


def accuracy_vs_macs(frame: pd.DataFrame, front: pd.DataFrame) -> go.Figure:
    """Every model's test accuracy vs mean MACs (``analysis.core.pareto.models_frame``), its Pareto front dashed."""
    shown = frame.assign(
        macs_m=frame["macs_mean"] / MILLION,
        accuracy=frame["test_acc"] * 100,
        of_dense=pd.to_numeric(frame["mac_ratio"], errors="coerce"),
        params_m=pd.to_numeric(frame["params"], errors="coerce") / MILLION,
    )
    figure = px.scatter(
        shown,
        x="macs_m",
        y="accuracy",
        color="method",
        symbol="method",
        hover_name="name",
        custom_data=["of_dense", "params_m"],
    )
    figure.update_traces(
        hovertemplate="<b>%{hovertext}</b><br>%{x:.2f} M MACs (%{customdata[0]:.0%} of dense) · accuracy %{y:.2f}%"
        "<br>%{customdata[1]:.2f} M params<extra></extra>"
    )
    figure.add_trace(
        go.Scatter(
            x=front["macs_mean"] / MILLION,
            y=front["test_acc"] * 100,
            mode="lines",
            name="Pareto front",
            line=dict(dash="dash", color="gray", shape="hv"),
            hoverinfo="skip",
        )
    )
    figure.update_traces(marker=dict(size=11), selector=dict(mode="markers"))
    return figure.update_layout(
        height=460, xaxis=macs_axis("mean MACs per image"), yaxis=dict(title="test accuracy", ticksuffix="%"), **COMPACT
    )
