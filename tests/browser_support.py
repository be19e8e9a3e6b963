"""Drive the real app in headless Chromium: start it as `make run` does, wait, measure.

Used by the browser tests and by bench/ui.py and bench/load.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Browser tests run where Debian's chromium is installed (make test installs it; playwright cannot download one here).
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="browser tests need Debian's chromium (make test installs it)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
BUSY = '[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stProgress"]'
SCREENSHOTS = ROOT / "tests" / "screenshots"
LOCAL_PREFIXES = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "ws://localhost", "data:", "blob:",
                  "about:")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_app(env: dict[str, str] | None = None, log_dir: Path | None = None,
                timeout_s: float = 120.0) -> Iterator[Server]:
    """Start the app with `make run` on a free port; stop it (and its children) afterwards."""
    port = free_port()
    environment = {**os.environ, **(env or {})}
    log_path = (log_dir or Path("/tmp")) / f"cbert-app-{port}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(["make", "-s", "run", f"PORT={port}"], cwd=ROOT, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited early:\n{log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise TimeoutError("the app did not start")
        yield Server(url=url, process=process, log_path=log_path)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


def wait_for_health(url: str, timeout_s: float = 120.0) -> None:
    """Return as soon as the server's health endpoint answers "ok"."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                if answer.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the server's health endpoint did not answer")


# Records every page name the sidebar navigation ever shows, on every change of the page: a listing that is on
# screen for a tenth of a second is caught, which polling from Python misses.
RECORD_NAVIGATION = """
window.navigationSeen = new Set();
new MutationObserver(() => {
  for (const link of document.querySelectorAll('[data-testid="stSidebarNav"] a')) {
    const lines = link.innerText.trim().split("\\n");
    if (lines[0]) window.navigationSeen.add(lines[lines.length - 1].trim());  // the icon's name comes first
  }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""
NOTE_BOX = '[data-testid="stSidebar"] textarea[aria-label="Clinical note"]'
MODEL_READY = '[data-testid="stSidebar"] :text("In force:")'


@dataclass(frozen=True, kw_only=True)
class ColdStart:
    """What a browser opened the moment a fresh server's health endpoint answered saw, and when."""

    navigation_seen: frozenset[str]  # every page name the sidebar navigation showed
    note_box_s: float | None  # seconds from health to the note box on screen
    model_ready_s: float | None  # seconds from health to the sidebar's "In force:" (the model loaded)


def watch_cold_start(chromium: object, server: Server, timeout_s: float = 180.0) -> ColdStart:
    """Open a tab on ``server`` the moment it is healthy and watch it until the model is loaded."""
    tab = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    tab.add_init_script(RECORD_NAVIGATION)
    wait_for_health(server.url)
    started = time.perf_counter()
    tab.goto(server.url, wait_until="commit")
    note_box_s = model_ready_s = None
    while time.perf_counter() - started < timeout_s and model_ready_s is None:
        if note_box_s is None and tab.locator(NOTE_BOX).count():
            note_box_s = time.perf_counter() - started
        if tab.locator(MODEL_READY).count():
            model_ready_s = time.perf_counter() - started
        time.sleep(0.05)
    seen = frozenset(tab.evaluate("[...window.navigationSeen]"))
    tab.context.close()
    return ColdStart(navigation_seen=seen, note_box_s=note_box_s, model_ready_s=model_ready_s)


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class Traffic:
    """What a page received and asked for, recorded from Playwright events."""

    websocket_bytes: int = 0
    http_bytes: int = 0
    outside_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.websocket_bytes = 0
        self.http_bytes = 0

    @property
    def total_bytes(self) -> int:
        return self.websocket_bytes + self.http_bytes


def watch(page: object) -> Traffic:
    """Record websocket frames, HTTP bodies, requests to other hosts and dialogs (alert())."""
    traffic = Traffic()

    def on_frame(payload: str | bytes) -> None:
        traffic.websocket_bytes += len(payload.encode() if isinstance(payload, str) else payload)

    def on_response(response: object) -> None:
        try:
            traffic.http_bytes += len(response.body())
        except Exception:  # noqa: BLE001 - bodies of redirects/aborted requests are unavailable
            pass

    def on_dialog(dialog: object) -> None:
        traffic.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("websocket", lambda socket_: socket_.on("framereceived", on_frame))
    page.on("response", on_response)
    page.on("request", lambda request: None if request.url.startswith(LOCAL_PREFIXES)
            else traffic.outside_requests.append(request.url))
    page.on("dialog", on_dialog)
    return traffic


