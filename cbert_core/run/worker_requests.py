"""Model work asked of a model worker process (:mod:`cbert_core.serving.worker_pool`): traces, walks and
analyses.

Each request carries what the worker needs to redo the server's work exactly: for a planned note, the note
and the options its plan was made with (:class:`PlannedNote`). The worker plans the note again (a
:class:`~cbert_core.run.plan.NotePlan` holds a lock and does not travel) and checks that it planned the same
windows, then runs the very function the server would have run, on its own copy of the same model. The
answer is the same record, array for array. Long work reports its progress after each step through the
worker's ``progress`` (which waits for the server: its session's turn may pause there, or stop the work).
"""

from __future__ import annotations

import enum
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.run.inside_capture import InsideTrace, inside_trace
from cbert_core.run.plan import NotePlan, RunOptions, plan_note
from cbert_core.run.trace import Trace, trace
from cbert_core.text.windows import Window

MAX_REQUEST_BYTES = 32 * 2**20  # larger inputs (a big collection's texts) stay with the server's own copy


@dataclass(frozen=True, kw_only=True)
class PlannedNote:
    """What a note plan is made from, to plan the note again in a worker."""

    text: str
    options: RunOptions  # the plan's, casing resolved
    windows: tuple[Window, ...]  # the server's, to check the worker plans the same

    @classmethod
    def of(cls, plan: NotePlan) -> PlannedNote:
        return cls(text=plan.text, options=plan.options, windows=plan.windows)

    def again(self, loaded: LoadedModel) -> NotePlan:
        """The note planned with ``loaded`` as the server planned it.

        Raises:
            ValueError: the worker's model cut the note into other windows (it is not the server's model).
        """
        plan = plan_note(loaded, self.text, self.options, segment_in_background=False)
        if plan.windows != self.windows:
            raise ValueError("the model worker planned the note into other windows than the server did")
        return plan


@dataclass(frozen=True, kw_only=True)
class TraceRequest:
    """:func:`cbert_core.run.trace.trace` of a planned note (one window or several)."""

    note: PlannedNote
    capture_qk: bool

    @classmethod
    def of(cls, plan: NotePlan, *, capture_qk: bool) -> TraceRequest:
        return cls(note=PlannedNote.of(plan), capture_qk=capture_qk)

    @property
    def long(self) -> bool:
        """Work of several steps (windows)."""
        return len(self.note.windows) > 1

    def answer(self, loaded: LoadedModel, progress: Progress | None = None) -> Trace:
        return trace(loaded, self.note.again(loaded), capture_qk=self.capture_qk, progress=progress)


@dataclass(frozen=True, kw_only=True)
class InsideRequest:
    """:func:`cbert_core.run.inside_capture.inside_trace` of one window of a note (one step: no progress)."""

    note: PlannedNote
    window: int

    @classmethod
    def of(cls, plan: NotePlan, window: int) -> InsideRequest:
        return cls(note=PlannedNote.of(plan), window=window)

    @property
    def long(self) -> bool:
        return False

    def answer(self, loaded: LoadedModel, progress: Progress | None = None) -> InsideTrace:
        return inside_trace(loaded, self.note.again(loaded), window=self.window)


class Stand(enum.Enum):
    """What stands for the server's model among an analysis's inputs: the worker's own copy."""

    MODEL = "the worker's model"


class NotPortable(Exception):
    """An input that cannot be redone in a worker (another model, a trace, a function not importable)."""


def _portable(value: Any, loaded: LoadedModel) -> Any:
    """``value`` as it travels to a worker of ``loaded``'s model.

    Raises:
        NotPortable: a value the worker could not rebuild or that is not worth sending.
    """
    if value is loaded:
        return Stand.MODEL
    if isinstance(value, LoadedModel):
        raise NotPortable("another model")
    if isinstance(value, NotePlan):
        if value.model_key != loaded.info.key:
            raise NotPortable("a note planned for another model")
        return PlannedNote.of(value)
    if isinstance(value, Trace):
        raise NotPortable("a trace (the server holds it)")
    if isinstance(value, tuple):
        return tuple(_portable(item, loaded) for item in value)
    if isinstance(value, list):
        return [_portable(item, loaded) for item in value]
    return value


def _rebuilt(value: Any, loaded: LoadedModel) -> Any:
    """A travelled value as the analysis takes it in the worker."""
    if value is Stand.MODEL:
        return loaded
    if isinstance(value, PlannedNote):
        return value.again(loaded)
    if isinstance(value, tuple):
        return tuple(_rebuilt(item, loaded) for item in value)
    if isinstance(value, list):
        return [_rebuilt(item, loaded) for item in value]
    return value


def _importable(function: Callable[..., Any]) -> bool:
    """Whether ``function`` is reached by its module and name (pickle sends it so)."""
    found: Any = sys.modules.get(function.__module__)
    for part in function.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is function


@dataclass(frozen=True, kw_only=True)
class AnalysisRequest:
    """``function(*inputs, progress=..., **arguments)`` run on the worker's copy of the model.

    The function travels by its module and name, the server's model as :attr:`Stand.MODEL`, note plans as
    :class:`PlannedNote`; other inputs as they are (they pickle).
    """

    function: Callable[..., Any]
    inputs: tuple[Any, ...]
    arguments: tuple[tuple[str, Any], ...]
    reports_progress: bool  # whether ``function`` takes a ``progress`` callback
    long: bool  # work of many steps (it reports progress between them)

    @classmethod
    def of(cls, loaded: LoadedModel, function: Callable[..., Any], inputs: tuple[Any, ...],
           arguments: dict[str, Any], *, reports_progress: bool, long: bool) -> AnalysisRequest | None:
        """The request, or None when it cannot be redone in a worker of ``loaded``'s model: an input is
        another model or a trace, the function is not importable by name, or the inputs do not pickle or
        are larger than :data:`MAX_REQUEST_BYTES`."""
        if not _importable(function):
            return None
        try:
            request = cls(function=function, inputs=_portable(inputs, loaded),
                          arguments=tuple((name, _portable(value, loaded)) for name, value in arguments.items()),
                          reports_progress=reports_progress, long=long)
            size = len(pickle.dumps(request, protocol=5))
        except (NotPortable, pickle.PicklingError, TypeError, AttributeError):
            return None
        return request if size <= MAX_REQUEST_BYTES else None

    def answer(self, loaded: LoadedModel, progress: Progress | None = None) -> Any:
        inputs = _rebuilt(self.inputs, loaded)
        arguments = {name: _rebuilt(value, loaded) for name, value in self.arguments}
        if self.reports_progress:
            arguments["progress"] = progress
        return self.function(*inputs, **arguments)
