"""Plotly figures for the "Inside the model" page. Data in, figure out; no Streamlit."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cbert_core.views.embedding_figures import PALETTE
from cbert_core.views.labels import wrap_title
from cbert_core.views.look import TWO_LINE_TITLE_MARGIN, calm


def embedding_parts_figure(part_names: tuple[str, ...], norm_shares: np.ndarray, labels: list[str],
                           sum_norms: np.ndarray, output_norms: np.ndarray) -> go.Figure:
    """Stacked shares of each embedding part per token, with the sum's norm before and after LayerNorm.

    Args:
        norm_shares: float [pos, part], rows add to 1.
        labels: pos unique escaped labels.
    """
    figure = go.Figure()
    for index, name in enumerate(part_names):
        figure.add_trace(go.Bar(x=labels, y=norm_shares[:, index], name=f"{name} share",
                                marker_color=PALETTE[index], hovertemplate="%{x}: %{y:.0%}<extra>" + name +
                                                                           "</extra>"))
    figure.add_trace(go.Scatter(x=labels, y=sum_norms, name="norm of the sum", yaxis="y2", mode="lines",
                                line=dict(color="#444444", width=1.5)))
    figure.add_trace(go.Scatter(x=labels, y=output_norms, name="norm after LayerNorm", yaxis="y2", mode="lines",
                                line=dict(color="#d62728", width=1.5, dash="dot")))
    calm(figure, barmode="stack", height=440, title="What each word piece starts as",
         yaxis=dict(title="share of the parts' norms", tickformat=".0%", range=[0, 1]),
         yaxis2=dict(title="norm", overlaying="y", side="right", showgrid=False),
         legend=dict(orientation="h", y=-0.25))
    figure.update_xaxes(type="category", tickangle=-60)
    return figure


def attention_step_figure(labels: list[str], scores: np.ndarray, weights: np.ndarray,
                          value_norms: np.ndarray) -> go.Figure:
    """Per key: the scaled score (top panel), the softmax weight and what it passes on (bottom panel).

    Two panels sharing the keys' axis, so neither set of bars hides the other.
    """
    order = np.argsort(-weights)[:30]
    chosen = [labels[i] for i in order]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.4, 0.6],
                           subplot_titles=("score q·k / √d", "softmax weight, and weight × |value|"))
    figure.add_trace(go.Bar(x=chosen, y=scores[order], name="score q·k / √d", marker_color="#9bb7d4",
                            hovertemplate="%{x}: %{y:.3f}<extra>score</extra>"), 1, 1)
    figure.add_trace(go.Bar(x=chosen, y=weights[order], name="softmax weight", marker_color="#1f6f8b",
                            hovertemplate="%{x}: %{y:.3f}<extra>weight</extra>"), 2, 1)
    figure.add_trace(go.Scatter(x=chosen, y=weights[order] * value_norms[order], name="weight × |value|",
                                mode="markers", marker=dict(color="#d62728", size=9),
                                hovertemplate="%{x}: %{y:.3f}<extra>passed on</extra>"), 2, 1)
    calm(figure, height=480, title="The 30 keys this query weights most", legend=dict(orientation="h", y=-0.35))
    figure.update_xaxes(type="category", tickangle=-45)
    return figure


def head_share_figure(shares: np.ndarray, chosen_head: int) -> go.Figure:
    colours = ["#d62728" if head == chosen_head else "#9bb7d4" for head in range(len(shares))]
    figure = go.Figure(go.Bar(x=[f"H{h + 1}" for h in range(len(shares))], y=shares, marker_color=colours,
                              hovertemplate="%{x}: %{y:.0%}<extra>share</extra>"))
    calm(figure, height=320, title=wrap_title("Each head's share of this layer's attention update here", 36),
         yaxis=dict(tickformat=".0%"), margin=TWO_LINE_TITLE_MARGIN)
    return figure


def layer_token_heatmap(values: np.ndarray, labels: list[str], title: str, colour_title: str,
                        first_layer: int = 1) -> go.Figure:
    """A [layer, pos] map; rows are named layer N from ``first_layer``."""
    rows = [f"layer {layer + first_layer}" if layer + first_layer > 0 else "embeddings"
            for layer in range(values.shape[0])]
    figure = go.Figure(go.Heatmap(z=values.astype(np.float32), x=labels, y=rows, colorscale="YlOrRd",
                                  colorbar=dict(title=colour_title),
                                  hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    calm(figure, title=title, height=max(300, 24 * values.shape[0] + 160))
    figure.update_xaxes(type="category", tickangle=-60)
    figure.update_yaxes(autorange="reversed")
    return figure


def logit_lens_figure(layer_names: tuple[str, ...], final_probs: np.ndarray, input_probs: np.ndarray,
                      final_token: str, input_token: str) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=list(layer_names), y=final_probs, mode="lines+markers",
                                name=f"final answer {final_token}", line=dict(color="#1f6f8b", width=2)))
    figure.add_trace(go.Scatter(x=list(layer_names), y=input_probs, mode="lines+markers",
                                name=f"token in the note {input_token}", line=dict(color="#d62728", dash="dot")))
    calm(figure, height=340, title="When does the answer form?", yaxis=dict(title="probability",
                                                                    range=[0, 1]))
    return figure
