"""The Predictions page's figures: probability axes that read small probabilities, cosine bars with their scale."""

from __future__ import annotations

import numpy as np
import pytest

from cbert_core.views.prediction_figures import cosine_bars, probability_bars


def tick_labels(axis) -> list[str]:
    """The tick labels plotly draws for a linear axis with tick0/dtick/tickformat set (d3's ".N%" is Python's)."""
    assert axis.dtick is not None and axis.tickformat is not None and axis.range is not None
    spec = axis.tickformat
    ticks = np.arange(0, int(np.floor(axis.range[1] / axis.dtick + 1e-9)) + 1) * axis.dtick + (axis.tick0 or 0)
    return [format(float(tick), spec) for tick in ticks]


@pytest.mark.parametrize("top", [0.6, 0.04, 0.012, 0.004, 0.0007])
def test_probability_axis_labels_every_tick_distinctly(top: float) -> None:
    probs = np.array([top, top / 2, top / 3, top / 10], np.float32)
    figure = probability_bars(["a", "b", "c", "d"], probs, "t")
    axis = figure.layout.xaxis
    labels = tick_labels(axis)
    assert axis.range[1] >= top  # the longest bar fits
    assert 4 <= len(labels) <= 12
    assert len(set(labels)) == len(labels)  # no two ticks read alike ("0%", "0%", ...)
    assert all(label.strip("0.%") for label in labels[1:])  # only the first tick reads zero


def test_probability_axis_keeps_whole_percents_for_large_probabilities() -> None:
    axis = probability_bars(["a", "b"], np.array([0.7, 0.2], np.float32), "t").layout.xaxis
    assert axis.tickformat == ".0%" and axis.range[1] <= 1.0


def test_cosine_bars_fixed_axis_reference_line_and_share_beside_the_cosine() -> None:
    cosines = np.array([0.081, 0.098], np.float32)
    shares = np.exp(cosines / 0.05) / np.exp(cosines / 0.05).sum()
    figure = cosine_bars(["pneumonia <b>present</b>", "heart failure"], cosines, shares, temperature=0.05,
                         reference=0.134, margin=0.07, title="t")
    bars = figure.data[0]
    np.testing.assert_allclose(bars.x, cosines)
    assert list(bars.y) == ["pneumonia &lt;b&gt;present&lt;/b&gt;", "heart failure"]
    assert list(bars.text) == ["0.081", "0.098"]
    np.testing.assert_allclose(bars.customdata, shares)
    assert "cosine %{x:.3f}" in bars.hovertemplate and "%{customdata:.0%}" in bars.hovertemplate
    assert tuple(figure.layout.xaxis.range) == (-1, 1) and "cosine similarity" in figure.layout.xaxis.title.text
    lines = [shape for shape in figure.layout.shapes if shape.type == "line"]
    assert len(lines) == 1 and lines[0].x0 == lines[0].x1 == pytest.approx(0.134)
    band = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(band) == 1 and (band[0].x0, band[0].x1) == pytest.approx((0.134, 0.204))
    assert any("unrelated text 0.134" in annotation.text for annotation in figure.layout.annotations)


def test_small_probabilities_in_titles_do_not_read_zero() -> None:
    from cbert_core.views.prediction_figures import format_probability

    assert format_probability(0.2346) == "23.5%"
    assert format_probability(0.00029) == "0.029%"
    assert format_probability(0.0) == "0.0%" and format_probability(float("nan")) == "not scored"