def settle(page: object, timeout_s: float = 180.0, quiet_s: float = 1.5) -> float:
    """Wait until the app shows no running/spinner/progress state for ``quiet_s``.

    Returns the seconds until the calm began (the page was drawn), not counting the quiet wait.
    """
    started = time.perf_counter()
    page.wait_for_selector("h1", timeout=timeout_s * 1000)
    calm_since: float | None = None
    while time.perf_counter() - started < timeout_s:
        if page.locator(BUSY).count() > 0:
            calm_since = None
        elif calm_since is None:
            calm_since = time.perf_counter()
        elif time.perf_counter() - calm_since >= quiet_s:
            return calm_since - started
        time.sleep(0.05)
    raise TimeoutError("the app did not settle")


def wait_for_plots(page: object, count: int = 1, timeout_s: float = 60.0) -> None:
    """Wait until ``count`` plotly charts have drawn their SVG."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if page.locator(".js-plotly-plot .main-svg").count() >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} plotly charts drew")


def set_note(page: object, text: str) -> None:
    """Type a note into the sidebar text area and commit it (Ctrl+Enter), checking it took."""
    area = page.locator(NOTE_BOX)
    for _attempt in range(3):
        area.click()
        area.fill(text)
        area.press("Control+Enter")
        settle(page)
        if area.input_value() == text:
            return
    raise AssertionError("the note did not take in the text area")


def drawn_after(page: object, started: float, plots: int = 0, text: str | None = None,
                timeout_s: float = 120.0) -> float:
    """Seconds from ``started`` until the page is drawn: not busy, ``plots`` plotly charts drawn and
    ``text`` (if given) shown. Waits for the page to stay calm afterwards (not counted)."""
    while time.perf_counter() - started < timeout_s:
        ready = page.locator(BUSY).count() == 0
        if ready and plots:
            ready = page.locator(".js-plotly-plot .main-svg").count() >= plots
        if ready and text:
            ready = page.get_by_text(text).count() > 0
        if ready:
            elapsed = time.perf_counter() - started
            settle(page)
            return elapsed
        time.sleep(0.02)
    raise TimeoutError("the page did not draw")


def open_page(page: object, title: str, plots: int = 0) -> float:
    """Click a page in the sidebar navigation; return seconds from the click until it was drawn."""
    clicked = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
    return drawn_after(page, clicked, plots)


def picked(page: object, label: str) -> str:
    """The option shown by the select box (or the text of the multiselect input) labelled ``label``."""
    return page.get_by_role("combobox", name=label).first.input_value()


def listed(page: object, label: str, typed: str = "") -> list[str]:
    """The options the select box labelled ``label`` lists once ``typed`` is typed into it (long lists scroll
    virtually: only what the filter leaves is in the page)."""
    box = page.get_by_role("combobox", name=label).first
    options = page.locator('[role="option"]')
    for _attempt in range(3):
        box.click()  # opens the list (it may need another click while an expander is still opening)
        if typed:
            box.fill(typed)
        deadline = time.time() + 4
        while time.time() < deadline:
            # read in one go: a list that closes (a rerun redraws it) between finding and reading is empty, not
            # a 30 s wait on an option that is gone
            names = [(text or "").strip() for text in options.all_text_contents()]
            if names:
                return names
            time.sleep(0.2)
        page.keyboard.press("Escape")
    return []


def pick(page: object, label: str, option: str) -> None:
    """Choose ``option`` (its exact text) in the select box or multiselect labelled ``label``, then settle."""
    names = listed(page, label, option)
    if option not in names:
        page.keyboard.press("Escape")
        raise AssertionError(f"{option!r} is not among the options of {label!r}: {names[:10]}")
    page.locator('[role="option"]').nth(names.index(option)).click()
    page.keyboard.press("Escape")
    settle(page)


def screenshot(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ---------------------------------------------------------------- async versions for many sessions at once


class ScriptEnds:
    """When the server's "script finished" messages reached a tab, read off its websocket.

    Those messages are a few bytes long; only frames that short are parsed, so that the big ones (charts)
    cost the measuring process nothing.
    """

    SHORT_FRAME = 256

    def __init__(self, page: object) -> None:
        self.times: list[float] = []
        page.on("websocket", lambda socket_: socket_.on("framereceived", self._frame))

    def _frame(self, payload: bytes | str) -> None:
        if isinstance(payload, str) or len(payload) > self.SHORT_FRAME:
            return
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = ForwardMsg()
        try:
            message.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - not a message of ours to read
            return
        if message.WhichOneof("type") == "script_finished":
            self.times.append(time.perf_counter())

    def served_since(self, started: float) -> float | None:
        """Seconds from ``started`` to the last script end after it (None: none came)."""
        ends = [moment for moment in self.times if moment >= started]
        return ends[-1] - started if ends else None


async def asettle(page: object, timeout_s: float = 300.0, quiet_s: float = 1.5) -> None:
    """:func:`settle` for Playwright's async API."""
    import asyncio

    await page.wait_for_selector("h1", timeout=timeout_s * 1000)
    started = time.perf_counter()
    calm_since: float | None = None
    while time.perf_counter() - started < timeout_s:
        if await page.locator(BUSY).count() > 0:
            calm_since = None
        elif calm_since is None:
            calm_since = time.perf_counter()
        elif time.perf_counter() - calm_since >= quiet_s:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the app did not settle")


