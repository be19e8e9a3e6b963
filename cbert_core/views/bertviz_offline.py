"""bertviz's head view and model view, made to work offline, stay small and fit their frame.

bertviz (``html_action="return"``) writes a page that loads require.js, d3 and
jQuery from a CDN and embeds every attention value at full float precision:
blank on a locked-down hospital network and 1.7 GB at 512 tokens. Here:

* the CDN script is replaced by d3 and jQuery shipped in this package (see
  ``vendor/``) and a two-line stand-in for require.js, so nothing is fetched;
* only a span of tokens (and, for the head view, one layer) is sent, with
  values rounded to 3 decimals, once (bertviz also pastes them into a comment);
* token text cannot close the surrounding ``<script>`` element: ``<``, ``>`` and
  ``&`` travel as JSON escapes (bertviz draws tokens with d3 ``.text()``, so
  they show as text);
* layers and heads are numbered from 1, as everywhere else in the app (bertviz
  numbers them from 0);
* the model view's grid is as wide as its frame (bertviz draws it 970 px wide
  whatever the frame) and :func:`frame_size` gives the height each drawing
  needs, computed from bertviz's own layout constants.

bertviz's JavaScript is edited in place at a few known lines. Each edit must
apply exactly once: if a bertviz release changes those lines, rendering raises
:class:`BertvizTemplateError` rather than silently showing 0-based numbers or a
cut-off drawing (bertviz is pinned at 1.4.1).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

VENDOR = Path(__file__).resolve().parent / "vendor"
MAX_HEAD_VIEW_TOKENS = 128
MAX_MODEL_VIEW_TOKENS = 48
CDN_SCRIPT = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/[^"]*"></script>')
CDN_URL = re.compile(r"https://cdnjs\.cloudflare\.com/[^'\"]*")
# bertviz substitutes its params into a code comment as well as the code, sending
# every value twice; the comment copy is dropped.
PARAMS_IN_COMMENT = re.compile(r"// HACK: [^\n]*")
PARAMS_LINE = re.compile(r"const params = \{[^\n]*")
NUMBER_GAP = re.compile(r"(?<=[\d\]]), (?=[\d\[])")  # ", " between numbers or arrays
ZERO = re.compile(r"(?<=[\[,])0\.0(?=[,\]])")
# Characters that could end a <script> block, sent through bertviz as private-use
# stand-ins, then turned into JSON escapes that JavaScript reads back as the character.
_STAND_INS = {"<": "\ue000", ">": "\ue001", "&": "\ue002"}
_JSON_ESCAPES = {"\\ue000": "\\u003c", "\\ue001": "\\u003e", "\\ue002": "\\u0026"}
REQUIRE_SHIM = (
    "window.require = window.require || {config: function () {}};"
    "window.requirejs = function (deps, callback) {"
    " var found = {jquery: window.jQuery, d3: window.d3};"
    " callback.apply(null, deps.map(function (name) { return found[name]; })); };"
)

# ------------------------------------------------------------------ layout

HEAD_VIEW_HEADER_PX = 24  # the "Layer: n" line above the head view's drawing (fixed by HEAD_HEADER_STYLE)
MIN_THUMBNAIL_WIDTH_PX = 40  # the model view's grid is never squeezed below this per head (it scrolls instead)
HORIZONTAL_SCROLLBAR_PX = 16  # room under a drawing for the frame's sideways scroll bar, if it is narrower
# The frame's page has no margins and the drawing is a block (no gap under it), so the page is as big as
# the drawing; the head view's "Layer" line gets a fixed height.
FRAME_STYLE = "html, body { margin: 0; padding: 0; } div[id^='bertviz-'] #vis svg { display: block; }"
HEAD_HEADER_STYLE = (f" div[id^='bertviz-'] > span {{ display: block; height: {HEAD_VIEW_HEADER_PX}px;"
                     f" line-height: {HEAD_VIEW_HEADER_PX}px; white-space: nowrap; }}")
# The lines of bertviz's JavaScript that :func:`frame_size` reproduces; their constants are read from the file.
LAYOUT_LINES = {
    "head": ("const height = Math.max(leftText.length, rightText.length) * BOXHEIGHT + TEXT_TOP;",
             '.attr("width", "100%")',
             ".attr(\"x\", (d, i) => i * CHECKBOX_SIZE)"),
    "model": ("const axisSize = HEADING_TEXT_SIZE + HEADING_PADDING + TEXT_SIZE + TEXT_PADDING;",
              "config.thumbnailHeight = Math.max(config.leftText.length, config.rightText.length)"
              " * config.thumbnailBoxHeight + 2 * THUMBNAIL_PADDING;",
              "config.thumbnailWidth = (DIV_WIDTH - axisSize) / config.totalHeads;",
              "config.detailHeight = Math.max(config.leftText.length, config.rightText.length)"
              " * DETAIL_BOX_HEIGHT + 2 * DETAIL_PADDING + DETAIL_HEADING_HEIGHT;",
              "config.divHeight = Math.max(config.numLayers * config.thumbnailHeight + axisSize, config.detailHeight);",
              '.attr("width", DIV_WIDTH)'),
}
THUMBNAIL_BOX_LINE = re.compile(r"config\.thumbnailBoxHeight = (\d+) \* \((\d+) / config\.totalHeads\);")
CONSTANT = re.compile(r"const ([A-Z_]+) = (\d+(?:\.\d+)?);")


class BertvizTemplateError(RuntimeError):
    """The installed bertviz's JavaScript no longer has a line this module edits or measures."""


