"""bertviz's head view and model view, made to work offline and stay small.

bertviz (``html_action="return"``) writes a page that loads require.js, d3 and
jQuery from a CDN and embeds every attention value at full float precision:
blank on a locked-down hospital network and 1.7 GB at 512 tokens. Here:

* the CDN script is replaced by d3 and jQuery shipped in this package (see
  ``vendor/``) and a two-line stand-in for require.js, so nothing is fetched;
* only a span of tokens (and, for the head view, one layer) is sent, with
  values rounded to 3 decimals, once (bertviz also pastes them into a comment);
* token text cannot close the surrounding ``<script>`` element: ``<``, ``>`` and
  ``&`` travel as JSON escapes (bertviz draws tokens with d3 ``.text()``, so
  they show as text).
"""

from __future__ import annotations

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
                 layer: int = 0, layer_indices: list[int] | None = None) -> str:
    """A self-contained bertviz page for ``attention`` over ``tokens``.

    Args:
        kind: "head" (one layer, every head, lines between tokens) or "model"
            (a thumbnail per layer and head).
        attention: float [layer, head, n, n] for the token span shown.
        tokens: n token strings.
        layer: the layer the head view shows (an index into ``layer_indices``' labels).
        layer_indices: the model's layer number of each row of ``attention``
            (default 0..L-1); used for labels only.

    Returns:
        HTML text with every script inline; no network access when rendered.
    """
    from bertviz import head_view, model_view

    limit = MAX_HEAD_VIEW_TOKENS if kind == "head" else MAX_MODEL_VIEW_TOKENS
    if len(tokens) > limit:
        raise ValueError(f"the {kind} view takes at most {limit} tokens; got {len(tokens)}")
    layers = layer_indices if layer_indices is not None else list(range(attention.shape[0]))
    safe = _safe_tokens(list(tokens))
    if kind == "head":
        row = layers.index(layer)
        data = _rounded_layers(attention[row:row + 1])
        result = head_view(data, safe, layer=0, html_action="return")
        page = result.data.replace('<select id="layer"></select>',
                                   f'<select id="layer" style="display:none"></select><b>{int(layer) + 1}</b>')
    else:
        data = _rounded_layers(attention)
        result = model_view(data, safe, display_mode="light", html_action="return")
        page = result.data
    page = PARAMS_IN_COMMENT.sub("", page)
    page = PARAMS_LINE.sub(lambda line: ZERO.sub("0", NUMBER_GAP.sub(",", line.group(0))), page)
    page = CDN_SCRIPT.sub("", page)
    page = CDN_URL.sub("", page)
    for stand_in, escape in _JSON_ESCAPES.items():
        page = page.replace(stand_in, escape)
    return offline_scripts() + page
