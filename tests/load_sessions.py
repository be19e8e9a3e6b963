"""Many browser sessions on one server, each analysing its own note over and over.

Shared by tests/test_load.py (4 sessions, 1 minute) and bench/load.py (8 sessions, 5 minutes).
Every session checks, on every round, that the pages show its own note and no other session's.

A mixed load (``long_sessions`` > 0): the first sessions are long ones, which on every round ask the
Attribution page for its explanations and then scan every head; the others only open the short pages,
which trace. Times are kept per kind (:data:`SHORT`, :data:`EXPLAIN`, :data:`SCAN`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ScriptEnds,
    aopen_page,
    aset_note,
    asettle,
    browser_pids,
    cpu_seconds,
    process_rss_bytes,
    server_cpu_seconds,
)

PAGES = ("Tokenization", "Attention", "Embeddings", "Inside the model", "Note")
SHORT, EXPLAIN, SCAN = "short page", "Attribution explain", "head scan"  # kinds of timed work
LONG_WORK_TIMEOUT_S = 900.0
BUTTON_TIMEOUT_S = 120.0  # a missing button is a finding of the run (reported), not a reason to hang
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


def marker(session: int) -> str:
    """The word only ``session``'s notes hold: another session seeing it is cross-talk."""
    return f"Zx{WORDS[session % len(WORDS)]}{session}"


def session_note(session: int, round_: int) -> str:
    sentences = " ".join(f"Patient {marker(session)} denies chest pain number {i}." for i in range(3 + session))
    return f"HISTORY: {sentences} Round {round_}. COPD [MASK] exacerbation."


@dataclass
class LoadReport:
    sessions: int
    seconds: float
    page_times: list[float] = field(default_factory=list)  # every timed piece of work
    times: dict[str, list[float]] = field(default_factory=dict)  # the same, per kind
    rounds: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rss: list[tuple[str, int]] = field(default_factory=list)
    hooks_after: int | None = None
    server_status: str | None = None  # the sidebar's status line after the run
    dialogs: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0  # from the first session's start until the last one stopped
    by_page: dict[str, list[float]] = field(default_factory=dict)  # short pages' times per page title
    # short pages' times per page title until the server finished the page's script (the last "script
    # finished" message on the websocket), without the browser's drawing after it
    served_by_page: dict[str, list[float]] = field(default_factory=dict)
    # CPU time used from the start until the deadline, and that span's length: the server's and the
    # sessions' browser's (which stands for users' own machines but here shares the server's cores)
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_span_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)  # the run's start (perf_counter)
    # short pages' start times per page title (seconds since the run's start), in the order of by_page
    began_by_page: dict[str, list[float]] = field(default_factory=dict)
    # every piece of work's (start, end), seconds since the run's start: what else was in flight during a visit
    spans: list[tuple[float, float]] = field(default_factory=list)

    def record(self, kind: str, seconds: float, page: str | None = None, served_s: float | None = None) -> None:
        """One piece of work that took ``seconds`` and has just finished."""
        ended = time.perf_counter() - self.started
        self.spans.append((ended - seconds, ended))
        if page is not None:
            self.began_by_page.setdefault(page, []).append(ended - seconds)
        self.page_times.append(seconds)
        self.times.setdefault(kind, []).append(seconds)
        if page is not None:
            self.by_page.setdefault(page, []).append(seconds)
        if page is not None and served_s is not None:
            self.served_by_page.setdefault(page, []).append(served_s)

    def in_flight(self, began: float, seconds: float) -> float:
        """How many other pieces of work were in flight, on average, over the ``seconds`` from ``began``."""
        ended = began + seconds
        overlap = sum(max(0.0, min(ended, other_end) - max(began, other_start)) for other_start, other_end in self.spans)
        return max(0.0, overlap / seconds - 1.0) if seconds > 0 else 0.0  # less the piece itself

    @property
    def median_page_s(self) -> float:
        return statistics.median(self.page_times) if self.page_times else float("nan")

    @property
    def worst_page_s(self) -> float:
        return max(self.page_times) if self.page_times else float("nan")


def alternating_order(modes: Sequence[str], passes: int) -> list[str]:
    """The runs of ``passes`` passes over ``modes``, every other pass reversed (A B, B A, A B...).

    A machine's speed drifts over a bench's minutes (here by up to half within an hour). Run once each in a
    fixed order, the mode run last takes all of a steady drift; in this order, after every second pass each
    mode's runs sit at the same mean position, so a steady drift weighs on every mode alike.
    """
    return [mode for index in range(passes) for mode in (modes if index % 2 == 0 else list(reversed(modes)))]


def pooled_rate(reports: Iterable[LoadReport]) -> float:
    """Pieces of work finished per minute over ``reports`` together: all their work over all their time."""
    taken = list(reports)
    elapsed_s = sum(report.elapsed_s for report in taken)
    return sum(len(report.page_times) for report in taken) / elapsed_s * 60 if elapsed_s else float("nan")


async def _check_own(page: object, session: int, note: str, report: LoadReport, timeout_s: float = 60.0) -> None:
    """The Note page must come to show this session's note (its length and marker) and never another's."""
    own = marker(session)
    others = [marker(other) for other in range(report.sessions) if other != session]
    deadline = time.perf_counter() + timeout_s
    values: list[str] = []
    while time.perf_counter() < deadline:
        values = await page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        boxes = await page.locator('[data-testid="stHtml"]').all_inner_texts()
        shown = boxes[0] if boxes else ""
        leaked = [marker for marker in others if marker in shown]
        if leaked:
            report.problems.append(f"session {session}: sees another session's note ({leaked})")
            return
        if values and values[0].replace(",", "") == str(len(note)) and own in shown:
            return
        await asyncio.sleep(0.2)
    report.problems.append(f"session {session}: Characters shows {values[:1]}, expected {len(note)}")


