"""Plotly figures for the Mechanisms page: patching heatmaps and probe curves. Data in, figure out; no Streamlit.

The heatmaps are grids of square markers (a scatter), not plotly heatmaps, so that a click selects a cell
(Streamlit reports point selections, which heatmap traces do not give). Point index = row * columns + column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.labels import head_name, wrap_title
from cbert_core.views.look import TWO_LINE_TITLE_MARGIN, calm

UNPATCHED_COLOUR = "#d9d9d9"
SHARE_LIMIT = 1.0  # the colour scale spans at least -1..1 (share of the difference moved)


def _limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(max(SHARE_LIMIT, finite.max() if finite.size else 0.0))


def _grid(share: np.ndarray, scores: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], title: str,
          hover: str, cell_names: Sequence[str]) -> go.Figure:
    rows, columns = share.shape
    row_index, column_index = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    patched = np.isfinite(share).ravel()
    limit = _limit(share)
    width_cells = max(columns, 1)
    size = int(max(7, min(30, 900 / width_cells, 360 / max(rows, 1))))
    text = [f"{cell_names[i]}: share {share.flat[i]:+.3f} (target {scores.flat[i]:.4f})" if patched[i]
            else f"{cell_names[i]}: not patched (no partner in the other version)" for i in range(share.size)]
    figure = go.Figure(go.Scatter(
        x=[x_labels[c] for c in column_index.ravel()], y=[y_labels[r] for r in row_index.ravel()], mode="markers",
        text=text, hovertemplate="%{text}<extra>" + hover + "</extra>",
        marker=dict(symbol="square", size=size, line=dict(width=0),
                    color=[value if ok else 0.0 for value, ok in zip(np.nan_to_num(share).ravel(), patched)],
                    colorscale="RdBu", reversescale=True, cmin=-limit, cmax=limit, showscale=True,
                    colorbar=dict(title="share")),
        selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.9))))
    if not patched.all():
        missing = ~patched
        figure.add_trace(go.Scatter(
            x=[x_labels[c] for c in column_index.ravel()[missing]], y=[y_labels[r] for r in row_index.ravel()[missing]],
            mode="markers", marker=dict(symbol="square", size=size, color=UNPATCHED_COLOUR, line=dict(width=0)),
            text=[text[i] for i in np.flatnonzero(missing)], hovertemplate="%{text}<extra></extra>",
            name="not patched"))
    calm(figure, title=wrap_title(title, 90), height=int(max(260, size * 1.25 * rows + 200)), showlegend=False,
         clickmode="event+select", margin=TWO_LINE_TITLE_MARGIN)
    figure.update_yaxes(type="category", categoryorder="array", categoryarray=list(y_labels), autorange="reversed")
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=list(x_labels), tickangle=-60)
    return figure


def position_patch_figure(share: np.ndarray, scores: np.ndarray, position_labels: Sequence[str],
                          layer_labels: Sequence[str], title: str) -> go.Figure:
    """Layer x position grid of the share of the difference each patch moved; a click opens that layer.

    Args:
        share, scores: float [layer, position] (NaN: not patched, drawn grey).
        position_labels: [position] unique escaped labels ("3 denies").
        layer_labels: [layer] what each row patches ("before layer 1" for the residual stream).
        title: escaped.
    """
    names = [f"{layer_labels[r]}, {position_labels[c]}" for r in range(share.shape[0]) for c in range(share.shape[1])]
    figure = _grid(share, scores, position_labels, layer_labels, title, "click: open this layer", names)
    figure.update_xaxes(title="position (word piece)")
    return figure


def head_patch_figure(share: np.ndarray, scores: np.ndarray, title: str,
                      marked: Sequence[tuple[int, int]] = ()) -> go.Figure:
    """Layer x head grid of the share each head's patch moved; a click opens the head on the Attention page.

    Args:
        share, scores: float [layer, head] (NaN: a knocked-out head, not patched).
        marked: 0-based (layer, head) pairs outlined (the heads that carry the difference most).
    """
    layers, heads = share.shape
    names = [head_name(layer, head) for layer in range(layers) for head in range(heads)]
    figure = _grid(share, scores, [f"H{h + 1}" for h in range(heads)], [f"L{layer + 1}" for layer in range(layers)],
                   title, "click: open this head", names)
    if marked:
        figure.add_trace(go.Scatter(
            x=[f"H{head + 1}" for _layer, head in marked], y=[f"L{layer + 1}" for layer, _head in marked],
            mode="markers", marker=dict(symbol="square-open", size=figure.data[0].marker.size + 4,
                                        line=dict(width=2.5, color="#222222")),
            text=[f"{head_name(layer, head)}: among the heads that carry it" for layer, head in marked],
            hovertemplate="%{text}<extra></extra>", name="top heads"))
    figure.update_xaxes(title="head")
    figure.update_yaxes(title="layer")
    return figure


def probe_figure(accuracy: np.ndarray, control: np.ndarray, layer_labels: Sequence[str], title: str, *,
                 majority: float | None = None, compare: tuple[np.ndarray, np.ndarray] | None = None,
                 compare_name: str = "") -> go.Figure:
    """Probe and control accuracy per layer (mean over folds, bars: the folds' standard deviation) and
    selectivity (probe - control) beside them.

    Args:
        accuracy, control: float [layer, fold].
        majority: accuracy of always answering the commonest label (a dotted line).
        compare: another run's (accuracy, control) drawn dashed (e.g. with heads knocked out).
    """
    figure = go.Figure()

    def curves(probe: np.ndarray, controlled: np.ndarray, suffix: str, dash: str) -> None:
        for name, values, colour in (("probe", probe, "#1f6f8b"), ("control task", controlled, "#999999")):
            figure.add_trace(go.Scatter(
                x=list(layer_labels), y=values.mean(1), error_y=dict(type="data", array=values.std(1), visible=True),
                mode="lines+markers", name=f"{name}{suffix}", line=dict(color=colour, dash=dash),
                hovertemplate="%{x}: %{y:.3f}<extra>" + f"{name}{suffix}" + "</extra>"))
        figure.add_trace(go.Bar(x=list(layer_labels), y=probe.mean(1) - controlled.mean(1), name=f"selectivity{suffix}",
                                marker_color="#d62728" if not suffix else "#f4a6a6", opacity=0.55, yaxis="y2",
                                hovertemplate="%{x}: %{y:+.3f}<extra>selectivity" + suffix + "</extra>"))

    curves(accuracy, control, "", "solid")
    if compare is not None:
        curves(compare[0], compare[1], f" ({compare_name})", "dash")
    if majority is not None:
        figure.add_hline(y=majority, line=dict(color="#444444", dash="dot", width=1),
                         annotation_text="always the commonest label", annotation_position="bottom right")
    selectivities = [accuracy.mean(1) - control.mean(1)] + ([compare[0].mean(1) - compare[1].mean(1)] if compare
                                                            else [])
    low = min(-0.05, float(min(values.min() for values in selectivities)) - 0.05)  # a negative selectivity shows
    calm(figure, title=wrap_title(title, 90), height=460, barmode="group",
         yaxis=dict(title="accuracy (cross-validated)", range=[0, 1.05]),
         yaxis2=dict(title="selectivity = probe - control", overlaying="y", side="right",
                     range=[low, 1.05], showgrid=False, zeroline=True),
         legend=dict(orientation="h", y=-0.2), margin=TWO_LINE_TITLE_MARGIN)
    figure.update_xaxes(type="category")
    return figure
