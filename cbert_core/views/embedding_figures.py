"""Plotly figures for the Embeddings page. Data in, figure out; no Streamlit."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from cbert_core.views.labels import escape, layer_name
from cbert_core.views.look import calm

PALETTE = px.colors.qualitative.Safe + px.colors.qualitative.Pastel


def token_contexts(text: str, offsets: np.ndarray, labels: list[str], positions: np.ndarray,
                   width: int = 30) -> list[str]:
    """Hover text per position: its label and ``width`` characters of the note either side, the piece in bold."""
    out = []
    for position in positions.tolist():
        start, end = (int(v) for v in offsets[position])
        if start < 0:
            out.append(labels[position])
            continue
        left, right = escape(text[max(0, start - width):start]), escape(text[end:end + width])
        out.append(f"{labels[position]}<br>…{left}<b>{escape(text[start:end])}</b>{right}…")
    return out


def projection_scatter(coords: np.ndarray, groups: list[str], hover: list[str], title: str,
                       axis_names: tuple[str, str] = ("1", "2")) -> go.Figure:
    """A 2-D scatter of tokens, one trace per colour group (legend toggles groups; names are escaped here)."""
    figure = go.Figure()
    groups = [escape(group) for group in groups]
    order = list(dict.fromkeys(groups))
    group_array = np.asarray(groups, dtype=object)
    hover_array = np.asarray(hover, dtype=object)
    for index, group in enumerate(order):
        chosen = np.flatnonzero(group_array == group)
        figure.add_trace(go.Scattergl(
            x=coords[chosen, 0], y=coords[chosen, 1], mode="markers", name=group,
            marker=dict(size=8, color=PALETTE[index % len(PALETTE)], line=dict(width=0.5, color="#ffffff")),
            text=hover_array[chosen].tolist(), hovertemplate="%{text}<extra></extra>",
        ))
    calm(figure, title=title, height=560, legend=dict(itemsizing="constant"))
    figure.update_xaxes(title=axis_names[0], zeroline=False)
    figure.update_yaxes(title=axis_names[1], zeroline=False, scaleanchor="x", scaleratio=1)
    return figure


def trajectory_figure(coords: np.ndarray, names: list[str], title: str) -> go.Figure:
    """Paths of chosen tokens through the layers: coords [layer + 1, n, 2]."""
    figure = go.Figure()
    layers = coords.shape[0]
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        figure.add_trace(go.Scatter(
            x=coords[:, index, 0], y=coords[:, index, 1], mode="lines+markers+text", name=name,
            line=dict(color=colour, width=2), marker=dict(size=7, color=colour),
            text=["E"] + [str(layer) for layer in range(1, layers)], textposition="top center",
            hovertemplate=[f"{name}<br>{layer_name(layer)}<extra></extra>" for layer in range(layers)],
        ))
    calm(figure, title=title, height=560)
    figure.update_xaxes(title="shared PC 1", zeroline=False)
    figure.update_yaxes(title="shared PC 2", zeroline=False)
    return figure


def similarity_heatmap(matrix: np.ndarray, labels: list[str], title: str) -> go.Figure:
    figure = go.Figure(go.Heatmap(
        z=matrix.astype(np.float32), x=labels, y=labels, zmin=-1, zmax=1, colorscale="RdBu", zmid=0,
        text=np.round(matrix, 2).astype(str).tolist(), texttemplate="%{text}" if len(labels) <= 14 else None,
        hovertemplate="%{y} · %{x}: %{z:.3f}<extra>cosine</extra>",
    ))
    calm(figure, title=title, height=max(360, 36 * len(labels) + 140))
    figure.update_xaxes(type="category", tickangle=-45)
    figure.update_yaxes(type="category", autorange="reversed")
    return figure


def layer_curves(series: dict[str, np.ndarray], title: str, y_title: str) -> go.Figure:
    """One line per named series over hidden-state layers (0 = embeddings)."""
    figure = go.Figure()
    for index, (name, values) in enumerate(series.items()):
        figure.add_trace(go.Scatter(x=[layer_name(layer) for layer in range(len(values))], y=values,
                                    mode="lines+markers", name=name,
                                    line=dict(color=PALETTE[index % len(PALETTE)], width=2)))
    calm(figure, title=title, height=380)
    figure.update_yaxes(title=y_title)
    return figure


def note_path_figure(coords: np.ndarray, title: str) -> go.Figure:
    """The note's [CLS] and mean vectors through the layers in one PCA plane: coords [2, layer + 1, 2]."""
    return trajectory_figure(np.transpose(coords, (1, 0, 2)), ["[CLS] vector", "mean of word pieces"], title)
