"""Model worker processes for a shared server: per model, one per core for short work and some for long work
at a lower priority, each with its own copy of the model.

Why: in one process every session's model work waits for the interpreter lock behind the other sessions'
Python (see :mod:`cbert_core.serving.model_worker`). A worker answers a request in its own process, and the
server's thread waits once for the answer, whose arrays arrive through shared memory
(:mod:`cbert_core.serving.shared_results`).

How it behaves:

* Workers are started by :meth:`WorkerPool.start` (the app does so when model work from two sessions
  overlaps, or always when asked), in the background, one after another; each loads the model by its spec,
  a few seconds for the bundled model. Until one is ready, :meth:`WorkerPool.answer` returns None and the
  caller runs the work itself, so nobody ever waits for a worker to start.
* Short work (a trace of one window, a walk through one window, a quick analysis) goes to an idle worker of
  its model's short lane; when all are busy the caller waits for one, up to ``wait_s``, then runs it itself.
* Long work (an explanation, a head scan, a trace of several windows: it may hold its worker for a long
  time, also while its session waits for a turn) has a lane of its own (``long_size`` workers on
  ``long_threads`` torch threads), at a lower CPU priority (``long_niceness``). Long work that finds no idle
  long worker runs in the caller at once, never waiting. Measured under the mixed load (``bench/load.py``,
  2 cores): long work in the short lane's workers took the cores from the short pages (their median rose by
  half, throughput 0.94x the server without workers), and the lower priority alone did not give them back;
  one long worker on one thread (the app's setting) left the short pages one core: 1.24x.
* The work's progress reports come back to the caller as they happen, and the work waits for each to be
  taken: its session's turn pauses there as it would in-process, and what the report raises (the session
  changed its input) stops the work in the worker, which then serves the next request.
* An error raised while answering (a note the model refuses) is raised in the caller, as if it had run
  there; the worker goes on serving. A worker that dies (killed, out of memory) or whose answer is broken
  off is stopped and replaced; the caller gets None and runs the work itself. A model whose workers fail to
  load, or die ``max_losses`` times, is not given workers again.
* Workers of at most ``max_models`` models are kept; the least recently used model's are stopped (both
  lanes).
* :meth:`WorkerPool.close` stops them all; a worker also ends by itself when the server's end of its
  connection closes, so none outlives the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import torch

from cbert_core.model.loading import ModelSpec
from cbert_core.progress import Progress
from cbert_core.serving.model_worker import ERROR, FAILED, GO, PROGRESS, READY, STOP, Unsendable
from cbert_core.serving.shared_results import receive_value
from cbert_core.serving.status import resident_bytes

WorkerMode = Literal["auto", "always", "off"]
WORKER_MODES: tuple[WorkerMode, ...] = ("auto", "always", "off")
DEFAULT_START_TIMEOUT_S = 300.0  # loading a model in a worker: longer means it is stuck
DEFAULT_WAIT_S = 30.0  # the longest a request waits for a busy worker before running in the caller
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where ``cbert_core`` is importable from
# The worker's entry: imported rather than run as ``-m`` (which would make it ``__main__``), so that what it
# sends back (its ``Stopped`` error) unpickles in the server under the same name.
# It lowers its own priority first, while it has one thread: the threads torch starts later inherit it.
_WORKER_MAIN = ("import os, sys; os.nice(int(sys.argv[4])); "
                "from cbert_core.serving.model_worker import main; sys.exit(main(sys.argv))")
DEFAULT_LONG_NICENESS = 19  # CPU weight 15 against 1024 for short work (Linux): long work gets what is left


def worker_mode(value: str | None) -> WorkerMode:
    """``auto`` (empty too), ``always`` or ``off`` (also ``0``), case-insensitive.

    Raises:
        ValueError: any other value.
    """
    text = (value or "").strip().lower() or "auto"
    text = "off" if text == "0" else text
    if text not in WORKER_MODES:
        raise ValueError(f"{text!r} is not a worker mode: use auto, always or off")
    return text  # type: ignore[return-value]


def spec_argument(spec: ModelSpec) -> str:
    """What a worker is told to load: the text that parses back to ``spec``."""
    return "bundled" if spec.kind == "bundled" else spec.location


class WorkerLost(Exception):
    """The worker process ended, or its connection broke, before it answered."""


class ModelWorker:
    """One worker process holding one model; asked one request at a time.

    Args:
        spec: the model to load (a hub model must be in the local cache: the worker never asks the hub).
        threads: torch's thread count in the worker (None: this process's).
        niceness: how much lower than the server's the worker's CPU priority is (0: the same).
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None, niceness: int = 0) -> None:
        threads = torch.get_num_threads() if threads is None else threads
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(part for part in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if part)
        environment = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno()), spec_argument(spec), str(threads),
                 str(max(0, niceness))],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=environment)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        self.in_step = True  # False while an exchange is under way: an interruption leaves it out of step

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> str:
        """Block until the model is loaded; its key.

        Raises:
            WorkerLost: the worker ended or did not answer within ``timeout_s``.
            The load's own error (e.g. ModelNotFoundError) when the worker could not load the model.
        """
        if not self._connection.poll(timeout_s):
            self.stop()
            raise WorkerLost(f"the model worker did not load the model within {timeout_s:g} s")
        tag, detail = self._receive()
        if tag == FAILED:
            self.stop()
            raise detail
        if tag != READY:
            self.stop()
            raise WorkerLost(f"the model worker sent {tag!r} instead of saying it was ready")
        return str(detail)

    def ask(self, request: Any, progress: Progress | None = None) -> tuple[Any, BaseException | None]:
        """(the answer, None), or (None, the error raised while answering).

        Args:
            progress: told each of the work's progress reports, in this thread; the work waits meanwhile (its
                session's turn may pause there). What it raises stops the work in the worker and is raised
                here, once the worker has ended that work (:attr:`in_step` is then True again).

        Raises:
            WorkerLost: the worker ended or the connection broke.
        """
        self.in_step = False
        self._send(request)
        message = self._receive()
        while message[0] == PROGRESS:
            try:
                if progress is not None:
                    progress(message[1], message[2])
            except BaseException:
                self._abandon()
                raise
            self._send(GO)
            message = self._receive()
        answer = (None, message[1]) if message[0] == ERROR else (self._value(message), None)
        self.in_step = True
        return answer

    def _abandon(self) -> None:
        """Stop the work under way and read what the worker sends until it has ended it."""
        self._send(STOP)
        message = self._receive()
        while message[0] == PROGRESS:  # not expected: the worker stops at the report it waits on
            self._send(STOP)
            message = self._receive()
        if message[0] != ERROR:
            self._value(message)  # it finished anyway: its answer is read and dropped
        self.in_step = True

    def _value(self, message: Any) -> Any:
        try:
            return receive_value(self._connection, message)
        except (EOFError, OSError) as broken:
            raise WorkerLost("the model worker's answer was broken off") from broken

    def _send(self, message: Any) -> None:
        try:
            self._connection.send(message)
        except OSError as broken:
            raise WorkerLost("the model worker's connection is closed") from broken

    def _receive(self) -> Any:
        try:
            return self._connection.recv()
        except (EOFError, OSError) as broken:
            raise WorkerLost("the model worker ended") from broken

    def stop(self) -> None:
        """End the worker now (it holds nothing that needs saving)."""
        self._connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass(kw_only=True, eq=False)
