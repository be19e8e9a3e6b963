"""Progress of long work: the callback type every long computation takes, and how it is called.

A ``Progress`` is called with (fraction done in [0, 1], a short message). The app turns it into a
progress bar; a changed input cancels the work there (Streamlit interrupts the run at the next
update). Nothing here may log note text: messages name counts and steps only.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call ``progress`` (if any) with ``fraction`` clipped to [0, 1]."""
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def part(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A ``Progress`` for one step of a longer piece of work: its [0, 1] maps to [start, end] of ``progress``."""
    if progress is None:
        return None
    return lambda fraction, message: report(progress, start + (end - start) * fraction, message)
