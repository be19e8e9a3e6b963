"""bertviz pages as the app sends them: numbered from 1, opening on the chosen head, sized to fit.

What the browser draws from these pages is checked in tests/test_bertviz_browser.py; here the
page text and the size arithmetic, and that a changed bertviz template fails loudly.
"""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest

from cbert_core.views import bertviz_offline
from cbert_core.views.bertviz_offline import (
    MAX_HEAD_VIEW_TOKENS,
    MAX_MODEL_VIEW_TOKENS,
    BertvizTemplateError,
    bertviz_html,
    frame_size,
    layout_constants,
)


def random_attention(layers: int, heads: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    raw = rng.random((layers, heads, size, size)).astype(np.float32)
    return raw / raw.sum(-1, keepdims=True)


def tokens_of(size: int) -> list[str]:
    return [f"w{i}" for i in range(size)]


def labels_of(page: str) -> dict:
    """The numbering the edited bertviz script draws (window.cbertView)."""
    return json.loads(re.search(r"window\.cbertView = (\{.*?\});", page).group(1))


def params_of(page: str) -> dict:
    return json.loads(re.search(r"const params = (\{.*?\});", page, flags=re.DOTALL).group(1))


def test_model_view_numbers_layers_and_heads_from_one() -> None:
    page = bertviz_html("model", random_attention(3, 4, 6), tokens_of(6))
    labels = labels_of(page)
    assert labels["layers"] == [1, 2, 3] and labels["heads"] == [1, 2, 3, 4]
    # Every place bertviz writes a layer or head number now reads the 1-based labels.
    assert ".text(window.cbertView.heads[i])" in page and ".text(window.cbertView.layers[i])" in page
    assert "'Layer ' + window.cbertView.layers[layerIndex] + \", Head \" + window.cbertView.heads[headIndex]" in page
    assert not re.search(r"\.text\(config\.(heads|layers)\[i\]\)", page)
    assert "'Layer ' + config.layers" not in page
    # The data bertviz indexes by is untouched: 0-based, so colours and slicing stay bertviz's own.
    params = params_of(page)
    assert params["include_layers"] == [0, 1, 2] and params["include_heads"] == [0, 1, 2, 3]

    subset = bertviz_html("model", random_attention(3, 4, 6), tokens_of(6), layer_indices=[2, 5, 11])
    assert labels_of(subset)["layers"] == [3, 6, 12]


def test_head_view_starts_on_the_chosen_head_with_numbered_squares() -> None:
    attention = random_attention(4, 6, 8)
    page = bertviz_html("head", attention, tokens_of(8), layer=3, heads=[4])
    assert params_of(page)["heads"] == [4]  # bertviz selects only head index 4 (shown as head 5)
    assert labels_of(page)["heads"] == [1, 2, 3, 4, 5, 6]
    assert ".text((d, i) => window.cbertView.heads[i])" in page  # numbers drawn on the squares
    assert '"Head " + window.cbertView.heads[i]' in page  # and a tooltip
    assert "Layer: <select" in page and "<b>4</b>" in page  # the page's layer 3 is "Layer: 4"
    assert params_of(bertviz_html("head", attention, tokens_of(8), layer=0))["heads"] is None  # default: all
    for wrong in ([], [6], [-1]):
        with pytest.raises(ValueError, match="heads"):
            bertviz_html("head", attention, tokens_of(8), layer=0, heads=wrong)


def test_frame_size_follows_bertviz_layout() -> None:
    model = layout_constants("model")
    head = layout_constants("head")
    # bertviz 1.4.1: a 970 px grid; each thumbnail is 7 px per token (at 12 heads) plus 5 px padding at
    # top and bottom, under a 38 px axis (15 + 5 + 13 + 5); the head view is 22.5 px per token under a
    # 30 px row of head squares, below our 24 px "Layer" line.
    axis = model["HEADING_TEXT_SIZE"] + model["HEADING_PADDING"] + model["TEXT_SIZE"] + model["TEXT_PADDING"]
    assert (model["DIV_WIDTH"], axis, model["THUMBNAIL_PADDING"]) == (970, 38, 5)
    assert frame_size("model", 12, 12, 48) == (970, 12 * (48 * 7 + 2 * 5) + 38)
    assert frame_size("model", 6, 12, 48) == (970, 6 * (48 * 7 + 2 * 5) + 38)
    assert (head["BOXHEIGHT"], head["TEXT_TOP"]) == (22.5, 30)
    assert frame_size("head", 12, 12, 128)[1] == 24 + 128 * 22.5 + 30

    # Taller with more layers or tokens; more heads make bertviz's thumbnails shorter, and wider once
    # they reach their least width.
    assert frame_size("model", 12, 12, 48)[1] > frame_size("model", 6, 12, 48)[1] > frame_size("model", 1, 12, 48)[1]
    assert frame_size("model", 6, 12, 48)[1] > frame_size("model", 6, 12, 20)[1]
    assert frame_size("model", 6, 24, 48)[1] < frame_size("model", 6, 12, 48)[1]
    assert frame_size("model", 6, 32, 48)[0] > frame_size("model", 6, 12, 48)[0]
    assert frame_size("head", 1, 12, 128)[1] > frame_size("head", 1, 12, 40)[1]
    assert frame_size("head", 1, 32, 10)[0] > frame_size("head", 1, 12, 10)[0]
    # A frame narrower than bertviz's 970 px gets a grid its width, down to a least width.
    assert frame_size("model", 6, 12, 48, width=940) == (940, frame_size("model", 6, 12, 48)[1])
    assert frame_size("model", 6, 12, 48, width=2000)[0] == 970
    assert 400 < frame_size("model", 6, 12, 48, width=100)[0] < 970
    # The height for an iframe leaves room for a sideways scroll bar.
    assert frame_size("model", 6, 12, 48, scroll_bar=True)[1] > frame_size("model", 6, 12, 48)[1]


def test_the_largest_pages_still_render() -> None:
    model = bertviz_html("model", random_attention(12, 12, MAX_MODEL_VIEW_TOKENS), tokens_of(MAX_MODEL_VIEW_TOKENS))
    head = bertviz_html("head", random_attention(12, 12, MAX_HEAD_VIEW_TOKENS), tokens_of(MAX_HEAD_VIEW_TOKENS),
                        layer=11, heads=[11])
    assert labels_of(model)["layers"][-1] == 12 and "<b>12</b>" in head


@pytest.mark.parametrize(("kind", "line"), [
    ("model", ".text(config.heads[i])"),
    ("model", "const DIV_WIDTH = 970;"),
    ("head", '.attr("height", CHECKBOX_SIZE);'),
])
def test_a_changed_bertviz_template_fails_loudly(monkeypatch: pytest.MonkeyPatch, kind: str, line: str) -> None:
    """If a bertviz release rewrites a line we edit, rendering raises instead of drawing 0-based numbers."""
    module = importlib.import_module(f"bertviz.{kind}_view")
    script = bertviz_offline.bertviz_script(kind)
    assert line in script  # the line exists in the pinned bertviz
    changed = script.replace(line, line.replace("(", "( ").replace(" = ", " =  "))  # a space more

    class Changed:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def read(self) -> str:
            return changed

    monkeypatch.setattr(module, "open", Changed, raising=False)  # bertviz reads its template with open()
    with pytest.raises(BertvizTemplateError, match="bertviz"):
        bertviz_html(kind, random_attention(2, 3, 5), tokens_of(5), layer=0)


def test_a_changed_bertviz_layout_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    script = bertviz_offline.bertviz_script("model")
    changed = script.replace("config.thumbnailBoxHeight = 7 * (12 / config.totalHeads);",
                             "config.thumbnailBoxHeight = 9;")
    assert changed != script
    layout_constants.cache_clear()
    monkeypatch.setattr(bertviz_offline, "bertviz_script", lambda kind: changed)
    try:
        with pytest.raises(BertvizTemplateError, match="thumbnails"):
            frame_size("model", 6, 12, 48)
    finally:
        monkeypatch.undo()
        layout_constants.cache_clear()
