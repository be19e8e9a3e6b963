"""bertviz's head view and model view, made to work offline, stay small and fit their frame.

bertviz's Python functions (``head_view``, ``model_view``) import torch and write a page that
loads require.js, d3 and jQuery from a CDN and embeds every attention value at full float
precision: blank on a locked-down hospital network and 1.7 GB at 512 tokens. This module uses
only bertviz's two JavaScript files, read as text from the installed package without importing
it (no torch here, as everywhere under ``views/``), and writes the page around them itself:

* bertviz fills its script by replacing the text ``PYTHON_PARAMS`` with a JSON object; the same
  object is built here from numpy arrays (the keys are checked against what the script reads, so a
  bertviz release that reads another key fails loudly instead of drawing nothing);
* the HTML the script draws into (a root ``div`` with ``#vis``, and the head view's ``#layer``
  drop-down) is written here; the element ids the script looks up are checked too;
* the CDN scripts are replaced by d3 and jQuery shipped in this package (see ``vendor/``) and a
  two-line stand-in for require.js, so nothing is fetched;
* only a span of tokens (and, for the head view, one layer) is sent, with values rounded to
  3 decimals, once;
* token text cannot close the surrounding ``<script>`` element: ``<``, ``>`` and ``&`` travel as
  JSON escapes (bertviz draws tokens with d3 ``.text()``, so they show as text);
* layers and heads are numbered from 1, as everywhere else in the app (bertviz numbers them from 0);
* the model view's grid is as wide as its frame (bertviz draws it 970 px wide whatever the frame)
  and :func:`frame_size` gives the height each drawing needs, computed from bertviz's own layout
  constants.

bertviz's JavaScript is edited in place at a few known lines. Each edit must apply exactly once:
if a bertviz release changes those lines, rendering raises :class:`BertvizTemplateError` rather
than silently showing 0-based numbers, a cut-off drawing or a blank frame (bertviz is pinned at 1.4.1).
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
# bertviz's scripts point require.js at the CDN; the stand-in ignores the paths, and the URLs are dropped.
CDN_URL = re.compile(r"https://cdnjs\.cloudflare\.com/[^'\"]*")
PARAMS_SLOT = "const params = PYTHON_PARAMS;"  # where bertviz's script takes its data
PARAMS_READ = re.compile(r"\bparams\[['\"](\w+)['\"]\]|\bparams\.(\w+)")
ELEMENT_LOOKUP = re.compile(r"#\$\{config\.rootDivId\} #([\w-]+)")
# What each script reads from its params and which elements under the root div it looks up (bertviz 1.4.1).
# "filter" is bertviz's drop-down for sentence pairs; a page without one leaves its handler unbound.
PARAMS_KEYS = {
    "head": {"attention", "default_filter", "root_div_id", "layer", "heads", "include_layers"},
    "model": {"attention", "default_filter", "display_mode", "root_div_id", "include_layers", "include_heads",
              "total_heads"},
}
ELEMENT_IDS = {"head": {"layer", "filter", "vis"}, "model": {"filter", "vis"}}
ROOT_ID = "bertviz-cbert-{kind}"  # the frame holds one view; styles below select div[id^='bertviz-']
ROOT_FONT = "font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif;"
ZERO = re.compile(r"(?<=[\[,])0\.0(?=[,\]])")
# Characters that could end a <script> block (or start a comment in it) become JSON escapes,
# which JavaScript reads back as the character. They occur only inside the JSON's strings.
JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
# bertviz's prettify_tokens (on by default there): byte-level BPE and SentencePiece word marks shown as spaces.
WORD_MARKS = {"\u0120": " ", "\u2581": " "}
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
LAYOUT_CONSTANTS = {
    "head": ("BOXWIDTH", "BOXHEIGHT", "MATRIX_WIDTH", "CHECKBOX_SIZE", "TEXT_TOP"),
    "model": ("DIV_WIDTH", "THUMBNAIL_PADDING", "DETAIL_WIDTH", "DETAIL_BOX_HEIGHT", "DETAIL_PADDING",
              "DETAIL_HEADING_HEIGHT", "HEADING_TEXT_SIZE", "HEADING_PADDING", "TEXT_SIZE", "TEXT_PADDING"),
}


class BertvizTemplateError(RuntimeError):
    """The installed bertviz's JavaScript no longer has a line this module edits or measures."""


