"""Plotly figures for the Compare page. Data in, figure out; no Streamlit, no torch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import plotly.graph_objects as go

from cbert_core.views.labels import escape
from cbert_core.views.look import calm

CkaShown = Literal["cka", "above", "reference"]
CKA_TITLES: dict[str, str] = {
    "cka": "Linear CKA",
    "above": "CKA above the random-weight reference",
    "reference": "Reference: CKA against a random-weight copy of the second model",
}


def layer_axis(count: int) -> list[str]:
    """Hidden-state indices as short axis labels: "emb", "L1", "L2", ..."""
    return ["emb"] + [f"L{index}" for index in range(1, count)]


def cka_heatmap(cka: np.ndarray, reference: np.ndarray, name_a: str, name_b: str,
                shown: CkaShown = "cka") -> go.Figure:
    """Layer-by-layer CKA of two models, its reference, or the difference; the hover gives all three.

    Args:
        cka: float [layer_a + 1, layer_b + 1] linear CKA of A (rows) against B (columns).
        reference: the same shape: CKA of A against a random-weight copy of B, on the same words.
        name_a, name_b: model names (escaped here).
        shown: "cka" and "reference" on a fixed 0-1 scale (comparable with each other), or
            "above" (cka - reference) on a diverging scale centred at 0.
    """
    if cka.shape != reference.shape or cka.ndim != 2:
        raise ValueError("cka and reference must be two matrices of the same shape")
    cka = cka.astype(np.float32)
    reference = reference.astype(np.float32)
    above = cka - reference
    customdata = np.stack([cka, reference, above], axis=-1)  # [layer_a + 1, layer_b + 1, 3]
    a, b = escape(name_a), escape(name_b)
    hover = (f"{a} %{{y}} · {b} %{{x}}<br>CKA %{{customdata[0]:.3f}}"
             f"<br>random-weight {b}: %{{customdata[1]:.3f}}<br>above it: %{{customdata[2]:+.3f}}<extra></extra>")
    if shown == "above":
        finite = np.abs(above[np.isfinite(above)])
        limit = float(max(0.1, finite.max() if finite.size else 0.0))
        scale = dict(z=above, zmin=-limit, zmax=limit, zmid=0.0, colorscale="RdBu",
                     colorbar=dict(title="CKA −<br>reference"))
    else:
        scale = dict(z=cka if shown == "cka" else reference, zmin=0.0, zmax=1.0, colorscale="Viridis",
                     colorbar=dict(title="CKA"))
    figure = go.Figure(go.Heatmap(x=layer_axis(cka.shape[1]), y=layer_axis(cka.shape[0]), customdata=customdata,
                                  hovertemplate=hover, **scale))
    calm(figure, title=CKA_TITLES[shown], height=max(360, 30 * cka.shape[0] + 140))
    figure.update_yaxes(title=a, autorange="reversed", type="category")
    figure.update_xaxes(title=b, type="category")
    return figure
