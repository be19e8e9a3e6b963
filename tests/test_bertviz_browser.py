"""bertviz's head and model views in headless Chromium: numbered from 1, opening on the page's head, never cut off.

First the pages bertviz_html writes, drawn in a frame of a given width (no app): what is drawn is as
big as frame_size says, labelled from 1, and the head view opens on the chosen head. Then the real
app at a 1400 x 1000 window on the bundled model (6 layers x 12 heads): the model view's drawing lies
inside its frame, the head view shows the Head picker's head. Screenshots go to tests/screenshots/.
"""

from __future__ import annotations

import html
import time

import numpy as np
import pytest

from browser_support import needs_chromium, open_page, pick, screenshot, set_note, settle, watch
from cbert_core.views.bertviz_offline import bertviz_html, frame_size
from notes import CLINICAL_NOTE

pytestmark = needs_chromium

# The iframe's page: where the drawing is, how far its page scrolls, what it wrote.
MEASURE = """() => {
  const svg = document.querySelector('#vis svg').getBoundingClientRect();
  const page = document.documentElement;
  return {left: svg.left + page.scrollLeft, top: svg.top + page.scrollTop, right: svg.right + page.scrollLeft,
          bottom: svg.bottom + page.scrollTop, scrollWidth: page.scrollWidth, scrollHeight: page.scrollHeight,
          clientWidth: page.clientWidth, clientHeight: page.clientHeight,
          texts: Array.from(document.querySelectorAll('#vis svg text')).map(t => t.textContent)};
}"""
# Head view: per head, the strongest line drawn, the colour of its lines and of its square.
HEADS = """() => {
  const groups = Array.from(document.querySelectorAll('#attention .headAttention'));
  const squares = Array.from(document.querySelectorAll('#vis svg > g:last-of-type rect'));
  return groups.map((g, i) => {
    const lines = Array.from(g.querySelectorAll('line'));
    return {opacity: Math.max(...lines.map(l => +l.getAttribute('stroke-opacity'))),
            line: lines[0].getAttribute('stroke'), square: squares[i].getAttribute('fill')};
  });
}"""


