"""The Mechanisms page's figures: grids whose point index is row * columns + column, unpatched cells grey,
the top heads outlined, probe curves with fold spread and selectivity."""

from __future__ import annotations

import numpy as np

from cbert_core.views.mechanism_figures import (
    UNPATCHED_COLOUR,
    head_patch_figure,
    position_patch_figure,
    probe_figure,
)


def test_position_grid_points_are_row_major_and_unpatched_cells_are_grey() -> None:
    share = np.array([[0.0, 1.0, np.nan], [0.5, -0.2, np.nan]])
    figure = position_patch_figure(share, share + 3, ["0 [CLS]", "1 denies", "2 [SEP]"], ["before layer 1",
                                   "before layer 2"], "title")
    cells = figure.data[0]
    assert len(cells.x) == 6
    index = 1 * 3 + 1  # layer 2, position 1
    assert (cells.y[index], cells.x[index]) == ("before layer 2", "1 denies")
    assert cells.marker.color[index] == -0.2
    assert "share -0.200" in cells.text[index] and "target 2.8000" in cells.text[index]
    grey = figure.data[1]
    assert grey.marker.color == UNPATCHED_COLOUR and list(grey.x) == ["2 [SEP]", "2 [SEP]"]
    assert "not patched" in cells.text[2]


def test_head_grid_outlines_the_top_heads_and_scales_to_the_largest_share() -> None:
    share = np.zeros((2, 3))
    share[1, 2] = 2.5
    figure = head_patch_figure(share, share, "heads", marked=[(1, 2)])
    cells = figure.data[0]
    assert (cells.y[5], cells.x[5]) == ("L2", "H3")
    assert cells.marker.cmax == 2.5 and cells.marker.cmin == -2.5
    assert figure.data[-1].name == "top heads" and list(figure.data[-1].x) == ["H3"]


def test_probe_figure_shows_fold_spread_and_selectivity_and_a_comparison() -> None:
    accuracy = np.array([[0.5, 0.7], [0.9, 1.0]])
    control = np.array([[0.5, 0.5], [0.6, 0.6]])
    figure = probe_figure(accuracy, control, ["embeddings", "layer 1"], "t", majority=0.6,
                          compare=(accuracy * 0.5, control), compare_name="without 2 heads")
    probe, controlled, selectivity = figure.data[:3]
    np.testing.assert_allclose(probe.y, [0.6, 0.95])
    np.testing.assert_allclose(probe.error_y.array, [0.1, 0.05])
    np.testing.assert_allclose(selectivity.y, [0.1, 0.35])
    assert [trace.name for trace in figure.data[3:]] == ["probe (without 2 heads)", "control task (without 2 heads)",
                                                         "selectivity (without 2 heads)"]


def test_a_negative_selectivity_stays_on_its_axis() -> None:
    accuracy = np.array([[0.5, 0.5], [0.6, 0.6]])
    control = np.array([[0.9, 0.9], [0.6, 0.6]])
    figure = probe_figure(accuracy, control, ["embeddings", "layer 1"], "t")
    assert figure.layout.yaxis2.range[0] <= -0.4
