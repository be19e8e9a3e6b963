"""Text that goes into a browser, made safe to show as text.

Plotly reads a small HTML subset in hover text and tick labels, and Streamlit
markdown reads HTML when asked to; a note holding ``<img onerror=...>`` must
show those characters, never become markup. Everything user-derived passes
through :func:`escape` before it reaches a figure or an HTML string.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍"}


def _invisible_or_reordering(ch: str) -> bool:
    code = ord(ch)
    return code < 32 or code == 127 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069


def escape(text: str, keep_layout: bool = False) -> str:
    """HTML-escape ``text`` (quotes too); control and bidi-override characters become "�".

    Args:
        keep_layout: keep newlines and tabs as they are (for text shown in
            ``white-space: pre-wrap``); otherwise they show as ⏎ and ⇥.
    """
    def shown(ch: str) -> str:
        if keep_layout and ch in "\n\t":
            return ch
        if ch in VISIBLE:
            return VISIBLE[ch]
        return "\ufffd" if _invisible_or_reordering(ch) else ch

    return html.escape("".join(shown(ch) for ch in text), quote=True)


def token_label(token: str) -> str:
    """A word piece for display: escaped, with BPE space markers made readable."""
    return escape(token.replace("Ġ", "␣").replace("▁", "␣"))


def position_labels(tokens: Iterable[str], positions: Iterable[int]) -> list[str]:
    """Unique axis labels "12 patient" (plotly merges repeated category labels)."""
    return [f"{int(position)} {token_label(token)}" for token, position in zip(tokens, positions)]


def layer_name(layer: int) -> str:
    """Hidden-state index -> label: 0 is the embedding output, k is encoder layer k."""
    return "embeddings" if layer == 0 else f"layer {layer}"


def head_name(layer: int, head: int) -> str:
    """0-based (layer, head) -> the 1-based label used everywhere in the UI."""
    return f"L{layer + 1} H{head + 1}"


def wrap_title(title: str, width: int = 40) -> str:
    """An (escaped) chart title broken into lines of about ``width`` characters with ``<br>``.

    Plotly never wraps a title: in a narrow column the end is cut off. Breaks fall on spaces,
    so escaped entities such as ``&amp;`` stay whole.
    """
    lines: list[str] = []
    for word in title.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)
