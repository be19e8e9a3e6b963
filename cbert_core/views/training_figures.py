"""Plotly figures for the Fine-tune page: the loss curve, the confusion matrix, the held-out pseudo-perplexity
of continued pretraining and a tagger's entity scores per label. Data in, figure out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.labels import escape
from cbert_core.views.look import calm


def loss_figure(losses: np.ndarray | list[float]) -> go.Figure:
    """Training loss per optimizer step."""
    figure = go.Figure(go.Scatter(y=np.asarray(losses, dtype=np.float32), mode="lines", line=dict(color="#1f6f8b")))
    calm(figure, title="Training loss per step", height=320, xaxis_title="step", yaxis_title="loss")
    return figure


def confusion_figure(confusion: np.ndarray, labels: tuple[str, ...]) -> go.Figure:
    """Counts of true (rows) against predicted (columns) labels, written in each cell; labels are escaped here."""
    names = [escape(label) for label in labels]
    counts = np.asarray(confusion)
    figure = go.Figure(go.Heatmap(z=counts, x=names, y=names, colorscale="Blues", text=counts.astype(str),
                                  texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    calm(figure, title="Confusion matrix (validation)", height=320)
    figure.update_yaxes(title="true", autorange="reversed")
    figure.update_xaxes(title="predicted")
    return figure


def perplexity_figure(steps: Sequence[int], values: Sequence[float], pieces: int) -> go.Figure:
    """Held-out pseudo-perplexity (log scale) after each number of steps; step 0 is before training."""
    shown = np.asarray(values, dtype=np.float64)
    figure = go.Figure(go.Scatter(x=list(steps), y=shown, mode="lines+markers", line=dict(color="#8a3b12"),
                                  hovertemplate="after %{x} steps: %{y:,.1f}<extra></extra>"))
    calm(figure, title=f"Held-out pseudo-perplexity ({pieces:,} pieces; lower is better)", height=320,
         xaxis_title="step (0 = before training)", yaxis_title="pseudo-perplexity")
    figure.update_yaxes(type="log")
    return figure


def entity_scores_figure(labels: Sequence[str], precision: Sequence[float], recall: Sequence[float],
                         f1: Sequence[float]) -> go.Figure:
    """Entity-level precision, recall and F1 per label (grouped bars, 0 to 1); labels are escaped here."""
    names = [escape(label) for label in labels]
    figure = go.Figure()
    for title, values, colour in (("precision", precision, "#7aa6c2"), ("recall", recall, "#c2a27a"),
                                  ("F1", f1, "#1f6f8b")):
        figure.add_trace(go.Bar(x=names, y=np.asarray(values, dtype=np.float64), name=title, marker_color=colour,
                                hovertemplate=f"%{{x}}: {title} %{{y:.2f}}<extra></extra>"))
    calm(figure, title="Held-out spans found exactly (entity level)", barmode="group", height=320,
         yaxis=dict(range=[0, 1.05], title="score"))
    return figure
