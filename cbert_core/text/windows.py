"""Overlapping windows for notes longer than the model's positions, and stitching.

A window is a run of content tokens; the forward pass adds [CLS] and [SEP]
around it, so it holds at most ``max_tokens - 2`` content tokens where
``max_tokens`` comes from ``config.max_position_embeddings``. Windows end, and
the next one starts, at a sentence boundary when one lies close enough.
Stitching gives every token the values of the window where it sits furthest
from an edge, so it saw the most context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_OVERLAP = 32


@dataclass(frozen=True, kw_only=True)
class Window:
    """Content tokens [start, stop) of the note, run through the model together."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def _snap(target: int, low: int, boundaries: Sequence[int]) -> int:
    """The largest boundary in [low, target], or target when there is none."""
    candidates = [b for b in boundaries if low <= b <= target]
    return max(candidates) if candidates else target


def plan_windows(n_tokens: int, max_content: int, overlap: int = DEFAULT_OVERLAP,
                 boundaries: Sequence[int] = ()) -> tuple[Window, ...]:
    """Cut ``n_tokens`` content tokens into overlapping windows.

    Args:
        n_tokens: number of content tokens (specials excluded).
        max_content: most content tokens per window (positions minus 2).
        overlap: tokens shared by neighbouring windows (at least; snapping may add some).
        boundaries: token indices where sentences start, for snapping.

    Returns:
        Windows covering every token, in order.
    """
    if max_content < 8:
        raise ValueError(f"a window of {max_content} tokens is too small")
    overlap = int(min(max(overlap, 0), max_content // 2))
    if n_tokens <= max_content:
        return (Window(index=0, start=0, stop=n_tokens),)
    snap = max(1, min(64, max_content // 8))
    ordered = sorted(set(int(b) for b in boundaries))
    windows: list[Window] = []
    start = 0
    while True:
        if start + max_content >= n_tokens:
            windows.append(Window(index=len(windows), start=start, stop=n_tokens))
            return tuple(windows)
        limit = start + max_content
        stop = _snap(limit, limit - snap, ordered)
        windows.append(Window(index=len(windows), start=start, stop=stop))
        next_start = stop - overlap
        start = max(_snap(next_start, next_start - snap, ordered), start + 1)


def owner_windows(windows: Sequence[Window], n_tokens: int) -> np.ndarray:
    """int32 [n_tokens]: for each content token, the window where it is most central."""
    owner = np.zeros(n_tokens, dtype=np.int32)
    best = np.full(n_tokens, -1, dtype=np.int64)
    for window in windows:
        positions = np.arange(window.start, window.stop)
        margin = np.minimum(positions - window.start, window.stop - 1 - positions)
        better = margin > best[window.start:window.stop]
        owner[window.start:window.stop][better] = window.index
        best[window.start:window.stop][better] = margin[better]
    return owner