@lru_cache(maxsize=2)
def bertviz_script(kind: Literal["head", "model"]) -> str:
    """The installed bertviz's ``head_view.js`` or ``model_view.js`` (read without importing bertviz)."""
    spec = importlib.util.find_spec("bertviz")
    if spec is None or not spec.submodule_search_locations:
        raise BertvizTemplateError("bertviz is not installed")
    return (Path(next(iter(spec.submodule_search_locations))) / f"{kind}_view.js").read_text(encoding="utf-8")


@lru_cache(maxsize=2)
def layout_constants(kind: Literal["head", "model"]) -> dict[str, float]:
    """bertviz's ``const NAME = number;`` layout constants for a view, checked against :data:`LAYOUT_LINES`."""
    script = bertviz_script(kind)
    missing = [line for line in LAYOUT_LINES[kind] if line not in script]
    if missing:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js no longer lays out its drawing as expected: {missing}")
    constants = {name: float(value) for name, value in CONSTANT.findall(script)}
    if kind == "model":
        box = THUMBNAIL_BOX_LINE.search(script)
        if box is None:
            raise BertvizTemplateError("bertviz's model_view.js no longer sizes thumbnails as expected")
        constants["THUMBNAIL_BOX_HEIGHT"], constants["THUMBNAIL_BOX_HEADS"] = map(float, box.groups())
    return constants


def model_view_min_width(heads: int) -> int:
    """The narrowest model view drawing: thumbnails :data:`MIN_THUMBNAIL_WIDTH_PX` wide, and room for the
    enlarged head bertviz draws beside a clicked thumbnail (beyond that the frame scrolls sideways)."""
    c = layout_constants("model")
    axis = c["HEADING_TEXT_SIZE"] + c["HEADING_PADDING"] + c["TEXT_SIZE"] + c["TEXT_PADDING"]
    return int(math.ceil(max(axis + heads * MIN_THUMBNAIL_WIDTH_PX, 2 * c["DETAIL_WIDTH"] + axis)))


def frame_size(kind: Literal["head", "model"], layers: int, heads: int, tokens: int,
               width: int | None = None, scroll_bar: bool = False) -> tuple[int, int]:
    """Pixels (width, height) of what :func:`bertviz_html` draws, from bertviz's layout constants.

    Args:
        kind: "head" or "model".
        layers: layers sent (the head view shows one at a time; its size does not depend on them).
        heads: heads per layer.
        tokens: tokens shown.
        width: the frame's inner width in pixels, if known. The model view's grid fills it, between
            bertviz's own 970 px and :func:`model_view_min_width` (its height does not depend on
            the width); ``None`` gives bertviz's width. The head view is as wide as its frame.
        scroll_bar: add :data:`HORIZONTAL_SCROLLBAR_PX` to the height, room for the frame's sideways
            scroll bar when the frame is narrower than the drawing (the height to give an iframe).

    Returns:
        The drawing's width (the head view: the least width that shows both token columns and the
        head squares; wider frames just leave room for long tokens) and its exact height, the
        height of a frame that shows all of it without scrolling.
    """
    if min(layers, heads, tokens) < 1:
        raise ValueError(f"need at least one layer, head and token; got {layers}, {heads}, {tokens}")
    c = layout_constants(kind)
    room = HORIZONTAL_SCROLLBAR_PX if scroll_bar else 0
    if kind == "head":
        drawing_width = max(2 * c["BOXWIDTH"] + c["MATRIX_WIDTH"], heads * c["CHECKBOX_SIZE"])
        height = HEAD_VIEW_HEADER_PX + tokens * c["BOXHEIGHT"] + c["TEXT_TOP"]
        return int(math.ceil(drawing_width)), int(math.ceil(height)) + room
    natural = int(c["DIV_WIDTH"])
    drawing_width = max(model_view_min_width(heads), natural if width is None else min(natural, int(width)))
    axis = c["HEADING_TEXT_SIZE"] + c["HEADING_PADDING"] + c["TEXT_SIZE"] + c["TEXT_PADDING"]
    box = c["THUMBNAIL_BOX_HEIGHT"] * (c["THUMBNAIL_BOX_HEADS"] / heads)  # same order of operations as JS
    thumbnail = tokens * box + 2 * c["THUMBNAIL_PADDING"]
    detail = tokens * c["DETAIL_BOX_HEIGHT"] + 2 * c["DETAIL_PADDING"] + c["DETAIL_HEADING_HEIGHT"]
    return drawing_width, int(math.ceil(max(layers * thumbnail + axis, detail))) + room


