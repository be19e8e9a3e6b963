"""Plotly figures for the Attribution page: the head scan, each group's share per method (the section
bar), the agreement between methods and the layers' conductance. Data in, figure out; no Streamlit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.labels import escape, head_name, wrap_title
from cbert_core.views.look import TWO_LINE_TITLE_MARGIN, calm

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
    calm(figure, title=wrap_title(title, 60), height=int(30 * layers + 220), showlegend=False,
         clickmode="event+select", margin=TWO_LINE_TITLE_MARGIN)
    figure.update_yaxes(title="layer", autorange="reversed", dtick=1)
    figure.update_xaxes(title="head", dtick=1)
    return figure


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Escaped category labels, numbered ("3. PLAN") so that repeated titles stay apart."""
    return [f"{number}. {escape(label)}" for number, label in enumerate(labels, start=1)]


def group_bar_figure(labels: Sequence[str], shares: Mapping[str, np.ndarray], title: str) -> go.Figure:
    """Horizontal bars of each group's share of the explanation, one bar per method (sections, sentences).

    Args:
        labels: [g] group labels in text order (escaped here).
        shares: method name -> float [g] signed shares (absolute shares add up to 1; NaN: not covered).
        title: escaped title.
    """
    names = unique_labels(labels)
    figure = go.Figure()
    for method, values in shares.items():
        values = np.asarray(values, np.float64)
        figure.add_trace(go.Bar(
            y=names, x=np.nan_to_num(values), orientation="h", name=escape(method),
            text=[f"{v:+.0%}" if np.isfinite(v) else "" for v in values], textposition="auto",
            hovertemplate="%{y}<br>%{x:+.1%} of the explanation<extra>" + escape(method) + "</extra>"))
    calm(figure, title=wrap_title(title, 70), barmode="group", height=int(140 + len(names) *
         (14 + 12 * max(len(shares), 1))), legend=dict(orientation="h", y=-0.08),
         margin=TWO_LINE_TITLE_MARGIN)
    figure.update_yaxes(autorange="reversed", automargin=True)
    figure.update_xaxes(title="share of the explanation (right of 0: pushes the prediction up; left: down)", tickformat="+.0%",
                        zeroline=True, zerolinecolor="#7a8a94")
    return figure


def agreement_figure(methods: Sequence[str], correlation: np.ndarray, title: str) -> go.Figure:
    """Method x method heatmap of rank correlations (-1..1), the values written in each cell.

    Args:
        methods: [m] method names (escaped here).
        correlation: float [m, m] (NaN: not comparable).
    """
    names = [escape(method) for method in methods]
    figure = go.Figure(go.Heatmap(
        z=correlation, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
        text=[[f"{v:.2f}" if np.isfinite(v) else "–" for v in row] for row in correlation],
        texttemplate="%{text}", hovertemplate="%{y} vs %{x}: rank correlation %{text}<extra></extra>",
        colorbar=dict(title="ρ")))
    calm(figure, title=wrap_title(title, 60), height=int(160 + 42 * len(names)), margin=TWO_LINE_TITLE_MARGIN)
    figure.update_yaxes(autorange="reversed", automargin=True)
    figure.update_xaxes(automargin=True, tickangle=-30)
    return figure


def layer_group_figure(labels: Sequence[str], shares: np.ndarray, title: str) -> go.Figure:
    """Layer x group heatmap: the share of each layer's conductance that flows through each group.

    Args:
        labels: [g] group labels in text order (escaped here; "[CLS]/[SEP]" may be one of them).
        shares: float [L, g] signed shares per layer (each row's absolute values add up to 1).
    """
    names = unique_labels(labels)
    limit = float(np.nanmax(np.abs(shares))) if np.isfinite(shares).any() else 1.0
    figure = go.Figure(go.Heatmap(
        z=shares, x=names, y=[f"layer {layer}" for layer in range(1, shares.shape[0] + 1)], zmin=-(limit or 1.0),
        zmax=limit or 1.0, colorscale="RdBu", reversescale=True,
        hovertemplate="%{y}, %{x}: %{z:+.1%} of the layer's conductance<extra></extra>", colorbar=dict(title="share")))
    calm(figure, title=wrap_title(title, 70), height=int(200 + 26 * shares.shape[0]), margin=TWO_LINE_TITLE_MARGIN)
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(automargin=True, tickangle=-35, showticklabels=len(names) <= 60)
    return figure
