"""Plotly figures for the Attribution page. Data in, figure out; no Streamlit."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.attention_figures import TWO_LINE_TITLE_LAYOUT
from cbert_core.views.labels import head_name, wrap_title

KNOCKED_COLOUR = "#222222"


def head_scan_figure(scores: np.ndarray, title: str, knocked_out: Iterable[tuple[int, int]] = ()) -> go.Figure:
    """Layer x head grid of the target's change when each head is knocked out; a click picks a head.

    Args:
        scores: float [layer, head]: knocked-out score - intact score (NaN: already out in the scan).
        title: escaped title.
        knocked_out: 0-based (layer, head) pairs knocked out in the views now, drawn crossed out.

    Point index of the first trace = layer * heads + head.
    """
    layers, heads = scores.shape
    limit = float(np.nanmax(np.abs(scores))) if np.isfinite(scores).any() else 1.0
    limit = limit or 1.0
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    size = int(max(12, min(34, 420 / max(layers, heads))))
    figure = go.Figure(go.Scatter(
        x=head_index.ravel() + 1, y=layer_index.ravel() + 1, mode="markers",
        text=[f"{head_name(a, b)}: {scores[a, b]:+.4f}" for a, b in zip(layer_index.ravel(), head_index.ravel())],
        marker=dict(symbol="square", size=size, color=np.nan_to_num(scores).ravel(), colorscale="RdBu",
                    cmin=-limit, cmax=limit, showscale=True, line=dict(width=0)),
        hovertemplate="%{text}<extra>click to knock out</extra>"))
    out = sorted(set(knocked_out))
    if out:
        figure.add_trace(go.Scatter(
            x=[head + 1 for _layer, head in out], y=[layer + 1 for layer, _head in out], mode="markers",
            marker=dict(symbol="x-thin", size=size * 0.8, line=dict(width=3, color=KNOCKED_COLOUR)),
            text=[f"{head_name(layer, head)} is knocked out in the views" for layer, head in out],
            hovertemplate="%{text}<extra></extra>", name="knocked out"))
    figure.update_layout(title=wrap_title(title, 60), height=int(30 * layers + 220), showlegend=False,
                         clickmode="event+select", **TWO_LINE_TITLE_LAYOUT)
    figure.update_yaxes(title="layer", autorange="reversed", dtick=1)
    figure.update_xaxes(title="head", dtick=1)
    return figure
