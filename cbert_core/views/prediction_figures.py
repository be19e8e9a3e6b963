"""Plotly figures for the Predictions page: probability bars and zero-shot cosine bars. No Streamlit.

Labels are escaped here (:func:`cbert_core.views.labels.escape`): candidates and
descriptions come from the note or from the user.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.labels import escape
from cbert_core.views.look import TWO_LINE_TITLE_MARGIN, calm

BAR_COLOUR = "#1f6f8b"
REFERENCE_COLOUR = "#8a6d3b"
COSINE_RANGE = (-1.0, 1.0)
COSINE_AXIS_TITLE = "cosine similarity (whole range, −1 to 1: 1 = same direction, −1 = opposite)"


def probability_axis(top: float) -> dict:
    """Settings of a probability axis from 0 to a bit above ``top``: round ticks, each labelled distinctly.

    A fixed ``.0%`` format labels every tick below 1 % as "0%" (the top candidates of
    an unsure masked-LM are often all under 1 %). The tick step is a 1-2-5 multiple of
    a power of ten, at most a fifth of the range (5-11 ticks), and the format has as
    many decimals as that step needs (0.05 % -> two decimals).

    Returns:
        keyword arguments for ``xaxis``: range, tick0, dtick, tickformat.
    """
    top = float(top) if np.isfinite(top) and top > 0 else 1.0
    upper = min(1.0, top * 1.08)
    rough = upper / 5
    power = 10.0 ** math.floor(math.log10(rough))
    step = max(multiple * power for multiple in (1, 2, 5) if multiple * power <= rough * (1 + 1e-9))
    decimals = max(0, -math.floor(math.log10(step * 100) + 1e-9))  # percent digits the step needs
    return dict(range=[0.0, upper], tick0=0.0, dtick=step, tickformat=f".{decimals}%")


def format_probability(probability: float) -> str:
    """A probability as a percent that does not read "0.0%" when it is small but not zero (3e-4 -> "0.03%")."""
    if not np.isfinite(probability):
        return "not scored"
    if probability == 0 or probability >= 0.001:
        return f"{probability:.1%}"
    return f"{probability * 100:.2g}%"


def probability_bars(names: Sequence[str], probs: np.ndarray, title: str) -> go.Figure:
    """Horizontal bars of probabilities (fill-mask candidates, class probabilities).

    Args:
        names: [k] labels of the bars (escaped here).
        probs: float [k] probabilities.
        title: already escaped.
    """
    probs = np.asarray(probs, dtype=np.float32)
    axis = probability_axis(float(probs.max()) if probs.size else 1.0)
    hover_decimals = int(axis["tickformat"][1:-1]) + 1
    figure = go.Figure(go.Bar(x=probs, y=[escape(name) for name in names], orientation="h", marker_color=BAR_COLOUR,
                              hovertemplate=f"%{{y}}: %{{x:.{hover_decimals}%}}<extra></extra>"))
    calm(figure, title=title, height=max(220, 28 * len(names) + 90), xaxis=dict(**axis, title="probability"))
    figure.update_yaxes(autorange="reversed", type="category")
    return figure


def cosine_bars(descriptions: Sequence[str], cosines: np.ndarray, shares: np.ndarray, *, temperature: float,
                reference: float, margin: float, title: str) -> go.Figure:
    """Cosine similarity of a text to each description, on the fixed −1..1 axis, with the "none of these" line.

    The axis is fixed at cosine's whole range so that a difference of 0.02 looks like
    one; a dashed line marks ``reference`` (the text's highest cosine to unrelated
    phrases) and a shaded band the ``margin`` above it. The softmax share of each
    description appears only in the hover, beside its cosine.

    Args:
        descriptions: [label] (escaped here).
        cosines: float [label].
        shares: float [label] softmax(cosine / temperature).
        title: already escaped.
    """
    cosines = np.asarray(cosines, dtype=np.float32)
    shares = np.asarray(shares, dtype=np.float32)
    figure = go.Figure(go.Bar(
        x=cosines, y=[escape(d) for d in descriptions], orientation="h", marker_color=BAR_COLOUR,
        text=[f"{c:.3f}" for c in cosines.tolist()], textposition="outside", cliponaxis=False,
        customdata=shares, name="cosine",
        hovertemplate=(f"%{{y}}<br>cosine %{{x:.3f}}<br>share %{{customdata:.0%}} (softmax at temperature "
                       f"{temperature:g}; shares always sum to 100%)<extra></extra>"),
    ))
    low, high = COSINE_RANGE
    figure.add_vrect(x0=reference, x1=min(high, reference + margin), fillcolor=REFERENCE_COLOUR, opacity=0.15,
                     line_width=0, layer="below")
    figure.add_vline(x=reference, line=dict(color=REFERENCE_COLOUR, dash="dash", width=2))
    figure.add_annotation(x=reference, y=1, xref="x", yref="paper", yanchor="bottom", xanchor="left",
                          showarrow=False, text=f"unrelated text {reference:.3f} (+ margin {margin:.3f})",
                          font=dict(color=REFERENCE_COLOUR))
    calm(figure, title=title, height=max(260, 32 * len(descriptions) + 150), showlegend=False,
         margin=TWO_LINE_TITLE_MARGIN)
    figure.update_xaxes(range=[low, high], tickvals=[-1, -0.5, 0, 0.5, 1], zeroline=True, title=COSINE_AXIS_TITLE)
    figure.update_yaxes(autorange="reversed", type="category")
    return figure