async def _click_and_settle(page: object, label: str) -> float:
    """Seconds from clicking the button ``label`` until the page is drawn and calm (long work)."""
    button = page.get_by_role("button", name=label, exact=True).first
    await button.wait_for(timeout=BUTTON_TIMEOUT_S * 1000)  # drawn once the work above it is shown
    clicked = time.perf_counter()
    await button.click()
    await button.wait_for(state="detached", timeout=LONG_WORK_TIMEOUT_S * 1000)  # the click's rerun began
    await asettle(page, timeout_s=LONG_WORK_TIMEOUT_S, quiet_s=0.5)
    return time.perf_counter() - clicked - 0.5


async def _session(browser: object, url: str, session: int, deadline: float, report: LoadReport,
                   long: bool = False) -> None:
    context = await browser.new_context(viewport={"width": 1300, "height": 1000})
    page = await context.new_page()
    page.on("dialog", lambda dialog: report.dialogs.append(dialog.message))
    page.on("request", lambda request: None if request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1",
                                                                        "data:", "blob:", "about:"))
            else report.outside_requests.append(request.url))
    script_ends = ScriptEnds(page)
    rounds = 0
    try:
        await page.goto(url)
        await asettle(page)
        while time.perf_counter() < deadline:
            note = session_note(session, rounds)
            await aset_note(page, note)
            await _check_own(page, session, note, report)
            if long:
                await aopen_page(page, "Attribution")
                for label, kind in (("Explain", EXPLAIN), ("Scan every head", SCAN)):
                    report.record(kind, await _click_and_settle(page, label))
                await aopen_page(page, "Note")
            else:
                for title in PAGES:
                    clicked = time.perf_counter()
                    drawn_s = await aopen_page(page, title, script_ends)
                    report.record(SHORT, drawn_s, title, served_s=script_ends.served_since(clicked))
                    if time.perf_counter() >= deadline:
                        break
            if await page.locator("h1:has-text('Note')").count():
                await _check_own(page, session, note, report)
            rounds += 1
    except Exception as failure:  # noqa: BLE001 - every failure is a finding of the load run
        report.problems.append(f"session {session}: {type(failure).__name__}: {str(failure)[:200]}")
    finally:
        report.rounds.append(rounds)
        await context.close()


async def sample_server(report: LoadReport, port: int, started: float, deadline: float,
                        browsers: bool = False) -> None:
    """The server's memory every minute (once, half-way, for runs under two minutes), then the CPU time the
    server (and, with ``browsers``, every Chromium process) used from ``started`` until ``deadline``."""
    def cpu_now() -> dict[str, float]:
        now = {"server": server_cpu_seconds(port)}
        if browsers:
            now["browsers"] = cpu_seconds(browser_pids())
        return now

    cpu_start = cpu_now()
    seconds = deadline - started
    every = 60.0 if seconds >= 120 else seconds / 2
    while time.perf_counter() + every < deadline:
        await asyncio.sleep(every)
        report.rss.append((f"after {time.perf_counter() - started:.0f} s", process_rss_bytes(port)))
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    report.cpu_s = {name: value - cpu_start[name] for name, value in cpu_now().items()}
    report.cpu_span_s = time.perf_counter() - started


async def _server_status(browser: object, url: str) -> str | None:
    """Read the server status line (in the sidebar's Advanced section) from a fresh session."""
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(url)
        await asettle(page)
        await page.locator('[data-testid="stSidebar"] summary', has_text="Advanced").click()
        text = await page.locator('[data-testid="stSidebar"]').inner_text()
        for line in text.splitlines():
            if "hooks left on models" in line:
                return line
        return None
    finally:
        await context.close()


def _niced_chromium(folder: str, niceness: int) -> str:
    """A launcher that starts Chromium (and so every tab it forks) at ``niceness``."""
    path = os.path.join(folder, "chromium")
    with open(path, "w", encoding="ascii") as script:
        script.write(f'#!/bin/sh\nexec nice -n {int(niceness)} {CHROMIUM} "$@"\n')
    os.chmod(path, 0o755)
    return path


async def _run(url: str, port: int, sessions: int, seconds: float, long_sessions: int,
               browser_nice: int | None) -> LoadReport:
    from playwright.async_api import async_playwright

    report = LoadReport(sessions=sessions, seconds=seconds)
    report.rss.append(("start", process_rss_bytes(port)))
    async with async_playwright() as playwright:
        with tempfile.TemporaryDirectory() as folder:
            executable = CHROMIUM if browser_nice is None else _niced_chromium(folder, browser_nice)
            browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            started = report.started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(sample_server(report, port, started, deadline, browsers=True),
                                 *(_session(browser, url, index, deadline, report, long=index < long_sessions)
                                   for index in range(sessions)))
            report.elapsed_s = time.perf_counter() - started
            report.rss.append(("end", process_rss_bytes(port)))
            report.server_status = await _server_status(browser, url)
            if report.server_status is not None:
                report.hooks_after = int(report.server_status.split("·")[-1].split("hooks")[0].strip())
            await browser.close()
    return report


def run_load(url: str, port: int, sessions: int, seconds: float, long_sessions: int = 0,
             browser_nice: int | None = None) -> LoadReport:
    """``sessions`` browser sessions for ``seconds``; the first ``long_sessions`` of them run long work.

    ``browser_nice``: run the browser at this niceness, so that on a machine shared with the server the
    browsers (which stand for users' own machines) take the CPU the server leaves.
    """
    return asyncio.run(_run(url, port, sessions, seconds, long_sessions, browser_nice))