# ------------------------------------------------------------------ edits to bertviz's page

# Our settings for the edited script: labels and the model view's width limits.
FRAME_SCRIPT = """<script>
window.cbertView = %s;
window.cbertView.fitWidth = function () {
  var view = window.cbertView, room = document.documentElement.clientWidth;
  return Math.max(view.minWidth, Math.min(view.naturalWidth, room));
};
window.cbertView.onResize = function (redraw) {
  var drawn = window.cbertView.fitWidth();
  window.addEventListener("resize", function () {
    var now = window.cbertView.fitWidth();
    if (now !== drawn) { drawn = now; redraw(now); }
  });
};
</script>
"""
HEAD_SQUARE_LABELS = """
        checkbox.append("title").text((d, i) => "Head " + window.cbertView.heads[i]);
        checkboxContainer.selectAll("text")
            .data(config.headVis)
            .enter()
            .append("text")
            .text((d, i) => window.cbertView.heads[i])
            .attr("x", (d, i) => (i + 0.5) * CHECKBOX_SIZE)
            .attr("y", top + CHECKBOX_SIZE / 2)
            .attr("dy", "0.35em")
            .attr("text-anchor", "middle")
            .attr("font-size", "11px")
            .attr("fill", "black")
            .style("pointer-events", "none");"""
# (pattern, replacement, what it does): each must match exactly once in bertviz's script.
MODEL_EDITS = (
    (r"const DIV_WIDTH = \d+;", "let DIV_WIDTH = window.cbertView.fitWidth();", "grid as wide as the frame"),
    (r"\.text\(config\.heads\[i\]\)", ".text(window.cbertView.heads[i])", "1-based head numbers above the grid"),
    (r"\.text\(config\.layers\[i\]\)", ".text(window.cbertView.layers[i])", "1-based layer numbers beside the grid"),
    (r"""'Layer ' \+ config\.layers\[layerIndex\] \+ ", Head " \+ config\.heads\[headIndex\]""",
     """'Layer ' + window.cbertView.layers[layerIndex] + ", Head " + window.cbertView.heads[headIndex]""",
     "1-based numbers over an enlarged head"),
    (r"initialize\(\);(\s*)render\(\);",
     r"initialize();\1render();\1window.cbertView.onResize(function (width) {"
     r" DIV_WIDTH = width; config.detail_layer = null; config.detail_head = null; render(); });",
     "redrawn when the frame's width changes"),
)
HEAD_EDITS = (
    (r'\.attr\("height", CHECKBOX_SIZE\);', '.attr("height", CHECKBOX_SIZE);' + HEAD_SQUARE_LABELS,
     "1-based numbers on the head squares"),
)
LAYER_SELECT = '<select id="layer"></select>'


def _edit(parts: list[str], pattern: str, replacement: str, what: str) -> list[str]:
    """Apply one edit to the parts of bertviz's page outside its data; it must match exactly once."""
    compiled = re.compile(pattern)
    found = sum(len(compiled.findall(part)) for part in parts)
    if found != 1:
        raise BertvizTemplateError(f"bertviz's page changed: the edit for {what} matched {found} times, not once "
                                   f"(pattern {pattern!r}); bertviz_offline.py must be updated for this bertviz")
    return [compiled.sub(replacement, part) for part in parts]


@lru_cache(maxsize=1)
def offline_scripts() -> str:
    """The inline <script> blocks that stand in for bertviz's CDN downloads."""
    d3 = (VENDOR / "d3.v5.7.0.min.js").read_text(encoding="utf-8")
    jquery = (VENDOR / "jquery.3.7.1.min.js").read_text(encoding="utf-8")
    return f"<script>{d3}</script>\n<script>{jquery}</script>\n<script>{REQUIRE_SHIM}</script>\n"


