"""Plotly figures for the Evaluate page: confusion matrix, reliability diagram, slices, behaviour tests.

Data in (numpy arrays and tables), figure out; no torch. Class names, slice values and test names
come from the user's file, so they are escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cbert_core.views.labels import escape
from cbert_core.views.look import calm

BEFORE_COLOUR = "#8a6d3b"
AFTER_COLOUR = "#1f6f8b"
WORSE_COLOUR = "#b4443c"
BETTER_COLOUR = "#3c7d4f"


def confusion_heatmap(confusion: np.ndarray, classes: Sequence[str], *, title: str = "Confusion matrix") -> go.Figure:
    """Counts of gold (rows) against predicted (columns) classes; a cell can be clicked (its x and y are the
    class numbers, so a selection names the cell whatever the class names are)."""
    counts = np.asarray(confusion)
    names = [escape(str(name)) for name in classes]
    positions = list(range(len(names)))
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    figure = go.Figure(go.Heatmap(
        z=share, x=positions, y=positions, colorscale="Blues", zmin=0, zmax=1, text=counts.astype(str),
        texttemplate="%{text}", customdata=np.stack([np.broadcast_to(np.array(names)[None, :], counts.shape),
                                                     np.broadcast_to(np.array(names)[:, None], counts.shape)], -1),
        hovertemplate="gold %{customdata[1]}, predicted %{customdata[0]}: %{text} "
                      "(%{z:.0%} of the gold class)<extra></extra>",
        colorbar=dict(title="share of gold", tickformat=".0%")))
    calm(figure, title=title, height=max(300, 60 * len(names) + 140))
    figure.update_yaxes(title="gold", autorange="reversed", tickvals=positions, ticktext=names)
    figure.update_xaxes(title="predicted", tickvals=positions, ticktext=names)
    return figure


def reliability_figure(edges: np.ndarray, before: tuple[np.ndarray, np.ndarray, np.ndarray, float],
                       after: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None,
                       *, temperature: float | None = None) -> go.Figure:
    """Accuracy against confidence per bin (each a (counts, mean confidence, accuracy, ECE) tuple), before and
    after temperature scaling, with the diagonal of perfect calibration."""
    centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
    width = float(edges[1] - edges[0])
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999", dash="dot"),
                                name="perfectly calibrated", hoverinfo="skip"))
    versions = [("as predicted", before, BEFORE_COLOUR)]
    if after is not None:
        versions.append((f"temperature scaled (T = {temperature:.2f})" if temperature else "temperature scaled",
                         after, AFTER_COLOUR))
    for offset, (name, (counts, confidence, accuracy, ece), colour) in enumerate(versions):
        shown = np.asarray(counts) > 0
        figure.add_trace(go.Bar(
            x=centres[shown] + (offset - (len(versions) - 1) / 2) * width / len(versions),
            y=np.asarray(accuracy)[shown], width=width / len(versions) * 0.9, marker_color=colour, opacity=0.75,
            name=f"{name}: ECE {ece:.3f}", customdata=np.stack([np.asarray(counts)[shown],
                                                               np.asarray(confidence)[shown]], -1),
            hovertemplate="confidence %{customdata[1]:.2f} (mean), right %{y:.0%} of %{customdata[0]} "
                          "units<extra></extra>"))
    calm(figure, title="Reliability: share right at each confidence (held-out check rows)", height=380,
         barmode="overlay", legend=dict(orientation="h", y=-0.2))
    figure.update_xaxes(title="confidence (probability of the predicted class)", range=[0, 1])
    figure.update_yaxes(title="share right", range=[0, 1], tickformat=".0%")
    return figure


def slice_figure(table: pd.DataFrame, overall: float, metric: str, *, top: int = 20) -> go.Figure:
    """The ``top`` slices with the largest gap (either way) as a forest plot: metric and 95% interval per slice,
    the whole collection's metric as a line."""
    shown = table.reindex(table["gap"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    shown = shown.sort_values("gap", kind="stable")
    names = [f"{escape(str(column))} = {escape(str(value))} (n={size:,})" for column, value, size in
             zip(shown["slice by"], shown["value"], shown["size"])]
    colours = [WORSE_COLOUR if gap < 0 else BETTER_COLOUR for gap in shown["gap"]]
    low = (shown["metric"] - shown["low"]).fillna(0).clip(lower=0)
    high = (shown["high"] - shown["metric"]).fillna(0).clip(lower=0)
    figure = go.Figure(go.Scatter(
        x=shown["metric"], y=names, mode="markers", marker=dict(color=colours, size=9),
        error_x=dict(type="data", symmetric=False, array=high, arrayminus=low, color="#777"),
        hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    figure.add_vline(x=overall, line=dict(color="#444", dash="dash"),
                     annotation_text=f"whole collection {overall:.3f}", annotation_position="top")
    calm(figure, title=f"{escape(metric)} per slice, with 95% bootstrap intervals (largest gaps)",
         height=max(300, 26 * len(names) + 120), showlegend=False)
    figure.update_xaxes(title=escape(metric), range=[0, 1.02])
    return figure


def behaviour_figure(names: Sequence[str], changed: Sequence[float], failed: Sequence[float],
                     expectations: Sequence[str]) -> go.Figure:
    """Per behaviour test: the share of predictions that changed and the share that failed the expectation."""
    labels = [f"{escape(name)} (expect {'a change' if expect == 'change' else 'no change'})"
              for name, expect in zip(names, expectations)]
    figure = go.Figure([
        go.Bar(y=labels, x=list(changed), orientation="h", name="prediction changed", marker_color=AFTER_COLOUR,
               hovertemplate="%{y}: %{x:.0%} changed<extra></extra>"),
        go.Bar(y=labels, x=list(failed), orientation="h", name="failed the expectation", marker_color=WORSE_COLOUR,
               hovertemplate="%{y}: %{x:.0%} failed<extra></extra>"),
    ])
    calm(figure, title="Behaviour tests", barmode="group", height=max(260, 70 * len(labels) + 100),
         legend=dict(orientation="h", y=-0.15))
    figure.update_xaxes(title="share of the edited notes", range=[0, 1], tickformat=".0%")
    figure.update_yaxes(autorange="reversed")
    return figure
