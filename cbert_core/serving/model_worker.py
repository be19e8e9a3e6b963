"""A model worker process: its own copy of one model, answering the server's requests one at a time.

The server's threads share one interpreter lock. Model work is hundreds of small torch operations, and
after each one the thread must take the lock back from whichever thread is running Python (another
session's page building its figures), up to 5 ms each time: a 30 ms trace took 2.2 s beside one such
thread (``bench/convoy.py``). In its own process the model never waits for that lock; the server's thread
only waits for the answer, once.

Started by :class:`cbert_core.serving.worker_pool.ModelWorker`, which runs :func:`main` with the arguments
``DESCRIPTOR SPEC THREADS NICENESS``.

``DESCRIPTOR`` is this process's end of a socket pair with the server, ``SPEC`` what
:func:`cbert_core.model.loading.parse_spec` reads, ``THREADS`` torch's thread count (``NICENESS``, how much
the process lowered its CPU priority, is applied by the entry line before this module is imported). Messages:

* worker to server, once: ``("ready", model key)`` when the model is loaded, or ``("failed", exception)``;
* server to worker: a request, any picklable object with ``answer(loaded, progress) -> value``;
* worker to server, as the work goes on: ``("progress", fraction, message)``, after which the worker waits
  for ``"go"`` (the server reported it, and its session may have waited for a turn on the model meanwhile)
  or ``"stop"`` (the session moved on: the work ends with :class:`Stopped`);
* worker to server: the value (:func:`cbert_core.serving.shared_results.send_value`), or
  ``("error", exception)`` when answering raised (the worker goes on serving), or ``("error", Unsendable)``
  when the value does not pickle (the server then does the work itself).

It writes nothing (no log, no file) and ends when the server closes its end or goes away.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.progress import Progress
from cbert_core.serving.shared_results import send_value

READY = "ready"
FAILED = "failed"
ERROR = "error"
PROGRESS = "progress"
GO = "go"
STOP = "stop"


class Stopped(Exception):
    """The server stopped the work at a progress report (its session changed its input or went away)."""


class Unsendable(Exception):
    """The answer does not pickle (it holds a lock or an open resource): the server must do the work itself."""


def reporter(connection: Connection) -> Progress:
    """The progress callback of a request: each report goes to the server, which says whether to go on."""

    def report(fraction: float, message: str) -> None:
        connection.send((PROGRESS, float(fraction), str(message)))
        if connection.recv() != GO:
            raise Stopped("the server stopped this work")

    return report


def portable(failure: BaseException) -> BaseException:
    """``failure`` itself when it pickles (the server raises the same error), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(failure))
    except Exception:  # an exception whose arguments do not pickle
        return RuntimeError(f"{type(failure).__name__}: {failure}")
    return failure


def warm_up(loaded: LoadedModel) -> None:
    """One short pass before the first request, which would otherwise pay for torch's first-call set-up
    (measured here: 0.2 s for the first trace of a short note against 0.04 s for the next)."""
    encoded = loaded.tokenizer()("Patient denies chest pain.", return_tensors="pt")
    with torch.inference_mode():
        loaded.model(input_ids=encoded["input_ids"].to(loaded.device))


def memory_trimmer() -> Callable[[], None]:
    """What hands the memory freed by an answer back to the system. glibc's allocator keeps freed memory for
    later; a worker's analyses free hundreds of megabytes of temporaries, and a worker is long-lived. Nothing
    to do where the C library has no ``malloc_trim`` (not glibc)."""
    found = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(found), "malloc_trim", None) if found else None
    return (lambda: None) if trim is None else (lambda: trim(0))


def serve(connection: Connection, loaded: LoadedModel) -> None:
    """Answer requests until the server closes the connection."""
    trim = memory_trimmer()
    while True:
        try:
            request: Any = connection.recv()
        except (EOFError, OSError):  # the server closed its end, or went away
            return
        try:
            value = request.answer(loaded, reporter(connection))
        except Exception as failure:
            connection.send((ERROR, portable(failure)))
            continue
        finally:
            request = None  # what the request planned is freed before the memory is trimmed
        try:
            send_value(connection, value)  # pickled before anything is sent: a failure sends nothing
        except (pickle.PicklingError, TypeError, AttributeError) as failure:
            connection.send((ERROR, Unsendable(f"the answer does not pickle ({type(failure).__name__})")))
        value = None
        trim()


def main(argv: list[str]) -> int:
    descriptor, spec_text, threads = int(argv[1]), argv[2], int(argv[3])
    torch.set_num_threads(max(1, threads))
    connection = Connection(descriptor)
    try:
        loaded = load_model(spec_text)
    except Exception as failure:
        connection.send((FAILED, portable(failure)))
        return 1
    warm_up(loaded)
    connection.send((READY, loaded.info.key))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server went away mid-answer
        serve(connection, loaded)
    return 0