def _safe_tokens(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        for char, stand_in in _STAND_INS.items():
            token = token.replace(char, stand_in)
        out.append(token)
    return out


def _rounded_layers(attention: np.ndarray) -> list:
    """[layer, head, q, k] -> bertviz's input: one float64 [1, head, q, k] tensor per layer."""
    import torch

    rounded = np.round(attention.astype(np.float64), 3)
    return [torch.from_numpy(rounded[layer][None]) for layer in range(rounded.shape[0])]


def bertviz_html(kind: Literal["head", "model"], attention: np.ndarray, tokens: list[str],
                 layer: int = 0, layer_indices: list[int] | None = None, heads: list[int] | None = None) -> str:
    """A self-contained bertviz page for ``attention`` over ``tokens``, numbered from 1.

    Args:
        kind: "head" (one layer, lines between tokens, a colour square per head) or "model"
            (a thumbnail per layer and head, layers as rows and heads as columns).
        attention: float [layer, head, n, n] for the token span shown.
        tokens: n token strings.
        layer: the head view's layer: the model's 0-based layer number (one of ``layer_indices``).
            It is shown as "Layer: layer+1".
        layer_indices: the model's 0-based layer number of each row of ``attention``
            (default 0..L-1); the views label row r as layer ``layer_indices[r] + 1``.
        heads: head view only: the 0-based heads selected when the view opens (default: all).
            The user sees only those heads' lines and their squares in full colour; the other
            heads' squares are pale. Clicking a pale square adds that head, clicking a bright one
            removes it (unless it is the last), double-clicking a square shows that head alone, and
            double-clicking the only bright square brings back every head. Squares carry the
            1-based head number (bertviz's ten colours repeat from head 11 on).

    Returns:
        HTML text with every script inline; no network access when rendered. The model view's
        grid fills the frame's width (see :func:`frame_size` for the height to give the frame).

    Raises:
        ValueError: too many tokens, or ``heads`` empty or outside the model's heads.
        BertvizTemplateError: the installed bertviz's page no longer has a line this module edits.
    """
    from bertviz import head_view, model_view

    limit = MAX_HEAD_VIEW_TOKENS if kind == "head" else MAX_MODEL_VIEW_TOKENS
    if len(tokens) > limit:
        raise ValueError(f"the {kind} view takes at most {limit} tokens; got {len(tokens)}")
    num_heads = int(attention.shape[1])
    if heads is not None and (not heads or any(not 0 <= int(h) < num_heads for h in heads)):
        raise ValueError(f"heads must be a non-empty list of heads between 0 and {num_heads - 1}; got {heads}")
    layers = list(layer_indices) if layer_indices is not None else list(range(attention.shape[0]))
    safe = _safe_tokens(list(tokens))
    settings: dict[str, object] = {"heads": [h + 1 for h in range(num_heads)],
                                   "layers": [int(index) + 1 for index in layers]}
    if kind == "head":
        row = layers.index(layer)
        data = _rounded_layers(attention[row:row + 1])
        chosen = None if heads is None else sorted({int(h) for h in heads})
        page = head_view(data, safe, layer=0, heads=chosen, html_action="return").data
        edits = HEAD_EDITS
        if page.count(LAYER_SELECT) != 1:
            raise BertvizTemplateError("bertviz's head view no longer has its layer drop-down")
        page = page.replace(LAYER_SELECT, f'<select id="layer" style="display:none"></select><b>{int(layer) + 1}</b>')
        least = frame_size("head", len(layers), num_heads, len(tokens))[0]
        # Narrower frames scroll sideways rather than cut the right-hand tokens off.
        style = FRAME_STYLE + HEAD_HEADER_STYLE + f" div[id^='bertviz-'] #vis svg {{ min-width: {least}px; }}"
    else:
        data = _rounded_layers(attention)
        page = model_view(data, safe, display_mode="light", html_action="return").data
        edits = MODEL_EDITS
        settings["naturalWidth"] = int(layout_constants("model")["DIV_WIDTH"])
        settings["minWidth"] = model_view_min_width(num_heads)
        style = FRAME_STYLE
    page = PARAMS_IN_COMMENT.sub("", page)
    params = PARAMS_LINE.search(page)
    if params is None:
        raise BertvizTemplateError("bertviz's page no longer holds its data on one 'const params = {' line")
    parts = [page[:params.start()], page[params.end():]]  # edits never touch the data (it holds the note)
    for pattern, replacement, what in edits:
        parts = _edit(parts, pattern, replacement, what)
    data_line = ZERO.sub("0", NUMBER_GAP.sub(",", params.group(0)))
    page = parts[0] + data_line + parts[1]
    page = CDN_SCRIPT.sub("", page)
    page = CDN_URL.sub("", page)
    for stand_in, escape in _JSON_ESCAPES.items():
        page = page.replace(stand_in, escape)
    return offline_scripts() + f"<style>{style}</style>\n" + FRAME_SCRIPT % json.dumps(settings) + page
