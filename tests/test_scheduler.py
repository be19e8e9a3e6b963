"""Fair turns on the shared model: order of arrival, the bound, pauses of long work, positions, withdrawal.

Every test drives threads step by step with events (no timing): a job only moves on when the test says so,
and the test waits for the scheduler's own state before it releases the next step.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cbert_core.serving.scheduler import Scheduler, default_slots

POLL_S = 0.005
TIMEOUT_S = 30.0


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded, never asserted on time) until ``condition()`` holds."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


class Job(threading.Thread):
    """Work of ``steps`` steps under one turn; each step waits for the test's go, then logs; pauses in between."""

    def __init__(self, scheduler: Scheduler, name: str, log: list[str], steps: int = 1,
                 waiting: Callable[[int], None] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.scheduler, self.log, self.steps, self.waiting = scheduler, log, steps, waiting
        self.go = [threading.Event() for _ in range(steps)]
        self.started_step = [threading.Event() for _ in range(steps)]
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with self.scheduler.turn(self.waiting) as turn:
                for step in range(self.steps):
                    self.started_step[step].set()
                    assert self.go[step].wait(TIMEOUT_S)
                    self.log.append(f"{self.name}{step + 1}")
                    if step + 1 < self.steps:
                        turn.pause()
        except BaseException as failure:  # noqa: BLE001 - the test looks at it
            self.failure = failure

    def finish(self) -> None:
        for event in self.go:
            event.set()
        self.join(TIMEOUT_S)


def queued(scheduler: Scheduler, count: int) -> Callable[[], bool]:
    return lambda: scheduler.state().waiting == count


def test_a_short_job_waits_only_for_the_step_already_running() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    log: list[str] = []
    long = Job(scheduler, "L", log, steps=3)
    long.start()
    assert long.started_step[0].wait(TIMEOUT_S)
    short = Job(scheduler, "S", log)
    short.go[0].set()
    short.start()
    until(queued(scheduler, 1), "the short job is queued")
    long.go[0].set()  # the long job ends its first step and pauses: the short job goes first
    short.join(TIMEOUT_S)
    long.finish()
    assert log == ["L1", "S1", "L2", "L3"]
    assert long.failure is None and short.failure is None


def test_first_come_first_served_across_sessions_and_long_work_still_finishes() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    log: list[str] = []
    first = Job(scheduler, "A", log, steps=2)
    first.start()
    assert first.started_step[0].wait(TIMEOUT_S)
    second = Job(scheduler, "B", log, steps=2)  # another long job, queued before the short one
    second.start()
    until(queued(scheduler, 1), "B is queued")
    short = Job(scheduler, "S", log)
    short.start()
    until(queued(scheduler, 2), "S is queued behind B")
    for job in (first, second, short):
        for event in job.go:
            event.set()
    for job in (first, second, short):
        job.join(TIMEOUT_S)
    # A pauses after its step: B (earlier) runs a step, pauses, S runs; A and B finish in their new order.
    assert log == ["A1", "B1", "S1", "A2", "B2"]


def test_the_bound_is_respected_and_reached() -> None:
    scheduler = Scheduler(2, poll_s=POLL_S)
    lock = threading.Lock()
    active = [0]
    most = [0]
    release = threading.Event()

    def work() -> None:
        with scheduler.turn():
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            release.wait(TIMEOUT_S)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=work, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    until(lambda: scheduler.state().running == 2 and scheduler.state().waiting == 4, "two run and four wait")
    assert most[0] == 2
    release.set()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert most[0] == 2
    assert scheduler.state().running == scheduler.state().waiting == 0


def test_bypassed_scheduler_lets_everyone_run_at_once() -> None:
    scheduler = Scheduler(None, poll_s=POLL_S)
    release = threading.Event()

    def work() -> None:
        with scheduler.turn() as turn:
            turn.pause()
            release.wait(TIMEOUT_S)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    until(lambda: scheduler.state().running == 5, "all five run")
    assert scheduler.state().waiting == 0
    release.set()
    for thread in threads:
        thread.join(TIMEOUT_S)


def test_each_waiter_is_told_how_many_analyses_are_ahead() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    log: list[str] = []
    seen: dict[str, int] = {}
    holder = Job(scheduler, "H", log)
    holder.start()
    assert holder.started_step[0].wait(TIMEOUT_S)
    waiters = []
    for index in range(3):
        name = f"W{index}"
        waiter = Job(scheduler, name, log, waiting=lambda ahead, name=name: seen.__setitem__(name, ahead))
        waiter.start()
        until(queued(scheduler, index + 1), f"{name} is queued")
        waiters.append(waiter)
    until(lambda: seen == {"W0": 1, "W1": 2, "W2": 3}, f"positions 1, 2, 3 are reported (seen {seen})")
    holder.finish()
    assert waiters[0].started_step[0].wait(TIMEOUT_S)
    until(lambda: seen["W1"] == 1 and seen["W2"] == 2, "the queue moves up")
    for waiter in waiters:
        waiter.finish()
    assert log == ["H1", "W01", "W11", "W21"]


def test_a_waiter_that_goes_away_frees_its_turn() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    log: list[str] = []
    gone = threading.Event()

    class Disconnected(Exception):
        pass

    def leaving(_ahead: int) -> None:
        if gone.is_set():
            raise Disconnected  # what the app's callback raises when the browser session has gone

    holder = Job(scheduler, "H", log)
    holder.start()
    assert holder.started_step[0].wait(TIMEOUT_S)
    leaver = Job(scheduler, "X", log, waiting=leaving)
    leaver.go[0].set()
    leaver.start()
    until(queued(scheduler, 1), "X is queued")
    later = Job(scheduler, "C", log)
    later.go[0].set()
    later.start()
    until(queued(scheduler, 2), "C is queued behind X")
    gone.set()
    leaver.join(TIMEOUT_S)
    assert isinstance(leaver.failure, Disconnected)
    assert scheduler.state().waiting == 1  # only C is left in the queue
    holder.finish()
    later.join(TIMEOUT_S)
    assert log == ["H1", "C1"]  # X never ran; C did not wait for it
    assert scheduler.state().running == scheduler.state().waiting == 0


def test_a_job_cancelled_while_paused_gives_its_place_up() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    log: list[str] = []
    cancel = threading.Event()

    def maybe_cancel(_ahead: int) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt

    long = Job(scheduler, "L", log, steps=2, waiting=maybe_cancel)
    long.start()
    assert long.started_step[0].wait(TIMEOUT_S)
    short = Job(scheduler, "S", log)
    short.start()
    until(queued(scheduler, 1), "S is queued")
    long.go[0].set()  # L pauses for S and waits behind it
    until(lambda: short.started_step[0].is_set(), "S runs")
    cancel.set()
    long.join(TIMEOUT_S)
    assert isinstance(long.failure, KeyboardInterrupt)
    short.finish()
    assert log == ["L1", "S1"]
    assert scheduler.state().running == scheduler.state().waiting == 0


def test_a_nested_turn_in_the_same_thread_reuses_the_one_held() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S)
    with scheduler.turn() as outer, scheduler.turn() as inner:
        assert inner is outer
        assert scheduler.state().running == 1
    assert scheduler.state().running == 0


