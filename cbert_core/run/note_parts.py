"""Parts of a long note that one pass through the model can show: windows, sections, sentences.

A note longer than the model's positions is read in overlapping windows (see
:mod:`cbert_core.text.windows`). Views that follow one pass through the model ("Inside
the model", attribution of a note-level target) work on one window; a user thinks in
sections and sentences. Each :class:`NotePart` names a window the model really read
(its context is exactly the trace's) and, for a section or a sentence, the positions
inside that window to focus on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cbert_core.run.trace import Trace

PartKind = Literal["window", "section", "sentence"]
# Section titles whose body usually holds the clinical findings; the default part is the
# window where the first such section starts.
FINDINGS_WORDS = ("finding", "impression", "assessment", "diagnos", "exam")
EXCERPT_CHARS = 60
FOCUS_RADIUS = 40  # pieces shown either side of a chosen piece when a whole window is too long to label


@dataclass(frozen=True, kw_only=True)
class NotePart:
    """One window of the note, optionally focused on a section or a sentence inside it.

    Positions are the trace's global positions (0 is [CLS], 1..n the note's pieces).
    """

    kind: PartKind
    label: str  # what the picker shows
    window: int  # index into Trace.windows: the model's input for this part
    first: int  # first focused position (global, inclusive)
    last: int  # last focused position (global, inclusive)
    complete: bool  # False: a section or sentence longer than its window, cut to it

    @property
    def focus(self) -> np.ndarray:
        """int64 [m]: the focused global positions."""
        return np.arange(self.first, self.last + 1, dtype=np.int64)


def _excerpt(text: str, start: int, end: int) -> str:
    snippet = " ".join(text[start:end].split())
    return snippet if len(snippet) <= EXCERPT_CHARS else snippet[:EXCERPT_CHARS - 1].rstrip() + "…"


def _best_window(trace: Trace, first: int, last: int) -> tuple[int, int, int]:
    """The window holding most of positions [first, last] (earliest on ties), and the span cut to it."""
    best = (-1, 0, first, last)
    for window in trace.windows:
        low, high = max(first, window.start + 1), min(last, window.stop)  # window content is positions start+1..stop
        covered = high - low + 1
        if covered > best[0]:
            best = (covered, window.index, low, high)
    return best[1], best[2], best[3]


def _span_part(trace: Trace, kind: PartKind, name: str, positions: np.ndarray) -> NotePart | None:
    if positions.size == 0:
        return None
    first, last = int(positions.min()), int(positions.max())
    window, low, high = _best_window(trace, first, last)
    complete = (low, high) == (first, last)
    shown_window = f" · window {window + 1}" if len(trace.windows) > 1 else ""
    cut = "" if complete else f" (cut to window {window + 1})"
    return NotePart(kind=kind, label=f"{name}{shown_window}{cut}", window=window, first=low, last=high,
                    complete=complete)


def note_parts(trace: Trace) -> tuple[NotePart, ...]:
    """Every window, section and sentence of the note as a part one pass can show.

    Returns:
        Windows first (in order), then sections with a header, then sentences.
    """
    parts: list[NotePart] = []
    offsets = trace.offsets
    if len(trace.windows) == 1:
        parts.append(NotePart(kind="window", window=0, first=1, last=trace.num_positions - 2, complete=True,
                              label=f"The whole note ({trace.num_positions - 2:,} word pieces)"))
    for window in trace.windows if len(trace.windows) > 1 else ():
        start_char = int(offsets[window.start + 1, 0])
        parts.append(NotePart(
            kind="window", window=window.index, first=window.start + 1, last=window.stop, complete=True,
            label=f"Window {window.index + 1} of {len(trace.windows)}: pieces {window.start + 1:,}–{window.stop:,}, "
                  f"from “{_excerpt(trace.text, start_char, start_char + EXCERPT_CHARS)}”"))
    for index, section in enumerate(trace.segmentation.sections):
        if not section.title:
            continue
        part = _span_part(trace, "section", f"Section {section.title}", np.flatnonzero(trace.section_ids == index))
        if part is not None:
            parts.append(part)
    for index, sentence in enumerate(trace.segmentation.sentences):
        name = f"Sentence {index + 1}: “{_excerpt(trace.text, sentence.start, sentence.end)}”"
        part = _span_part(trace, "sentence", name, np.flatnonzero(trace.sentence_ids == index))
        if part is not None:
            parts.append(part)
    return tuple(parts)


def default_part(trace: Trace, parts: tuple[NotePart, ...]) -> int:
    """Index into ``parts`` of the part to open first.

    The window holding the first [MASK] (the question the user typed), else the window
    where the first section with findings starts (findings, impression, assessment,
    diagnosis, examination), else the first window.
    """
    windows = [index for index, part in enumerate(parts) if part.kind == "window"]
    masks = trace.mask_positions
    if masks.size:
        return windows[int(trace.owner[int(masks[0])])]
    for index, section in enumerate(trace.segmentation.sections):
        title = section.title.lower()
        if title and any(word in title for word in FINDINGS_WORDS):
            held = np.flatnonzero(trace.section_ids == index)
            if held.size:
                return windows[int(trace.owner[int(held[0])])]
    return windows[0]


def focus_positions(note_positions: np.ndarray, part: NotePart, around: int, radius: int = FOCUS_RADIUS) -> np.ndarray:
    """Rows of one pass (one window) that a view should draw.

    Args:
        note_positions: int64 [pos]: the note position of each row of the pass.
        part: the part the user chose; a section or a sentence is drawn whole.
        around: the row of the chosen piece, the centre of the view for a whole window.
        radius: rows either side of ``around`` when a whole window has more than ``2 * radius + 1``.

    Returns:
        int64 [m]: increasing rows of the pass.
    """
    count = len(note_positions)
    if part.kind != "window":
        rows = np.flatnonzero((note_positions >= part.first) & (note_positions <= part.last))
        return rows.astype(np.int64) if rows.size else np.arange(count, dtype=np.int64)
    return rows_around(count, around, radius)


def rows_around(count: int, around: int, radius: int = FOCUS_RADIUS) -> np.ndarray:
    """int64: ``2 * radius + 1`` consecutive rows of ``count`` centred on ``around`` (all rows when fewer),
    shifted to stay inside ``[0, count)``."""
    width = 2 * radius + 1
    if count <= width:
        return np.arange(count, dtype=np.int64)
    start = int(min(max(around - radius, 0), count - width))
    return np.arange(start, start + width, dtype=np.int64)