async def aset_note(page: object, text: str) -> None:
    """:func:`set_note` for Playwright's async API."""
    area = page.locator(NOTE_BOX)
    for _attempt in range(3):
        await area.click()
        await area.fill(text)
        await area.press("Control+Enter")
        await asettle(page)
        if await area.input_value() == text:
            return
    raise AssertionError("the note did not take in the text area")


async def aopen_page(page: object, title: str, script_ends: ScriptEnds | None = None) -> float:
    """:func:`open_page` for Playwright's async API: seconds from the click until drawn and calm.

    With ``script_ends`` (watching this tab), the page also has to have received the server's end of the
    page's script: the running indicator can be missing for a moment while a script still runs, so calm
    alone can come too early.
    """
    import asyncio

    clicked = time.perf_counter()
    await page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    await page.wait_for_selector(f"h1:has-text('{title}')", timeout=300_000)
    deadline = time.perf_counter() + 300.0
    while script_ends is not None and script_ends.served_since(clicked) is None:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the server never finished the script of {title}")
        await asyncio.sleep(0.05)
    await asettle(page, quiet_s=0.5)
    return time.perf_counter() - clicked - 0.5


def server_pids(port: int) -> list[str]:
    """The processes of the app's server listening on ``port``."""
    return subprocess.run(["pgrep", "-f", f"streamlit run app.py.*--server.port {port}"], capture_output=True,
                          text=True, check=False).stdout.split()


def process_alive(pid: int | str) -> bool:
    """Whether process ``pid`` runs (one that ended but was not waited for yet, a zombie, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(port: int) -> list[str]:
    """The model worker processes of the server listening on ``port``."""
    return [pid for server in server_pids(port)
            for pid in subprocess.run(["pgrep", "-P", server, "-f", "cbert_core.serving.model_worker"],
                                      capture_output=True, text=True, check=False).stdout.split()]


def cpu_seconds(pids: list[str]) -> float:
    """User plus system CPU time the processes ``pids`` have used so far, in seconds (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return total / ticks


def server_cpu_seconds(port: int) -> float:
    """CPU time used so far by the Streamlit server listening on ``port`` and its model worker processes."""
    return cpu_seconds(server_pids(port) + worker_pids(port))


def browser_pids() -> list[str]:
    """Every Chromium process on this machine (the load run's browser and its tabs)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as handle:
                    if handle.read().startswith("chrom"):
                        found.append(entry)
            except OSError:
                continue
    return found


def process_rss_bytes(port: int) -> int:
    """Resident memory of the Streamlit server listening on ``port`` and its model worker processes (Linux /proc)."""
    total = 0
    for pid in server_pids(port) + worker_pids(port):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total