def test_express_short_work_runs_at_once_and_long_work_queues_at_its_first_step() -> None:
    scheduler = Scheduler(1, poll_s=POLL_S, express=True)
    log: list[str] = []
    seen: list[int] = []
    long = Job(scheduler, "L", log, steps=3)
    long.go[0].set()
    long.start()
    assert long.started_step[1].wait(TIMEOUT_S)  # after its first step L holds the one slot
    short = Job(scheduler, "S", log)
    short.go[0].set()
    short.start()
    short.join(TIMEOUT_S)  # ran beside L without waiting for the slot
    assert log == ["L1", "S1"] and scheduler.state().waiting == 0
    other = Job(scheduler, "M", log, steps=2, waiting=seen.append)
    other.go[0].set()
    other.start()
    until(queued(scheduler, 1), "M queues for the slot at its first step")
    until(lambda: seen and seen[-1] == 1, "M is told that one analysis is ahead")
    assert not other.started_step[1].is_set()
    long.go[1].set()  # L pauses after its second step: M waits, so M goes first
    other.go[1].set()
    other.join(TIMEOUT_S)
    long.finish()
    assert log == ["L1", "S1", "M1", "L2", "M2", "L3"]
    assert all(job.failure is None for job in (long, short, other))
    assert scheduler.state().running == scheduler.state().waiting == 0


def test_express_bound_holds_for_long_work() -> None:
    scheduler = Scheduler(2, poll_s=POLL_S, express=True)
    log: list[str] = []
    jobs = [Job(scheduler, f"J{index}", log, steps=2) for index in range(5)]
    for job in jobs:
        job.go[0].set()
        job.start()
    until(lambda: scheduler.state().running == 2 and scheduler.state().waiting == 3,
          "every job took its first step at once; two hold the slots, three wait")
    assert sum(job.started_step[1].is_set() for job in jobs) == 2
    for job in jobs:
        job.finish()
    assert sorted(log) == sorted(f"J{index}{step}" for index in range(5) for step in (1, 2))
    assert scheduler.state().running == scheduler.state().waiting == 0


