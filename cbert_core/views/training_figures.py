"""Plotly figures for the Fine-tune page: the loss curve and the confusion matrix. Data in, figure out."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.attention_figures import CALM_LAYOUT
from cbert_core.views.labels import escape


def loss_figure(losses: np.ndarray | list[float]) -> go.Figure:
    """Training loss per optimizer step."""
    figure = go.Figure(go.Scatter(y=np.asarray(losses, dtype=np.float32), mode="lines", line=dict(color="#1f6f8b")))
    figure.update_layout(title="Training loss per step", height=320, xaxis_title="step", yaxis_title="loss",
                         **CALM_LAYOUT)
    return figure


def confusion_figure(confusion: np.ndarray, labels: tuple[str, ...]) -> go.Figure:
    """Counts of true (rows) against predicted (columns) labels, written in each cell; labels are escaped here."""
    names = [escape(label) for label in labels]
    counts = np.asarray(confusion)
    figure = go.Figure(go.Heatmap(z=counts, x=names, y=names, colorscale="Blues", text=counts.astype(str),
                                  texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    figure.update_layout(title="Confusion matrix (validation)", height=320, **CALM_LAYOUT)
    figure.update_yaxes(title="true", autorange="reversed")
    figure.update_xaxes(title="predicted")
    return figure
