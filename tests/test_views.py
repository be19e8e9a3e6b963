"""Views: offline bertviz, escaping in HTML and figures, payload sizes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cbert_core.views.attention_figures import attention_heatmap, head_grid
from cbert_core.views.bertviz_offline import MAX_HEAD_VIEW_TOKENS, MAX_MODEL_VIEW_TOKENS, bertviz_html, offline_scripts
from cbert_core.views.labels import escape, position_labels
from cbert_core.views.text_html import pieces_html, scores_html, segments_html

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> </script>"


def random_attention(layers: int, heads: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    raw = rng.random((layers, heads, size, size)).astype(np.float32)
    return raw / raw.sum(-1, keepdims=True)


def scripts_of(page: str) -> list[str]:
    return re.findall(r"<script[^>]*>(.*?)</script>", page, flags=re.DOTALL)


@pytest.mark.parametrize("kind", ["head", "model"])
def test_bertviz_is_offline_and_token_text_cannot_close_its_script(kind: str) -> None:
    tokens = ["[CLS]", "<", "/", "script", ">", "</script>", "<img src=x onerror=alert(2)>", "&amp;", "[SEP]"]
    page = bertviz_html(kind, random_attention(2, 3, len(tokens)), tokens, layer=1)
    vendor = offline_scripts()
    assert page.startswith(vendor) and "d3" in vendor and "jQuery" in vendor
    assert "cdnjs" not in page  # bertviz's require.js, d3 and jQuery downloads are gone
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    # Only our own script blocks, and each closes where we closed it: the token text
    # "</script>" travels as \u003c/script\u003e inside the JSON.
    assert page.count("</script>") == len(scripts_of(page))
    assert "\\u003c/script\\u003e" in page
    assert "<img src=x" not in page


def test_bertviz_head_view_holds_one_layer_and_rounds() -> None:
    tokens = [f"t{i}" for i in range(20)]
    attention = random_attention(4, 2, 20)
    page = bertviz_html("head", attention, tokens, layer=2)
    params = json.loads(re.search(r"const params = (\{.*?\});", page, flags=re.DOTALL).group(1))
    values = params["attention"][0]["attn"]
    assert len(values) == 1  # one layer only
    np.testing.assert_allclose(np.asarray(values[0]), np.round(attention[2], 3), atol=1e-9)


def test_bertviz_limits_and_payload() -> None:
    with pytest.raises(ValueError, match="at most"):
        bertviz_html("model", random_attention(1, 1, MAX_MODEL_VIEW_TOKENS + 1),
                     ["x"] * (MAX_MODEL_VIEW_TOKENS + 1))
    head_page = bertviz_html("head", random_attention(12, 12, MAX_HEAD_VIEW_TOKENS),
                             ["tok"] * MAX_HEAD_VIEW_TOKENS, layer=5)
    model_page = bertviz_html("model", random_attention(12, 12, MAX_MODEL_VIEW_TOKENS),
                              ["tok"] * MAX_MODEL_VIEW_TOKENS)
    assert len(head_page.encode()) < 2_500_000
    assert len(model_page.encode()) < 2_500_000


def test_escape_shows_markup_and_neutralizes_bidi() -> None:
    assert escape(HOSTILE).count("<") == 0
    assert escape("a\u202eb") == "a\ufffdb"
    labels = position_labels(["<b>", "x"], [0, 1])
    assert labels == ["0 &lt;b&gt;", "1 x"]


def test_text_views_escape_the_note() -> None:
    text = "Patient " + HOSTILE + " denies."
    offsets = np.array([[0, 7], [8, 9], [9, 15]], dtype=np.int32)
    for page in (pieces_html(text, offsets, np.array([0, 1, 2]), title=["<x>"] * 3),
                 segments_html(text, [("<b>", 0, 7)], [(0, len(text))]),
                 scores_html(text, offsets, np.array([0.5, -0.2, 0.1]))):
        assert "<script" not in page and "<img" not in page
        assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_figures_carry_escaped_labels() -> None:
    labels = position_labels(["[CLS]", "<img src=x onerror=alert(2)>", "[SEP]"], range(3))
    figure = attention_heatmap(random_attention(1, 1, 3)[0, 0], labels, labels, "t")
    assert all("<" not in label for label in figure.data[0].x)
    grid = head_grid(np.arange(12, dtype=np.float32).reshape(3, 4), "entropy", (1, 2))
    assert len(grid.data[0].x) == 12
