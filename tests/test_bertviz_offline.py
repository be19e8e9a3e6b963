"""bertviz pages as the app sends them: numbered from 1, opening on the chosen head, sized to fit.

What the browser draws from these pages is checked in tests/test_bertviz_browser.py; here the
page text and the size arithmetic, that the page gives bertviz's script what it reads without
torch or bertviz's Python, and that a changed bertviz script fails loudly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cbert_core.views import bertviz_offline
from cbert_core.views.bertviz_offline import (
    ELEMENT_LOOKUP,
    MAX_HEAD_VIEW_TOKENS,
    MAX_MODEL_VIEW_TOKENS,
    PARAMS_READ,
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


@pytest.fixture()
def bertviz_js(monkeypatch: pytest.MonkeyPatch):
    """Stand in another text for bertviz's head_view.js / model_view.js (as a new bertviz release would)."""
    def install(kind: str, changed: str) -> None:
        real = bertviz_offline.bertviz_script
        monkeypatch.setattr(bertviz_offline, "bertviz_script", lambda k: changed if k == kind else real(k))
        layout_constants.cache_clear()

    yield install
    monkeypatch.undo()
    layout_constants.cache_clear()


@pytest.mark.parametrize(("kind", "line"), [
    ("model", ".text(config.heads[i])"),
    ("model", "const DIV_WIDTH = 970;"),
    ("head", '.attr("height", CHECKBOX_SIZE);'),
])
def test_a_changed_bertviz_template_fails_loudly(bertviz_js, kind: str, line: str) -> None:
    """If a bertviz release rewrites a line we edit, rendering raises instead of drawing 0-based numbers."""
    script = bertviz_offline.bertviz_script(kind)
    assert line in script  # the line exists in the pinned bertviz
    bertviz_js(kind, script.replace(line, line.replace("(", "( ").replace(" = ", " =  ")))  # a space more
    with pytest.raises(BertvizTemplateError, match="bertviz"):
        bertviz_html(kind, random_attention(2, 3, 5), tokens_of(5), layer=0)


@pytest.mark.parametrize("kind", ["head", "model"])
def test_the_page_gives_bertviz_script_what_it_reads(kind: str) -> None:
    """Every params key and element bertviz's installed script reads is on the page."""
    script = bertviz_offline.bertviz_script(kind)
    page = bertviz_html(kind, random_attention(2, 3, 5), tokens_of(5), layer=1)
    params = params_of(page)
    read = {quoted or dotted for quoted, dotted in PARAMS_READ.findall(script)}
    assert read and read <= params.keys()
    assert params["attention"][0]["left_text"] == params["attention"][0]["right_text"] == tokens_of(5)
    script_start = page.index('<script type="text/javascript">')  # the page's HTML lies between the scripts
    container = page[page.rindex("</script>", 0, script_start):script_start]
    assert f'id="{params["root_div_id"]}"' in container
    looked_up = set(ELEMENT_LOOKUP.findall(script))
    # bertviz's own single-text page has no "filter" drop-down either (it exists for sentence pairs).
    assert "vis" in looked_up and looked_up - {"filter"} <= set(re.findall(r'id="([^"]+)"', container))


@pytest.mark.parametrize(("kind", "line", "new_line"), [
    ("head", "config.rootDivId = params['root_div_id'];",
     "config.rootDivId = params['root_div_id']; config.width = params['width'];"),
    ("model", "config.mode = params['display_mode'];", "config.mode = params.mode;"),
    ("head", "$(`#${config.rootDivId} #vis`).empty();", "$(`#${config.rootDivId} #canvas`).empty();"),
    ("model", "d3.select(`#${config.rootDivId} #vis`)", "d3.select(`#${config.rootDivId} #grid`)"),
    ("head", "const params = PYTHON_PARAMS;", "const params = JSON.parse(PYTHON_PARAMS);"),
])
def test_a_bertviz_script_reading_other_data_fails_loudly(bertviz_js, kind: str, line: str, new_line: str) -> None:
    """A bertviz release whose script reads a key or looks up an element this page lacks would draw
    nothing: rendering raises instead."""
    script = bertviz_offline.bertviz_script(kind)
    assert script.count(line) == 1
    bertviz_js(kind, script.replace(line, new_line))
    with pytest.raises(BertvizTemplateError, match=f"{kind}_view.js"):
        bertviz_html(kind, random_attention(2, 3, 5), tokens_of(5), layer=0)


def test_token_text_arrives_as_written() -> None:
    """Tokens that look like numbers or lists are not squeezed with the attention values."""
    tokens = ["[CLS]", "[0.0,", "1, 2", "0.0", "</w>", "Ġbpe", "[SEP]"]
    for kind in ("head", "model"):
        sent = params_of(bertviz_html(kind, random_attention(2, 3, len(tokens)), tokens, layer=0))
        # As in bertviz: byte-level BPE's word mark shows as a space.
        assert sent["attention"][0]["left_text"] == tokens[:5] + [" bpe", "[SEP]"]


def test_building_both_views_imports_neither_torch_nor_bertviz() -> None:
    """Views import no torch: the pages come from bertviz's JavaScript files, not its Python (which imports torch)."""
    root = Path(__file__).resolve().parent.parent
    code = ("import sys; import numpy as np; import cbert_core.views.bertviz_offline as b; "
            "a = np.full((2, 3, 4, 4), 0.25); tokens = ['[CLS]', 'a', 'b', '[SEP]']; "
            "pages = [b.bertviz_html('head', a, tokens, layer=1, heads=[2]), b.bertviz_html('model', a, tokens)]; "
            "assert all('const params = {' in page for page in pages); "
            "print('torch' in sys.modules, any(m.partition('.')[0] == 'bertviz' for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]  # torch imported, bertviz imported


def test_a_changed_bertviz_layout_fails_loudly(bertviz_js) -> None:
    script = bertviz_offline.bertviz_script("model")
    changed = script.replace("config.thumbnailBoxHeight = 7 * (12 / config.totalHeads);",
                             "config.thumbnailBoxHeight = 9;")
    assert changed != script
    bertviz_js("model", changed)
    with pytest.raises(BertvizTemplateError, match="thumbnails"):
        frame_size("model", 6, 12, 48)
