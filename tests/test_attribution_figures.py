"""The Attribution page's new figures: the section bar, the agreement heatmap, the layer conductance."""

from __future__ import annotations

import numpy as np

from cbert_core.views.attribution_figures import agreement_figure, group_bar_figure, layer_group_figure


def test_the_section_bar_has_one_bar_per_method_and_keeps_repeated_titles_apart() -> None:
    shares = {"Integrated Gradients": np.array([0.5, -0.25, np.nan]), "Leave one out": np.array([0.1, 0.2, 0.7])}
    figure = group_bar_figure(["HPI", "PLAN <b>", "PLAN <b>"], shares, "title")
    assert [trace.name for trace in figure.data] == list(shares)
    labels = list(figure.data[0].y)
    assert len(set(labels)) == 3 and "<b>" not in "".join(labels)  # numbered, escaped
    assert list(figure.data[0].text) == ["+50%", "-25%", ""]  # not covered: no bar, no number


def test_the_agreement_heatmap_writes_each_correlation_and_marks_the_incomparable() -> None:
    correlation = np.array([[1.0, 0.25], [0.25, np.nan]])
    figure = agreement_figure(["A", "B"], correlation, "title")
    assert [list(row) for row in figure.data[0].text] == [["1.00", "0.25"], ["0.25", "–"]]
    assert (figure.data[0].zmin, figure.data[0].zmax) == (-1, 1)


def test_layer_conductance_rows_are_layers() -> None:
    figure = layer_group_figure(["HPI", "PLAN", "[CLS]/[SEP]"], np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]), "t")
    assert list(figure.data[0].y) == ["layer 1", "layer 2"] and len(figure.data[0].x) == 3