def test_slots_and_bounds() -> None:
    assert default_slots() >= 1
    with pytest.raises(ValueError):
        Scheduler(0)


# ---------------------------------------------------------------- the app's side (ui.caches)

@pytest.fixture()
def one_slot(monkeypatch: pytest.MonkeyPatch):
    from ui import caches

    monkeypatch.setenv(caches.SLOTS_SETTING, "1")
    caches.scheduler.clear()
    yield caches
    caches.scheduler.clear()


@contextlib.contextmanager
def another_session_working(caches) -> Iterator[threading.Event]:
    """Another session holds a turn (the only one, with ``one_slot``) until the yielded event is set."""
    release = threading.Event()
    holding = threading.Event()

    def other_session() -> None:
        with caches.scheduler().turn() as turn:
            turn.pause()  # long work: after its first step it holds a slot
            holding.set()
            release.wait(TIMEOUT_S)

    threading.Thread(target=other_session, daemon=True).start()
    assert holding.wait(TIMEOUT_S)
    try:
        yield release
    finally:
        release.set()


def test_the_page_is_told_how_many_analyses_are_ahead_of_its_own(one_slot) -> None:
    caches = one_slot
    shown: list[str] = []
    ran = threading.Event()

    def this_session() -> None:
        with caches.model_turn(lambda _fraction, message: shown.append(message)) as (_turn, step):
            step(0.5, "Window 1 of 2")
            ran.set()

    with another_session_working(caches) as release:
        waiter = threading.Thread(target=this_session, daemon=True)
        waiter.start()
        until(lambda: caches.waiting_text(1) in shown, f"the bar says one analysis is ahead (shown {shown[-1:]})")
        assert not ran.is_set()
        assert shown[-1] == "waiting for the shared model, 1 analysis ahead of yours"
        release.set()
        waiter.join(TIMEOUT_S)
    assert ran.is_set() and shown[-1] == "Window 1 of 2"
    assert caches.waiting_text(3) == "waiting for the shared model, 3 analyses ahead of yours"


def test_computed_analyses_run_in_a_turn_and_the_switch_bypasses_it(one_slot, monkeypatch, bundled) -> None:
    caches = one_slot
    seen: list[tuple[int | None, int]] = []

    def analysis(loaded, value: int) -> int:
        state = caches.scheduler().state()
        seen.append((state.slots, state.running))
        return value * 2

    assert caches.computed(analysis, bundled, 21, label="Counting", progress=False) == 42
    assert seen == [(1, 1)]  # it held the one turn while it ran
    assert caches.scheduler().state().running == 0
    monkeypatch.setenv(caches.SCHEDULER_SWITCH, "off")
    caches.scheduler.clear()
    assert caches.computed(analysis, bundled, 22, label="Counting", progress=False) == 44
    assert seen[-1] == (None, 1)  # bypassed: no bound (every session runs at once), still counted


def test_an_analysis_that_runs_no_model_never_queues_behind_model_work(one_slot, bundled) -> None:
    caches = one_slot
    running: dict[str, int] = {}

    def total(values: tuple[int, ...]) -> int:
        running["total"] = caches.scheduler().state().running
        return sum(values)

    def add_one(value: int, loaded_b: object) -> int:
        running["add_one"] = caches.scheduler().state().running
        return value + 1

    with another_session_working(caches):
        # reads earlier results only (a trace's statistics, a projection): no turn on the model at all
        assert caches.computed(total, (1, 2, 3), label="Summing", progress=False) == 6
        # with the model among its inputs (or keyword arguments) it runs in a turn: short work, at once
        assert caches.computed(add_one, 41, loaded_b=bundled, label="Adding", progress=False) == 42
        assert caches.scheduler().state().waiting == 0
    assert running == {"total": 1, "add_one": 2}  # the other session's, then that and its own


def test_long_work_waits_for_the_slot_at_its_first_step_and_short_work_never_waits(one_slot, bundled) -> None:
    caches = one_slot
    steps_done = threading.Event()

    def quick(loaded: object) -> str:
        return "drawn"

    def stepped(loaded: object, progress) -> str:
        progress(0.5, "Step 1 of 2")
        progress(1.0, "Step 2 of 2")
        steps_done.set()
        return "done"

    def long_session() -> None:
        caches.computed(stepped, bundled, label="Stepping", progress=True)

    with another_session_working(caches):
        assert caches.computed(quick, bundled, label="Drawing", progress=False) == "drawn"  # did not wait
        threading.Thread(target=long_session, daemon=True).start()
        until(lambda: caches.scheduler().state().waiting == 1, "the stepped analysis queues at its first step")
        assert not steps_done.is_set()
    until(steps_done.is_set, "the stepped analysis finished once the slot was free")
