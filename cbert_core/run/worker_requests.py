"""Model work asked of a model worker process (:mod:`cbert_core.serving.worker_pool`): traces and walks.

Each request carries what the worker needs to redo the server's work exactly: the note and the
options its plan was made with. The worker plans the note again (a :class:`~cbert_core.run.plan.NotePlan`
holds a lock and does not travel) and checks that it planned the same windows, then runs the very
function the server would have run, on its own copy of the same model. The answer is the same record,
array for array. A trace reports its progress after each window through the worker's ``progress``
(which waits for the server: its session's turn may pause there, or stop the work).
"""

from __future__ import annotations

from dataclasses import dataclass

from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.run.inside_capture import InsideTrace, inside_trace
from cbert_core.run.plan import NotePlan, RunOptions, plan_note
from cbert_core.run.trace import Trace, trace
from cbert_core.text.windows import Window


def _planned_again(loaded: LoadedModel, text: str, options: RunOptions, windows: tuple[Window, ...]) -> NotePlan:
    """The note planned in the worker as the server planned it.

    Raises:
        ValueError: the worker's model cut the note into other windows (it is not the server's model).
    """
    plan = plan_note(loaded, text, options, segment_in_background=False)
    if plan.windows != windows:
        raise ValueError("the model worker planned the note into other windows than the server did")
    return plan


@dataclass(frozen=True, kw_only=True)
class TraceRequest:
    """:func:`cbert_core.run.trace.trace` of a planned note (one window or several)."""

    text: str
    options: RunOptions  # the plan's, casing resolved
    windows: tuple[Window, ...]
    capture_qk: bool

    @classmethod
    def of(cls, plan: NotePlan, *, capture_qk: bool) -> TraceRequest:
        return cls(text=plan.text, options=plan.options, windows=plan.windows, capture_qk=capture_qk)

    @property
    def long(self) -> bool:
        """Work of several steps (windows)."""
        return len(self.windows) > 1

    def answer(self, loaded: LoadedModel, progress: Progress | None = None) -> Trace:
        plan = _planned_again(loaded, self.text, self.options, self.windows)
        return trace(loaded, plan, capture_qk=self.capture_qk, progress=progress)


@dataclass(frozen=True, kw_only=True)
class InsideRequest:
    """:func:`cbert_core.run.inside_capture.inside_trace` of one window of a note (one step: no progress)."""

    text: str
    options: RunOptions
    windows: tuple[Window, ...]
    window: int

    @classmethod
    def of(cls, plan: NotePlan, window: int) -> InsideRequest:
        return cls(text=plan.text, options=plan.options, windows=plan.windows, window=window)

    @property
    def long(self) -> bool:
        return False

    def answer(self, loaded: LoadedModel, progress: Progress | None = None) -> InsideTrace:
        return inside_trace(loaded, _planned_again(loaded, self.text, self.options, self.windows), window=self.window)