@lru_cache(maxsize=2)
def bertviz_script(kind: Literal["head", "model"]) -> str:
    """The installed bertviz's ``head_view.js`` or ``model_view.js``, as text.

    ``find_spec`` of a top-level package only locates it (its ``__init__``, which imports torch
    through bertviz.util, does not run), so bertviz's Python is never imported.
    """
    spec = importlib.util.find_spec("bertviz")
    if spec is None or not spec.submodule_search_locations:
        raise BertvizTemplateError("bertviz is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / f"{kind}_view.js"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js cannot be read: {error}") from error


@lru_cache(maxsize=2)
def layout_constants(kind: Literal["head", "model"]) -> dict[str, float]:
    """bertviz's ``const NAME = number;`` layout constants for a view, checked against :data:`LAYOUT_LINES`."""
    script = bertviz_script(kind)
    missing = [line for line in LAYOUT_LINES[kind] if line not in script]
    if missing:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js no longer lays out its drawing as expected: {missing}")
    constants = {name: float(value) for name, value in CONSTANT.findall(script)}
    absent = [name for name in LAYOUT_CONSTANTS[kind] if name not in constants]
    if absent:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js no longer sets its layout constants {absent}")
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


def _edit(script: str, pattern: str, replacement: str, what: str) -> str:
    """Apply one edit to bertviz's script (before its data is filled in); it must match exactly once."""
    compiled = re.compile(pattern)
    found = len(compiled.findall(script))
    if found != 1:
        raise BertvizTemplateError(f"bertviz's page changed: the edit for {what} matched {found} times, not once "
                                   f"(pattern {pattern!r}); bertviz_offline.py must be updated for this bertviz")
    return compiled.sub(replacement, script)


def _check_template(kind: Literal["head", "model"], script: str) -> None:
    """bertviz's script takes its data where, and reads the params and elements, this module provides."""
    if script.count(PARAMS_SLOT) != 1:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js no longer takes its data at {PARAMS_SLOT!r}")
    read = {quoted or dotted for quoted, dotted in PARAMS_READ.findall(script)}
    if read != PARAMS_KEYS[kind]:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js reads the params {sorted(read)}; this module sends "
                                   f"{sorted(PARAMS_KEYS[kind])}")
    looked_up = set(ELEMENT_LOOKUP.findall(script))
    if looked_up != ELEMENT_IDS[kind]:
        raise BertvizTemplateError(f"bertviz's {kind}_view.js looks up the elements {sorted(looked_up)}; this "
                                   f"module's page has {sorted(ELEMENT_IDS[kind])}")
    if "</script" in script.lower():
        raise BertvizTemplateError(f"bertviz's {kind}_view.js contains '</script' and cannot be inlined")


def edited_script(kind: Literal["head", "model"]) -> str:
    """bertviz's script for ``kind``, checked and edited, its data slot (:data:`PARAMS_SLOT`) still empty."""
    script = bertviz_script(kind)
    _check_template(kind, script)
    for pattern, replacement, what in HEAD_EDITS if kind == "head" else MODEL_EDITS:
        script = _edit(script, pattern, replacement, what)
    return CDN_URL.sub("", script)


@lru_cache(maxsize=1)
def offline_scripts() -> str:
    """The inline <script> blocks that stand in for bertviz's CDN downloads."""
    d3 = (VENDOR / "d3.v5.7.0.min.js").read_text(encoding="utf-8")
    jquery = (VENDOR / "jquery.3.7.1.min.js").read_text(encoding="utf-8")
    return f"<script>{d3}</script>\n<script>{jquery}</script>\n<script>{REQUIRE_SHIM}</script>\n"


def _attention_json(attention: np.ndarray) -> str:
    """float [layer, head, q, k] -> nested JSON lists, values rounded to 3 decimals (0.0 written as 0)."""
    rounded = np.round(np.asarray(attention, dtype=np.float64), 3)
    return ZERO.sub("0", json.dumps(rounded.tolist(), separators=(",", ":")))


