"""Many sessions on one server that speak Streamlit's websocket protocol instead of driving a browser.

The same mixed load as :mod:`load_sessions` (short sessions open the short pages, long ones ask the
Attribution page for its explanations and the head scan, every session with its own note), but each
session is a websocket client that sends what the browser sends (a rerun with the page and the widgets'
values, a button's trigger) and reads what the server sends back. Nothing is drawn, so the clients take
almost no CPU: on a machine whose cores the server shares with the load, this measures what the server
does (a piece of work is timed from the request until the server's "script finished" for it), where
eight real browsers take most of the cores themselves.

Every session checks, on every round, that the Note page sends its own note and no other session's.
"""

from __future__ import annotations

import asyncio
import time

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

from browser_support import process_rss_bytes
from load_sessions import EXPLAIN, PAGES, SCAN, SHORT, LoadReport, marker, sample_server, session_note

FINISHED = ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY
RUN_TIMEOUT_S = 900.0
NOTE_LABEL = "Clinical note"


class ProtocolSession:
    """One session over the server's websocket: remembers the pages and the widgets the server sent."""

    def __init__(self, socket: object) -> None:
        self.socket = socket
        self.pages: dict[str, str] = {}  # page title -> script hash
        self.widgets: dict[str, str] = {}  # label -> widget id, from the last run
        self.texts: list[str] = []  # every text the last run sent (markdown, HTML, metric values)
        self.page_hash = ""
        self.note = ""

    async def run(self, trigger: str | None = None) -> float:
        """Ask for a rerun of the current page (pressing the button ``trigger``); seconds until it finished."""
        message = BackMsg()
        rerun = message.rerun_script
        rerun.query_string = ""
        rerun.page_script_hash = self.page_hash
        note_id = self.widgets.get(NOTE_LABEL)
        if note_id is not None:
            rerun.widget_states.widgets.append(WidgetState(id=note_id, string_value=self.note))
        if trigger is not None:
            rerun.widget_states.widgets.append(WidgetState(id=self.widgets[trigger], trigger_value=True))
        started = time.perf_counter()
        await self.socket.send(message.SerializeToString())
        widgets: dict[str, str] = {}
        self.texts = []
        deadline = started + RUN_TIMEOUT_S
        while True:
            data = await asyncio.wait_for(self.socket.recv(), timeout=max(1.0, deadline - time.perf_counter()))
            forward = ForwardMsg()
            forward.ParseFromString(data)
            kind = forward.WhichOneof("type")
            if kind == "navigation":
                self.pages = {page.page_name: page.page_script_hash for page in forward.navigation.app_pages}
            elif kind == "new_session":
                self.page_hash = forward.new_session.page_script_hash or self.page_hash
            elif kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                self._read(forward.delta.new_element, widgets)
            elif kind == "script_finished" and forward.script_finished == FINISHED:
                self.widgets = widgets
                return time.perf_counter() - started
            elif kind == "script_finished":  # stopped for a rerun (st.rerun): the page is what the rerun sends
                widgets.clear()
                self.texts = []

    def _read(self, element: object, widgets: dict[str, str]) -> None:
        which = element.WhichOneof("type")
        if which in ("markdown", "html"):
            self.texts.append(getattr(element, which).body)
        elif which == "metric":
            self.texts.append(element.metric.body)
        elif which is not None:
            widget = getattr(element, which)
            if hasattr(widget, "id") and hasattr(widget, "label") and widget.id:
                widgets[widget.label] = widget.id

    async def open(self, title: str) -> float:
        self.page_hash = self.pages[title]
        return await self.run()

    async def set_note(self, note: str) -> float:
        self.note = note
        return await self.run()


def _check_own(session: ProtocolSession, index: int, report: LoadReport) -> None:
    """The Note page's run must have sent this session's note (its marker) and no other session's."""
    own = marker(index)
    others = [marker(other) for other in range(report.sessions) if other != index]
    sent = "\n".join(session.texts)
    leaked = [marker for marker in others if marker in sent]
    if leaked:
        report.problems.append(f"session {index}: sees another session's note ({leaked})")
    elif own not in sent or f"{len(session.note):,}" not in sent:
        report.problems.append(f"session {index}: the Note page did not show its own note")


async def _session(url: str, index: int, deadline: float, report: LoadReport, long: bool) -> None:
    rounds = 0
    try:
        async with websockets.connect(url, subprotocols=["streamlit"], max_size=None) as socket:
            session = ProtocolSession(socket)
            await session.run()  # the first run draws the Note page and sends the navigation
            while time.perf_counter() < deadline:
                await session.open("Note")
                await session.set_note(session_note(index, rounds))
                _check_own(session, index, report)
                if long:
                    await session.open("Attribution")
                    for label, kind in (("Explain", EXPLAIN), ("Scan every head", SCAN)):
                        if label not in session.widgets:
                            raise RuntimeError(f"no button {label!r} on the Attribution page")
                        report.record(kind, await session.run(trigger=label))
                    if "Scan every head" in session.widgets:  # drawn only while the scan's result is missing
                        report.problems.append(f"session {index}: the head scan did not run")
                else:
                    for title in PAGES:
                        report.record(SHORT, await session.open(title), title)
                        if time.perf_counter() >= deadline:
                            break
                rounds += 1
    except Exception as failure:  # noqa: BLE001 - every failure is a finding of the load run
        report.problems.append(f"session {index}: {type(failure).__name__}: {str(failure)[:200]}")
    finally:
        report.rounds.append(rounds)


async def _run(url: str, port: int, sessions: int, seconds: float, long_sessions: int) -> LoadReport:
    report = LoadReport(sessions=sessions, seconds=seconds)
    report.rss.append(("start", process_rss_bytes(port)))
    socket_url = url.replace("http://", "ws://", 1) + "/_stcore/stream"
    started = report.started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(sample_server(report, port, started, deadline),
                         *(_session(socket_url, index, deadline, report, long=index < long_sessions)
                           for index in range(sessions)))
    report.elapsed_s = time.perf_counter() - started
    report.rss.append(("end", process_rss_bytes(port)))
    return report


def run_protocol_load(url: str, port: int, sessions: int, seconds: float, long_sessions: int = 0) -> LoadReport:
    """``sessions`` websocket sessions for ``seconds``; the first ``long_sessions`` of them run long work."""
    return asyncio.run(_run(url, port, sessions, seconds, long_sessions))