def random_attention(layers: int, heads: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    raw = rng.random((layers, heads, size, size)).astype(np.float32) ** 4
    return raw / raw.sum(-1, keepdims=True)


def numbers(count: int) -> list[str]:
    return [str(n) for n in range(1, count + 1)]


@pytest.fixture()
def framed(chromium):
    """Draw a bertviz page in an iframe ``width`` px wide and ``height`` px tall; return the iframe's frame."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    traffic = watch(tab)

    def draw(page: str, width: int, height: int):
        tab.set_content(f'<body style="margin:0"><iframe width="{width}" height="{height}" style="border:0" '
                        f'srcdoc="{html.escape(page)}"></iframe></body>')
        frame = tab.frames[1]
        frame.wait_for_selector("#vis svg text", timeout=30_000)
        time.sleep(0.3)
        return frame

    yield draw
    assert traffic.outside_requests == [] and traffic.dialogs == []
    context.close()


@pytest.mark.parametrize(("layers", "heads", "tokens", "width"), [
    (6, 12, 48, 940),   # the bundled model in a 1400 px window
    (12, 12, 48, 940),  # Bio_ClinicalBERT's shape
    (2, 5, 9, 700),     # thumbnails of fractional height (7 * 12 / 5 px per token)
    (3, 20, 6, 600),    # narrower than the least grid: the frame scrolls sideways
])
def test_model_view_drawing_is_as_big_as_frame_size_and_numbered_from_one(framed, layers, heads, tokens,
                                                                          width) -> None:
    page = bertviz_html("model", random_attention(layers, heads, tokens), [f"w{i}" for i in range(tokens)])
    drawn_width, drawn_height = frame_size("model", layers, heads, tokens, width=width)
    frame = framed(page, width, frame_size("model", layers, heads, tokens, scroll_bar=True)[1])
    seen = frame.evaluate(MEASURE)
    assert (seen["left"], seen["top"]) == (0, 0)
    assert seen["right"] == pytest.approx(drawn_width, abs=0.5)
    assert seen["bottom"] == pytest.approx(drawn_height, abs=1)
    assert seen["scrollHeight"] <= seen["clientHeight"]  # the frame is tall enough: no scrolling down
    if drawn_width <= width:
        assert seen["scrollWidth"] <= seen["clientWidth"]  # the grid fits the frame's width
    else:
        assert seen["scrollWidth"] >= seen["right"]  # the rest is one sideways scroll away
    texts = seen["texts"]
    assert texts[0] == "Heads" and texts[1:1 + heads] == numbers(heads)
    after = texts.index("Layers") + 1
    assert texts[after:after + layers] == numbers(layers)

    # A click on the first thumbnail enlarges it under a 1-based heading, inside the drawing.
    frame.locator("#attn_background_0_0").click(force=True)  # bertviz's transparent click area lies on top
    heading = frame.locator("text.detail").first
    assert heading.text_content() == "Layer 1, Head 1"
    box = frame.evaluate("() => Array.from(document.querySelectorAll('.detail')).map(e => e.getBBox())"
                         ".reduce((a, b) => ({r: Math.max(a.r, b.x + b.width), b: Math.max(a.b, b.y + b.height)}),"
                         " {r: 0, b: 0})")
    assert box["r"] <= drawn_width and box["b"] <= drawn_height


@pytest.mark.parametrize(("heads", "tokens", "width", "chosen"), [(12, 128, 940, 2), (3, 9, 300, 0)])
def test_head_view_opens_on_the_chosen_head_and_fits(framed, heads, tokens, width, chosen) -> None:
    page = bertviz_html("head", random_attention(2, heads, tokens), [f"w{i}" for i in range(tokens)], layer=1,
                        heads=[chosen])
    drawn_width, drawn_height = frame_size("head", 2, heads, tokens)
    frame = framed(page, width, frame_size("head", 2, heads, tokens, scroll_bar=True)[1])
    seen = frame.evaluate(MEASURE)
    assert seen["bottom"] == pytest.approx(drawn_height, abs=1)
    assert seen["scrollHeight"] <= seen["clientHeight"]
    assert seen["scrollWidth"] >= max(drawn_width, width)  # a narrow frame scrolls to the right-hand tokens
    assert seen["texts"][-heads:] == numbers(heads)  # the head squares carry 1-based numbers
    assert frame.locator("#layer + b").text_content() == "2"  # layer index 1 is "Layer: 2"

    shown = frame.evaluate(HEADS)
    assert [head["opacity"] > 0 for head in shown] == [head == chosen for head in range(heads)]
    assert [head["square"] == head["line"] for head in shown] == [head == chosen for head in range(heads)]

    # Double-clicking the only selected square brings back every head, as in bertviz.
    frame.locator("#vis svg > g:last-of-type rect").nth(chosen).dblclick()
    assert all(head["opacity"] > 0 and head["square"] == head["line"] for head in frame.evaluate(HEADS))


def test_token_text_is_drawn_as_written(framed) -> None:
    """Markup, entities and number-like text in tokens show as typed, in both views (and run nothing:
    the framed fixture fails on any dialog)."""
    tokens = ["[CLS]", "<b>bold</b>", "</script>", "<img src=x onerror=alert(1)>", "&amp;", "[0.0,", "1, 2", "[SEP]"]
    attention = random_attention(2, 3, len(tokens))
    head = framed(bertviz_html("head", attention, tokens, layer=1), 700, 400)
    drawn = head.evaluate(MEASURE)["texts"]
    assert drawn[:len(tokens)] == tokens and drawn[len(tokens):2 * len(tokens)] == tokens  # left and right

    model = framed(bertviz_html("model", attention, tokens), 700, 400)
    model.locator("#attn_background_1_2").click(force=True)
    assert model.locator("text.detail").first.text_content() == "Layer 2, Head 3"
    assert model.locator("text.token").all_text_contents() == tokens + tokens


# ---------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def app_tab(chromium, app_server):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    traffic = watch(tab)
    tab.goto(app_server.url)
    settle(tab)
    set_note(tab, CLINICAL_NOTE)
    open_page(tab, "Attention")
    yield tab
    assert traffic.outside_requests == [] and traffic.dialogs == []
    context.close()


def bertviz_frame(tab):
    frame = tab.frame_locator("iframe").first
    frame.locator("#vis svg text").first.wait_for(timeout=60_000)
    time.sleep(1.0)
    return frame


def test_app_model_view_fits_its_frame_at_1400_px(app_tab) -> None:
    pick(app_tab, "View", "bertviz model view")
    frame = bertviz_frame(app_tab)
    seen = frame.locator("html").evaluate(MEASURE)
    # The whole drawing lies inside the frame: nothing to the right of or below what the frame shows.
    assert seen["right"] <= seen["clientWidth"] and seen["bottom"] <= seen["clientHeight"]
    assert seen["scrollWidth"] <= seen["clientWidth"] and seen["scrollHeight"] <= seen["clientHeight"]
    assert seen["bottom"] == pytest.approx(frame_size("model", 6, 12, 48)[1], abs=1)
    texts = seen["texts"]
    assert texts[1] == "1" and texts[texts.index("Layers") + 1] == "1"  # first head and first layer
    assert texts[1:13] == numbers(12) and texts[texts.index("Layers") + 1:][:6] == numbers(6)
    app_tab.locator("iframe").first.scroll_into_view_if_needed()
    screenshot(app_tab, "attention_bertviz_model_1400")


def test_app_head_view_shows_the_head_picker_head(app_tab) -> None:
    head_box = app_tab.locator('[data-testid="stNumberInput"]', has_text="Head").locator("input")
    head_box.fill("3")
    head_box.press("Enter")
    settle(app_tab)
    pick(app_tab, "View", "bertviz head view")
    frame = bertviz_frame(app_tab)
    shown = frame.locator("html").evaluate(HEADS)
    assert [head["opacity"] > 0 for head in shown] == [index == 2 for index in range(12)]
    seen = frame.locator("html").evaluate(MEASURE)
    assert seen["texts"][-12:] == numbers(12)
    assert seen["bottom"] <= seen["clientHeight"] and seen["scrollHeight"] <= seen["clientHeight"]
    assert frame.locator("#layer + b").text_content() == "1"
    screenshot(app_tab, "attention_bertviz_head_1400")
