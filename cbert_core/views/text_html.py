"""The note drawn as HTML: word-piece boundaries, sections and sentences, scores.

Every character of the note is HTML-escaped; the only markup is ours (spans
with inline styles), so a note holding ``<script>`` shows those characters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbert_core.views.labels import escape

BOX = "font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92rem; line-height: 2.0;" \
      " white-space: pre-wrap; word-break: break-word; padding: 0.6rem 0.8rem; border-radius: 6px;" \
      " background: #ffffff; border: 1px solid #dfe6ea;"
WORD_COLOURS = ("#e3f0f7", "#fdf0dc")
SENTENCE_COLOURS = ("#eaf4ea", "#eef0fa")


def _plain(text: str) -> str:
    return escape(text, keep_layout=True)


def pieces_html(text: str, offsets: np.ndarray, word_ids: np.ndarray, unknown: Sequence[bool] | None = None,
                title: Sequence[str] | None = None) -> str:
    """The note with each word piece boxed; words alternate colour, pieces of one word share it.

    Args:
        offsets: int [n, 2] character spans of the pieces (no special tokens).
        word_ids: int [n] word index of each piece.
        unknown: bool [n] marks pieces that became [UNK] (drawn in red).
        title: n tooltips (escaped here).
    """
    parts: list[str] = [f'<div style="{BOX}">']
    cursor = 0
    for index, (start, end) in enumerate(offsets.tolist()):
        if start < cursor:
            continue
        parts.append(_plain(text[cursor:start]))
        continues = index > 0 and word_ids[index] == word_ids[index - 1] and offsets[index - 1][1] == start
        colour = "#f8d7da" if unknown is not None and unknown[index] else WORD_COLOURS[int(word_ids[index]) % 2]
        left = "border-left: 2px solid #1f6f8b;" if continues else ""
        tip = f' title="{escape(title[index])}"' if title is not None else ""
        parts.append(f'<span style="background:{colour}; {left} padding: 1px 1px; border-radius: 2px;"{tip}>'
                     f"{_plain(text[start:end])}</span>")
        cursor = end
    parts.append(_plain(text[cursor:]))
    parts.append("</div>")
    return "".join(parts)


def segments_html(text: str, sections: Sequence[tuple[str, int, int]], sentences: Sequence[tuple[int, int]],
                  windows: Sequence[tuple[int, int]] = ()) -> str:
    """The note with section headers bold and sentences shaded alternately, numbered.

    Args:
        sections: (title, header start, header end) per section with a header.
        sentences: (start, end) character spans.
        windows: (start char, end char) of each model window, marked where they begin.
    """
    marks: list[tuple[int, int, str]] = []  # (position, order, html)
    for number, (start, end) in enumerate(sentences, start=1):
        colour = SENTENCE_COLOURS[number % 2]
        marks.append((start, 2, f'<span style="background:{colour}; border-radius: 3px; padding: 1px 0;">'
                                f'<sup style="color:#7a8a94; font-size:0.65rem;">{number}</sup>'))
        marks.append((end, 0, "</span>"))
    for _title, start, end in sections:
        marks.append((start, 3, '<b style="color:#1f6f8b;">'))
        marks.append((end, 1, "</b>"))
    for number, (start, _end) in enumerate(windows, start=1):
        if len(windows) > 1:
            marks.append((start, 4, f'<span style="background:#1f6f8b; color:white; border-radius:3px; '
                                    f'font-size:0.7rem; padding:0 4px; margin-right:2px;">window {number}</span>'))
    marks.sort(key=lambda mark: (mark[0], mark[1]))
    parts = [f'<div style="{BOX}">']
    cursor = 0
    for position, _order, markup in marks:
        if position > cursor:
            parts.append(_plain(text[cursor:position]))
            cursor = position
        parts.append(markup)
    parts.append(_plain(text[cursor:]))
    parts.append("</div>")
    return "".join(parts)


def scores_html(text: str, spans: np.ndarray, scores: np.ndarray, title: Sequence[str] | None = None,
                excluded: np.ndarray | None = None) -> str:
    """Spans of the note tinted by signed score: red pushes the target up, blue pushes it down.

    Args:
        spans: int [n, 2] character spans (words or pieces), in text order.
        scores: float [n]; scaled by the largest magnitude among the spans not excluded.
        excluded: bool [n] spans left out of the colour scale and drawn outlined, uncoloured
            (the target [MASK] itself: gradient methods give it a large score that says nothing
            about the evidence and would wash out every other colour).
    """
    excluded = np.zeros(len(scores), dtype=bool) if excluded is None else np.asarray(excluded, dtype=bool)
    scaled = np.abs(np.asarray(scores, dtype=np.float64))[~excluded]
    limit = float(scaled.max()) if scaled.size else 0.0
    parts = [f'<div style="{BOX}">']
    cursor = 0
    for index, (start, end) in enumerate(spans.tolist()):
        if start < cursor:
            continue
        parts.append(_plain(text[cursor:start]))
        tip = escape(title[index]) if title is not None else f"{float(scores[index]):+.4f}"
        if excluded[index]:
            parts.append(f'<span style="outline: 1px dashed #7a8a94; border-radius: 2px;" '
                         f'title="{tip} (not on the colour scale)">{_plain(text[start:end])}</span>')
        else:
            value = float(scores[index]) / limit if limit > 0 else 0.0
            colour = (f"rgba(214, 39, 40, {min(abs(value), 1.0):.2f})" if value > 0
                      else f"rgba(31, 119, 180, {min(abs(value), 1.0):.2f})")
            parts.append(f'<span style="background:{colour}; border-radius: 2px;" title="{tip}">'
                         f"{_plain(text[start:end])}</span>")
        cursor = end
    parts.append(_plain(text[cursor:]))
    parts.append("</div>")
    return "".join(parts)
