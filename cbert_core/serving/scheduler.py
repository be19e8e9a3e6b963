"""Fair turns on the shared model: one first-come-first-served queue for every session's model work.

Every browser session runs on the same two cores. Without turns, eight sessions run eight
analyses at once; a short trace that arrives behind a long attribution then shares the cores
with it (and with everyone else) and takes as long as the slowest of them. The scheduler
lets at most ``slots`` pieces of work run at once (the cores) and hands out turns in order of
arrival, across sessions.

With ``express=True`` (the app's setting) short work does not queue at all: a piece of work starts at
once, and only when it reports its first step (a window of a long note, a batch of attribution passes,
a head of a scan) does it join the queue for one of the ``slots``. A trace of one window, the walk
through one window, the pages' quick analyses finish without a step and never wait; long work (which
is what holds memory and the cores for minutes) is bounded and takes turns. Measured under a mixed load
(``bench/load.py``), queueing the short work too made the slowest short page worse than no scheduler:
sessions arrive in bursts, and n equal jobs in one queue finish one after another, while run together
they finish at about the same time.

How a short job is guaranteed never to wait behind more than the work already running:

* A turn is taken for one piece of work and its place in the queue is the moment it asked.
* Long work (attribution, the head scan, long traces, fine-tuning) reports progress between
  its steps (windows, batches of passes, heads). At each report it calls :meth:`Turn.pause`:
  when anyone is waiting, it gives its slot to the first in the queue and asks again at the
  back, as a newcomer. So a job that arrives while every slot is busy waits at most for the
  step each running job is in (plus the jobs that arrived before it), never for the whole of
  a long analysis, and a long analysis still finishes: it takes a step whenever its turn
  comes round again.
* Nested turns in one thread (an analysis that traces first) reuse the turn already held, so
  a thread never waits for itself.

A waiter is told its position (the work ahead of it: running plus queued before it) every
``poll_s`` seconds through its ``waiting`` callback. An exception raised there (the user
changed the input, the browser went away) withdraws it from the queue, so a session that
disconnects while queued frees its turn at once.

No Streamlit here; the app's side (``ui.caches``) shows the position and cancels.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

Waiting = Callable[[int], None]  # called with the number of analyses ahead (running + queued earlier)
DEFAULT_POLL_S = 0.5


def default_slots() -> int:
    """How many pieces of model work may run at once: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class QueueState:
    """A snapshot of the scheduler, for the status line."""

    slots: int | None  # None: not bounded (the scheduler is bypassed)
    running: int  # holding a slot, or short work in the express lane
    waiting: int


class _Ticket:
    """One request for a turn (the identity is what matters)."""

    __slots__ = ("number",)
    _numbers = itertools.count()

    def __init__(self) -> None:
        self.number = next(self._numbers)


class Turn:
    """A held turn on the model. Long work calls :meth:`pause` between its steps."""

    def __init__(self, scheduler: Scheduler, ticket: _Ticket, waiting: Waiting | None, *, express: bool) -> None:
        self._scheduler = scheduler
        self._ticket = ticket
        self._waiting = waiting
        self.express = express  # running without a slot, as short work, until its first step
        self.paused_s = 0.0  # time spent waiting in pauses (not working): left out of speed measurements

    def pause(self) -> None:
        """Between two steps of long work: when anyone waits, let them go first and queue again at the back.

        Returns at once when nobody waits. Work in the express lane joins the queue for a slot at its first
        step instead (it is long work). The ``waiting`` callback of the turn is called while it waits (an
        exception there ends the wait and propagates; the slot is not held then).
        """
        started = time.perf_counter()
        if self.express:
            self.express = False
            self._scheduler._leave_express(self._ticket)
            queued = True
        else:
            queued = self._scheduler._requeue(self._ticket)
        if queued:
            try:
                self._scheduler._wait_for_slot(self._ticket, self._waiting)
            finally:
                self.paused_s += time.perf_counter() - started


class Scheduler:
    """At most ``slots`` turns at once, handed out first come first served across threads.

    Args:
        slots: how many turns may run at once (the cores); None: unbounded, i.e. the scheduler is
            bypassed (every caller runs at once, as without it) but still counted for the status line.
        poll_s: how often a waiter's ``waiting`` callback is called.
        express: short work runs at once and queues only at its first step (see the module's text).
    """

    def __init__(self, slots: int | None, *, poll_s: float = DEFAULT_POLL_S, express: bool = False) -> None:
        if slots is not None and slots < 1:
            raise ValueError("a scheduler needs at least one slot")
        self.slots = slots
        self._poll_s = poll_s
        self._condition = threading.Condition()
        self._queue: list[_Ticket] = []  # waiting, in order of arrival
        self._running: set[_Ticket] = set()
        self._express = express
        self._short: set[_Ticket] = set()  # running in the express lane, without a slot
        self._held = threading.local()  # the turn this thread holds, if any

    def state(self) -> QueueState:
        with self._condition:
            return QueueState(slots=self.slots, running=len(self._running) + len(self._short),
                              waiting=len(self._queue))

    @contextmanager
    def turn(self, waiting: Waiting | None = None) -> Iterator[Turn]:
        """Hold a turn for the block (waiting for it first, in order of arrival).

        Args:
            waiting: called every ``poll_s`` seconds while this caller waits, with how many analyses are
                ahead of it; what it raises withdraws the request and propagates.
        """
        held: Turn | None = getattr(self._held, "turn", None)
        if held is not None:  # nested in this thread: the turn already held covers it
            yield held
            return
        ticket = _Ticket()
        with self._condition:
            (self._short.add if self._express else self._queue.append)(ticket)
        if not self._express:
            self._wait_for_slot(ticket, waiting)
        turn = Turn(self, ticket, waiting, express=self._express)
        self._held.turn = turn
        try:
            yield turn
        finally:
            self._held.turn = None
            self._leave(ticket)

    def _wait_for_slot(self, ticket: _Ticket, waiting: Waiting | None) -> None:
        """Block until ``ticket`` (already queued) may run; on any exception it leaves the queue."""
        try:
            while True:
                with self._condition:
                    position = self._queue.index(ticket)
                    free = len(self._queue) if self.slots is None else self.slots - len(self._running)
                    if position < free:
                        self._queue.remove(ticket)
                        self._running.add(ticket)
                        self._condition.notify_all()
                        return
                    ahead = len(self._running) + position
                if waiting is not None:
                    waiting(ahead)  # outside the lock: it may draw, or raise to give up
                with self._condition:
                    if self._queue.index(ticket) >= max(0, self._free_slots()):
                        self._condition.wait(self._poll_s)
        except BaseException:
            self._leave(ticket)
            raise

    def _free_slots(self) -> int:
        return len(self._queue) if self.slots is None else self.slots - len(self._running)

    def _requeue(self, ticket: _Ticket) -> bool:
        """Give up ``ticket``'s slot and queue it at the back, if anyone waits; whether it did."""
        with self._condition:
            if not self._queue or ticket not in self._running:
                return False
            self._running.discard(ticket)
            self._queue.append(ticket)
            self._condition.notify_all()
            return True

    def _leave_express(self, ticket: _Ticket) -> None:
        """Move ``ticket`` from the express lane to the back of the queue for a slot."""
        with self._condition:
            self._short.discard(ticket)
            self._queue.append(ticket)

    def _leave(self, ticket: _Ticket) -> None:
        with self._condition:
            self._short.discard(ticket)
            self._running.discard(ticket)
            if ticket in self._queue:
                self._queue.remove(ticket)
            self._condition.notify_all()