def _shown_tokens(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        for mark, shown in WORD_MARKS.items():
            token = token.replace(mark, shown)
        out.append(token)
    return out


def _params_json(attention: np.ndarray, tokens: list[str], settings: dict[str, object]) -> str:
    """The object bertviz's script reads as ``params``: one attention entry (no sentence-pair filters)
    followed by ``settings``, safe to place inside a ``<script>`` element."""
    text = json.dumps(_shown_tokens(tokens), separators=(",", ":"))
    entry = f'{{"name":null,"attn":{_attention_json(attention)},"left_text":{text},"right_text":{text}}}'
    rest = json.dumps({"default_filter": "0", **settings}, separators=(",", ":"))
    params = f'{{"attention":[{entry}],{rest[1:]}'
    for char, escape in JSON_ESCAPES.items():  # only token strings can hold these
        params = params.replace(char, escape)
    return params


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
        ValueError: too many tokens, ``attention`` not [layer, head, n, n] for the n tokens, ``layer``
            not one of ``layer_indices``, or ``heads`` empty or outside the model's heads.
        BertvizTemplateError: the installed bertviz's script no longer has a line this module edits,
            or reads data or elements this module does not provide.
    """
    limit = MAX_HEAD_VIEW_TOKENS if kind == "head" else MAX_MODEL_VIEW_TOKENS
    if len(tokens) > limit:
        raise ValueError(f"the {kind} view takes at most {limit} tokens; got {len(tokens)}")
    attention = np.asarray(attention)
    if attention.ndim != 4 or attention.shape[2:] != (len(tokens), len(tokens)) or attention.shape[0] < 1:
        raise ValueError(f"attention must be [layer, head, n, n] for the {len(tokens)} tokens; "
                         f"got shape {attention.shape}")
    num_heads = int(attention.shape[1])
    if heads is not None and (not heads or any(not 0 <= int(h) < num_heads for h in heads)):
        raise ValueError(f"heads must be a non-empty list of heads between 0 and {num_heads - 1}; got {heads}")
    layers = list(range(attention.shape[0])) if layer_indices is None else [int(index) for index in layer_indices]
    if len(layers) != attention.shape[0]:
        raise ValueError(f"layer_indices names {len(layers)} layers; attention has {attention.shape[0]}")
    root = ROOT_ID.format(kind=kind)
    settings: dict[str, object] = {"heads": [h + 1 for h in range(num_heads)], "layers": [index + 1 for index in layers]}
    if kind == "head":
        if int(layer) not in layers:
            raise ValueError(f"layer {layer} is not one of the layers sent ({layers})")
        row = layers.index(int(layer))
        chosen = None if heads is None else sorted({int(h) for h in heads})
        # One layer is sent; bertviz's drop-down of layers stays hidden and the layer's 1-based number shows.
        params = _params_json(attention[row:row + 1], tokens,
                              {"root_div_id": root, "layer": 0, "heads": chosen, "include_layers": [0]})
        container = (f'<div id="{root}" style="{ROOT_FONT}"><span style="user-select:none">Layer: '
                     f'<select id="layer" style="display:none"></select><b>{int(layer) + 1}</b></span>'
                     f'<div id="vis"></div></div>')
        least = frame_size("head", len(layers), num_heads, len(tokens))[0]
        # Narrower frames scroll sideways rather than cut the right-hand tokens off.
        style = FRAME_STYLE + HEAD_HEADER_STYLE + f" div[id^='bertviz-'] #vis svg {{ min-width: {least}px; }}"
    else:
        params = _params_json(attention, tokens, {
            "display_mode": "light", "root_div_id": root, "include_layers": list(range(len(layers))),
            "include_heads": list(range(num_heads)), "total_heads": num_heads})
        container = f'<div id="{root}" style="{ROOT_FONT}"><div id="vis"></div></div>'
        settings["naturalWidth"] = int(layout_constants("model")["DIV_WIDTH"])
        settings["minWidth"] = model_view_min_width(num_heads)
        style = FRAME_STYLE
    script = edited_script(kind).replace(PARAMS_SLOT, f"const params = {params};")
    return (offline_scripts() + f"<style>{style}</style>\n" + FRAME_SCRIPT % json.dumps(settings)
            + container + '\n<script type="text/javascript">\n' + script + "\n</script>\n")