class _Crew:
    """The workers of one model in one lane (short or long work)."""

    spec: ModelSpec
    long: bool
    model_key: str  # what the server's copy of the model is keyed as: a worker must load the same
    idle: list[ModelWorker]
    busy: set[ModelWorker]
    starting: int = 0
    losses: int = 0
    failed: bool = False  # no more workers for this model (it failed to load, or workers kept dying)
    retired: bool = False  # its model was evicted: busy workers are stopped when they finish


@dataclass(frozen=True, kw_only=True)
class PoolState:
    """How many workers there are and the memory they hold, for the status line."""

    ready: int  # loaded, idle or answering
    starting: int
    rss_bytes: int  # resident memory of the ready workers together


class WorkerPool:
    """Worker processes for up to ``max_models`` models, ``size`` per model for short work and ``long_size``
    for long work.

    Args:
        size: workers per model for short work (the app uses one per core).
        threads: torch's thread count in each worker (None: this process's).
        long_size: workers per model for long work (None: ``size``).
        long_threads: torch's thread count in each long work's worker (None: ``threads``).
        long_niceness: how much lower the long lane's CPU priority is than the server's.
        max_models: models that keep workers at once (least recently used first to go).
        max_losses: workers of one model and lane that may die before that lane gets no more.
        wait_s: how long a short request waits for a busy worker before its caller runs it.
        start_timeout_s: how long a worker may take to load its model.
    """

    def __init__(self, size: int, *, threads: int | None = None, long_size: int | None = None,
                 long_threads: int | None = None, long_niceness: int = DEFAULT_LONG_NICENESS,
                 max_models: int = 2, max_losses: int = 3, wait_s: float = DEFAULT_WAIT_S,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        if size < 1 or max_models < 1:
            raise ValueError("a worker pool needs at least one worker and one model")
        self._size = {False: size, True: size if long_size is None else max(1, long_size)}
        self._threads = {False: threads, True: threads if long_threads is None else long_threads}
        self._long_niceness = long_niceness
        self._max_models = max_models
        self._max_losses = max_losses
        self._wait_s = wait_s
        self._start_timeout_s = start_timeout_s
        self._condition = threading.Condition()
        self._crews: OrderedDict[ModelSpec, dict[bool, _Crew]] = OrderedDict()  # model -> lane (long?) -> crew
        self._closed = False

    def start(self, spec: ModelSpec, model_key: str, *, long: bool = False) -> None:
        """Start ``size`` workers of ``spec``'s lane in the background, unless it has them (or they failed).

        Args:
            model_key: the key of the server's own copy; a worker that loads a model keyed otherwise is not
                used (the files changed under the server).
            long: the lane of long work (lower priority) instead of short work's.
        """
        with self._condition:
            lanes = self._crews.get(spec, {})
            if self._closed or long in lanes:
                return
            crew = _Crew(spec=spec, long=long, model_key=model_key, idle=[], busy=set(), starting=self._size[long])
            self._crews[spec] = {**lanes, long: crew}
            self._crews.move_to_end(spec)
            while len(self._crews) > self._max_models:
                _spec, evicted = self._crews.popitem(last=False)
                for lane in evicted.values():
                    self._retire(lane)
        threading.Thread(target=self._bring_up, args=(crew, self._size[long]), name="cbert-worker-start",
                         daemon=True).start()

    def answer(self, spec: ModelSpec, request: Any, progress: Progress | None = None, *,
               long: bool = False) -> Any | None:
        """A worker's answer to ``request`` (never None), or None: no worker of ``spec`` is ready, the one
        asked was lost, or its answer does not pickle (:class:`Unsendable`); the caller then does the work
        itself.

        Args:
            progress: told the work's progress reports (see :meth:`ModelWorker.ask`): what it raises stops
                the work and is raised here.
            long: work of many steps, which may hold its worker for long (and while its session waits for a
                turn): it goes to the long lane's workers, and never waits for one.

        Raises:
            What answering raised in the worker (the same error the caller would have met), or ``progress``.
        """
        crew, worker = self._take(spec, long=long)
        if worker is None:
            return None
        try:
            value, failure = worker.ask(request, progress)
        except WorkerLost:
            self._lose(crew, worker)
            return None
        except BaseException:  # progress raised (the worker ended the work), or this thread was interrupted
            (self._give_back if worker.in_step else self._lose)(crew, worker)
            raise
        self._give_back(crew, worker)
        if isinstance(failure, Unsendable):
            return None
        if failure is not None:
            raise failure
        return value

    def wait_ready(self, spec: ModelSpec, timeout_s: float, *, long: bool = False) -> bool:
        """Block until every worker of ``spec``'s lane has started (or failed to); whether any is ready."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                crew = self._crews.get(spec, {}).get(long)
                if crew is None:
                    return False
                if crew.starting == 0 or crew.failed:
                    return bool(crew.idle or crew.busy)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return bool(crew.idle or crew.busy)
                self._condition.wait(remaining)

    def worker_pids(self, spec: ModelSpec, *, long: bool = False) -> list[int]:
        """Process ids of the ready workers of ``spec``'s lane (idle first)."""
        with self._condition:
            crew = self._crews.get(spec, {}).get(long)
            return [] if crew is None else [worker.pid for worker in (*crew.idle, *crew.busy)]

    def state(self) -> PoolState:
        with self._condition:
            crews = self._every_crew()
            workers = [worker for crew in crews for worker in (*crew.idle, *crew.busy)]
            starting = sum(crew.starting for crew in crews)
        return PoolState(ready=len(workers), starting=starting,
                         rss_bytes=sum(resident_bytes(worker.pid) for worker in workers))

    def close(self) -> None:
        """Stop every worker; the pool starts none afterwards."""
        with self._condition:
            self._closed = True
            crews = self._every_crew()
            self._crews.clear()
            for crew in crews:
                self._retire(crew)
            self._condition.notify_all()

    def _every_crew(self) -> list[_Crew]:
        """Every model's crews, both lanes. Called holding the condition."""
        return [crew for lanes in self._crews.values() for crew in lanes.values()]

    def _take(self, spec: ModelSpec, *, long: bool) -> tuple[_Crew | None, ModelWorker | None]:
        deadline = time.monotonic() + self._wait_s
        with self._condition:
            while True:
                crew = self._crews.get(spec, {}).get(long)
                if crew is None or crew.failed or not (crew.idle or crew.busy):
                    return crew, None  # none ready (yet): the caller works without waiting
                self._crews.move_to_end(spec)
                if long and not crew.idle:  # long work never waits for a worker
                    return crew, None
                if crew.idle:
                    worker = crew.idle.pop()
                    crew.busy.add(worker)
                    return crew, worker
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return crew, None
                self._condition.wait(remaining)

    def _give_back(self, crew: _Crew, worker: ModelWorker) -> None:
        with self._condition:
            crew.busy.discard(worker)
            if crew.retired or crew.failed:
                worker.stop()
            else:
                crew.idle.append(worker)
            self._condition.notify_all()

    def _lose(self, crew: _Crew, worker: ModelWorker) -> None:
        """``worker`` died or was interrupted: stop it and start another (unless too many died)."""
        worker.stop()
        with self._condition:
            crew.busy.discard(worker)
            crew.losses += 1
            if crew.losses >= self._max_losses:
                crew.failed = True
                self._retire(crew)
            replace = not (crew.failed or crew.retired)
            if replace:
                crew.starting += 1
            self._condition.notify_all()
        if replace:
            threading.Thread(target=self._bring_up, args=(crew, 1), name="cbert-worker-start", daemon=True).start()

    def _retire(self, crew: _Crew) -> None:
        """Stop ``crew``'s idle workers; busy ones stop when they finish, and none is started any more. Called
        holding the condition."""
        crew.retired = True
        for worker in crew.idle:
            worker.stop()
        crew.idle.clear()

    def _bring_up(self, crew: _Crew, count: int) -> None:
        """Start ``count`` workers of ``crew``, one after another (each load takes the cores for a while)."""
        for _ in range(count):
            worker: ModelWorker | None = None
            try:
                worker = ModelWorker(crew.spec, threads=self._threads[crew.long],
                                     niceness=self._long_niceness if crew.long else 0)
                key = worker.wait_ready(self._start_timeout_s)
                usable = key == crew.model_key
            except Exception:  # the model did not load in a worker: the server keeps running it itself
                usable = False
            with self._condition:
                crew.starting -= 1
                if not usable:
                    crew.failed = True
                    self._retire(crew)
                keep = usable and not (crew.failed or crew.retired or self._closed)
                if keep:
                    crew.idle.append(worker)
                else:
                    crew.starting = 0  # nothing more is started for this model
                self._condition.notify_all()
            if not keep:
                if worker is not None:
                    worker.stop()
                return
