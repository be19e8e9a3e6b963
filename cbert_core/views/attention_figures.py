"""Plotly figures for the Attention page. Data in, figure out; no Streamlit.

Large arrays go to plotly as float32 numpy, which plotly 6+ sends as compact
base64 typed arrays: a 512 x 512 heatmap is about 1.4 MB instead of ~6 MB JSON.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cbert_core.views.labels import escape, head_name, wrap_title
from cbert_core.views.look import TWO_LINE_TITLE_MARGIN, calm

SEQUENTIAL = "Blues"
STAT_TITLES = {
    "structure": "Structure: attention concentrated on the note's own pieces",
    "entropy": "Entropy (nats): how spread out each head's attention is",
    "normalized_entropy": "Normalized entropy: 0 = one token, 1 = evenly spread",
    "mean_distance": "Mean attention distance (tokens)",
    "cls_share": "Share of attention on [CLS]",
    "sep_share": "Share of attention on [SEP]",
    "punctuation_share": "Share of attention on punctuation",
    "self_share": "Share of attention on the token itself",
    "previous_share": "Share of attention on the previous token",
}


def attention_heatmap(weights: np.ndarray, row_labels: list[str], column_labels: list[str],
                      title: str, *, zmin: float = 0.0, zmax: float | None = None) -> go.Figure:
    """A [q, k] attention matrix; labels must be unique and already escaped.

    Args:
        zmin, zmax: the colour scale's ends; ``zmax=None`` lets it end at this map's own largest weight.
            Pass one ``zmax`` to several maps to draw them on a shared scale.
    """
    size = len(row_labels)
    figure = go.Figure(go.Heatmap(
        z=weights.astype(np.float32), x=column_labels, y=row_labels, colorscale=SEQUENTIAL, zmin=zmin, zmax=zmax,
        hovertemplate="from %{y}<br>to %{x}<br>weight %{z:.3f}<extra></extra>", colorbar=dict(title="weight"),
    ))
    height = int(min(900, max(380, 14 * size + 120)))
    calm(figure, title=title, height=height)
    figure.update_yaxes(autorange="reversed", title="attending token (query)", type="category")
    figure.update_xaxes(title="attended-to token (key)", type="category", tickangle=-60)
    return figure


def head_grid(values: np.ndarray, metric: str, selected: tuple[int, int] | None = None) -> go.Figure:
    """Layer x head grid of one statistic, drawn as square markers so a click selects a head.

    Point index = layer * heads + head.
    """
    layers, heads = values.shape
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    text = [f"{head_name(layer, head)}: {values[layer, head]:.3f}"
            for layer, head in zip(layer_index.ravel(), head_index.ravel())]
    size = int(max(12, min(34, 420 / max(layers, heads))))
    figure = go.Figure(go.Scatter(
        x=head_index.ravel() + 1, y=layer_index.ravel() + 1, mode="markers", text=text,
        marker=dict(symbol="square", size=size, color=values.ravel(), colorscale="Viridis", showscale=True,
                    line=dict(width=0)),
        hovertemplate="%{text}<extra>click to open</extra>",
    ))
    if selected is not None:
        layer, head = selected
        figure.add_trace(go.Scatter(x=[head + 1], y=[layer + 1], mode="markers", hoverinfo="skip",
                                    marker=dict(symbol="square-open", size=size + 6, color="#d62728",
                                                line=dict(width=3))))
    calm(figure, title=wrap_title(STAT_TITLES.get(metric, metric), 38),
         height=int(size * layers * 1.25 + 170), showlegend=False, clickmode="event+select",
         margin=TWO_LINE_TITLE_MARGIN)
    figure.update_xaxes(title="head", tickmode="linear", dtick=1, range=[0.4, heads + 0.6], showgrid=False)
    figure.update_yaxes(title="layer", tickmode="linear", dtick=1, range=[layers + 0.6, 0.4], showgrid=False)
    return figure


def rollout_figure(rollout_row: np.ndarray, labels: list[str], layer_count: int, title: str,
                   zmax: float | None = None) -> go.Figure:
    """How much [CLS] (or a chosen token) draws on each input token, layer by layer: [layer, k].

    Args:
        zmax: the colour scale's top (None: the largest value); pass the largest value among the
            other tokens so that the chosen token's own share does not wash the rest out.
    """
    figure = go.Figure(go.Heatmap(
        z=rollout_row.astype(np.float32), x=labels, y=[f"after layer {layer + 1}" for layer in range(layer_count)],
        colorscale=SEQUENTIAL, zmin=0, zmax=zmax, hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>",
    ))
    calm(figure, title=title, height=max(320, 26 * layer_count + 140))
    figure.update_xaxes(type="category", tickangle=-60)
    return figure


def neuron_view(query: np.ndarray, keys: np.ndarray, key_labels: list[str], query_label: str,
                scale: float, weights: np.ndarray, shown: np.ndarray | None = None) -> go.Figure:
    """Query x key for one head and one query token, in the model's own numbers.

    Args:
        query: float [head_dim] the query vector.
        keys: float [n, head_dim] every key vector.
        key_labels: n escaped unique labels.
        scale: 1 / sqrt(head_dim).
        weights: float [n] the softmax the model produced (for the check line).
        shown: int rows of the keys to draw (None: all); the softmax is always over all n keys.
    """
    products = keys * query[None, :]  # [n, d]
    scores = products.sum(-1) * scale  # [n]
    softmax = np.exp(scores - scores.max())
    softmax /= softmax.sum()
    if shown is not None:
        keys, products, scores, softmax, weights = keys[shown], products[shown], scores[shown], softmax[shown], weights[shown]
        key_labels = [key_labels[i] for i in shown]
    dims = [f"d{i}" for i in range(query.shape[0])]
    figure = make_subplots(rows=1, cols=4, shared_yaxes=True, column_widths=[0.35, 0.35, 0.15, 0.15],
                           horizontal_spacing=0.02,
                           subplot_titles=("key vectors k", "q × k (elementwise)", "q·k / √d", "softmax"))
    limit = float(np.abs(keys).max() or 1.0)
    figure.add_trace(go.Heatmap(z=keys, x=dims, y=key_labels, colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit,
                                showscale=False, hovertemplate="%{y} %{x}: %{z:.3f}<extra>key</extra>"), 1, 1)
    product_limit = float(np.abs(products).max() or 1.0)
    figure.add_trace(go.Heatmap(z=products, x=dims, y=key_labels, colorscale="PuOr", zmid=0,
                                zmin=-product_limit, zmax=product_limit, showscale=False,
                                hovertemplate="%{y} %{x}: %{z:.3f}<extra>q×k</extra>"), 1, 2)
    figure.add_trace(go.Bar(x=scores, y=key_labels, orientation="h", marker_color="#6b8fb3",
                            hovertemplate="%{y}: %{x:.3f}<extra>score</extra>"), 1, 3)
    figure.add_trace(go.Bar(x=softmax, y=key_labels, orientation="h", marker_color="#1f6f8b",
                            customdata=weights, hovertemplate="%{y}: %{x:.3f} (model: %{customdata:.3f})"
                                                              "<extra>softmax</extra>"), 1, 4)
    figure.update_yaxes(autorange="reversed", type="category")
    calm(figure, title=f"Query {query_label}: how its attention weights are computed",
         height=int(min(1400, max(420, 16 * len(key_labels) + 140))), showlegend=False)
    return figure


def word_list(labels: list[str]) -> list[str]:
    """Escape and number word labels so repeated words stay separate on an axis."""
    return [f"{index} {escape(label)}" for index, label in enumerate(labels)]
