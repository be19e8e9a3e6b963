"""The audit log: one line per analysis a session gets, never a piece of the note.

Each line is a JSON object: ``time`` (UTC), ``event`` ("analysis", or "access" for a refused
sign-in), ``user`` (the signed-in e-mail address, or "unauthenticated"), ``session`` (a short id
that tells browser tabs apart), ``page``, ``analysis`` (the function, e.g. ``attribute`` or
``trace``), ``model`` (its name), ``seconds`` and ``outcome``: ``ok``, ``refused`` (an error the
user can fix, e.g. a note over the length limit; ``error`` names its type), ``failed`` (a bug;
``error`` names the exception's type) or ``cancelled`` (the user changed the input while it ran).
Messages are never logged: they can quote the note. An analysis a session already got is not logged
again when the page is redrawn; a result another session computed is logged for this one too, with
the time it took to hand it over. A fine-tuning run (:func:`audit_work`) is logged every time it runs.

The lines go to the logger ``cbert.audit``, which has its own handler and does not pass them on:
to the server's standard error, or, when ``CBERT_AUDIT_LOG`` names a file, appended to that file
(the only file the app writes without a user's export; it is the administrator's choice).

Light on purpose (no torch): the sign-in gate uses it before anything heavy is imported.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from cbert_core.errors import CbertError

AUDIT_LOGGER = "cbert.audit"
AUDIT_FILE_ENV = "CBERT_AUDIT_LOG"
_SEEN_KEY = "audit_seen"  # session state: digests of the analyses this session was already logged for
_SEEN_LIMIT = 4096
_CANCELLED = frozenset({"RerunException", "StopException"})  # Streamlit interrupting a stale run
_SETUP_LOCK = threading.Lock()
_RUN = threading.local()

Accessor = TypeVar("Accessor", bound=Callable[..., Any])


def audit_logger() -> logging.Logger:
    """The audit logger, given its handler the first time (a file when ``CBERT_AUDIT_LOG`` is set)."""
    logger = logging.getLogger(AUDIT_LOGGER)
    with _SETUP_LOCK:
        if not getattr(logger, "cbert_configured", False):
            path = os.environ.get(AUDIT_FILE_ENV, "").strip()
            handler: logging.Handler = (logging.FileHandler(path, encoding="utf-8", delay=True) if path
                                        else logging.StreamHandler(sys.stderr))
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # Streamlit's own log settings neither hide nor repeat these lines
            logger.cbert_configured = True  # type: ignore[attr-defined]
    return logger


def set_run(*, user: str, page: str) -> None:
    """Who runs this script run and on which page (the entry script calls it once per run)."""
    _RUN.user, _RUN.page = user, page


def _session() -> str:
    context = get_script_run_ctx(suppress_warning=True)
    return "-" if context is None else hashlib.sha256(context.session_id.encode()).hexdigest()[:10]


def audit_line(event: str, **fields: Any) -> str:
    """One log line: a JSON object with the time, the event, this run's user, session and page, and ``fields``."""
    record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
              "user": getattr(_RUN, "user", "unauthenticated"), "session": _session(),
              "page": getattr(_RUN, "page", "-"), **fields}
    return json.dumps(record, ensure_ascii=False)


def record(event: str, **fields: Any) -> None:
    """Write one audit line (see :func:`audit_line`)."""
    audit_logger().info(audit_line(event, **fields))


def outcome_of(problem: BaseException | None) -> dict[str, str]:
    """``outcome`` (and ``error``: the exception's type, never its message) for an analysis that raised ``problem``."""
    if problem is None:
        return {"outcome": "ok"}
    name = type(problem).__name__
    if name in _CANCELLED:
        return {"outcome": "cancelled"}
    return {"outcome": "refused" if isinstance(problem, CbertError) else "failed", "error": name}


def _part(value: Any) -> str:
    """What stands for one argument in the digest that tells analyses apart (never logged)."""
    info = getattr(value, "info", None)
    if info is not None and hasattr(info, "key"):
        return f"model:{info.key}"
    key = getattr(value, "key", None)
    if isinstance(key, str):
        return f"key:{key}"
    if callable(value):
        return f"fn:{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, (str, int, float, bool, type(None), frozenset, tuple)):
        return repr(value)
    return f"id:{id(value)}"  # an earlier result: the cached object itself


def _first_seen(digest: str) -> bool:
    """True the first time this session gets the analysis ``digest`` (then remembered, boundedly)."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return True
    seen: OrderedDict[str, None] = st.session_state.setdefault(_SEEN_KEY, OrderedDict())
    if digest in seen:
        seen.move_to_end(digest)
        return False
    seen[digest] = None
    while len(seen) > _SEEN_LIMIT:
        seen.popitem(last=False)
    return True


def audited(kind: str | None = None) -> Callable[[Accessor], Accessor]:
    """Decorate an accessor that hands a session an analysis, so that each analysis gets one audit line.

    Args:
        kind: the analysis the accessor always runs (e.g. "trace"); None: its first argument is the
            analysis function (as for ``ui.caches.computed``).
    """
    def decorate(accessor: Accessor) -> Accessor:
        @functools.wraps(accessor)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            analysis = kind or getattr(args[0], "__name__", repr(args[0]))
            model = next((str(value.info.name) for value in args if hasattr(getattr(value, "info", None), "name")),
                         "-")
            parts = "\x1f".join([kind or "", *(_part(value) for value in args),
                                 *(f"{name}={_part(value)}" for name, value in sorted(kwargs.items())
                                   if name not in {"label", "measure", "progress", "passes"})])
            digest = hashlib.sha256(parts.encode("utf-8", "surrogatepass")).hexdigest()
            started = time.perf_counter()
            try:
                result = accessor(*args, **kwargs)
            except BaseException as problem:
                record("analysis", analysis=analysis, model=model,
                       seconds=round(time.perf_counter() - started, 3), **outcome_of(problem))
                raise
            if _first_seen(digest):
                record("analysis", analysis=analysis, model=model, seconds=round(time.perf_counter() - started, 3),
                       **outcome_of(None))
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


@contextmanager
def audit_work(analysis: str, model: str) -> Iterator[dict[str, Any]]:
    """One audit line for model work a session runs itself rather than gets from a shared cache (a
    fine-tuning run): written every time, when the block ends.

    Yields:
        fields for the line that the block may set, e.g. ``{"outcome": "cancelled"}`` for a run the
        user stopped that still returned.
    """
    fields: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        yield fields
    except BaseException as problem:
        record("analysis", analysis=analysis, model=model, seconds=round(time.perf_counter() - started, 3),
               **outcome_of(problem))
        raise
    record("analysis", analysis=analysis, model=model, seconds=round(time.perf_counter() - started, 3),
           **{**outcome_of(None), **fields})
