"""Fair turns seen from three browsers: while one session's head scan holds the only slot on the shared model, a
second session's short trace (one window) runs at once, beside it, and is never told to wait; a third session's
long note (several windows: long work) is told how many analyses are ahead of it once its first window is done,
and is drawn before the scan ends (it waits for one step of the scan at a time, not for the whole of it)."""

from __future__ import annotations

import time

import pytest

from browser_support import NOTE_BOX, needs_chromium, open_page, running_app, screenshot, set_note, settle
from notes import LONG_NOTE

pytestmark = needs_chromium
# Records every change of what the progress bars say, with the browser's clock (the same for every tab): a wait
# of a fraction of a second is caught, which polling from Python misses. "" when no bar is shown.
RECORD_PROGRESS = """
window.progressEvents = [];
let shownBefore = null;
new MutationObserver(() => {
  const shown = [...document.querySelectorAll('[data-testid="stProgress"]')]
    .map(bar => bar.innerText.trim()).filter(text => text).join(" | ");
  if (shown !== shownBefore) {
    shownBefore = shown;
    window.progressEvents.push([Date.now(), shown]);
  }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""
SHORT_NOTE = "Patient reports a dry cough for three days. Denies fever. Lungs clear."


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory):
    """The app with one slot on the shared model, so any two analyses take turns."""
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "", "CBERT_MODEL_SLOTS": "1"},
                     log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


def _tab(chromium, url: str):
    page = chromium.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    page.add_init_script(RECORD_PROGRESS)
    page.goto(url)
    settle(page)
    return page


def _scan_running(page) -> bool:
    return page.locator('[data-testid="stProgress"]').count() > 0


def _scan_step_shown(page) -> bool:
    return page.locator('[data-testid="stProgress"]', has_text="heads").count() > 0


def _waits(events: list) -> list[int]:
    return [index for index, (_at, shown) in enumerate(events)
            if "waiting for the shared model, 1 analysis ahead of yours" in shown]


def test_behind_a_head_scan_a_short_trace_runs_at_once_and_a_long_note_is_told_it_waits(chromium, app_server) -> None:
    long_tab, short_tab, second_long_tab = (_tab(chromium, app_server.url) for _ in range(3))
    set_note(long_tab, LONG_NOTE)
    # the other two notes are typed before the scan starts and sent once it runs (a note is traced when it is
    # sent): their traces then start well before the scan ends, however fast this machine scans
    second_note = LONG_NOTE + " Follow-up with repeat chest film in two weeks."
    typed = {tab: tab.locator(NOTE_BOX) for tab in (short_tab, second_long_tab)}
    typed[short_tab].fill(SHORT_NOTE)  # a note of one window: its trace is short work
    typed[second_long_tab].fill(second_note)  # 3 windows on the bundled model: long work, queues for the slot
    open_page(long_tab, "Attribution")
    long_tab.get_by_role("button", name="Scan every head", exact=True).click()
    deadline = time.perf_counter() + 120
    while not _scan_step_shown(long_tab):  # its first step: now it is long work and holds the only slot
        assert time.perf_counter() < deadline, "the head scan did not start"
        time.sleep(0.02)

    sent_at = long_tab.evaluate("Date.now()")
    for tab in (short_tab, second_long_tab):
        typed[tab].press("Control+Enter")
    settle(short_tab)
    short_drawn_at = short_tab.evaluate("Date.now()")  # its note traced and drawn (a bound: the page was calm)
    open_page(short_tab, "Tokenization")
    screenshot(short_tab, "queue_short_page_drawn")
    assert short_tab.get_by_text("cough").count() > 0  # the short session's own note, tokenized
    settle(second_long_tab, timeout_s=600)
    open_page(second_long_tab, "Tokenization")
    screenshot(second_long_tab, "queue_long_note_drawn")
    assert second_long_tab.get_by_text("film").count() > 0  # its own note, tokenized
    settle(long_tab, timeout_s=600)  # the scan still finishes

    scan_events = [(at, shown) for at, shown in long_tab.evaluate("window.progressEvents") if at >= sent_at]
    scan_steps_after = lambda moment: [shown for at, shown in scan_events if at > moment and shown]  # noqa: E731
    short_events = [(at, shown) for at, shown in short_tab.evaluate("window.progressEvents") if at >= sent_at]
    assert not _waits(short_events), short_events  # short work never queued
    assert scan_steps_after(short_drawn_at), (short_drawn_at, scan_events)  # drawn while the scan still ran

    second_events = [(at, shown) for at, shown in second_long_tab.evaluate("window.progressEvents")
                     if at >= sent_at]
    waited = _waits(second_events)
    assert waited, (second_events, scan_events)
    # the moment its bar stopped saying it waits: its trace had the model again
    turn_at = next(at for at, shown in second_events[waited[0]:] if "ahead of yours" not in shown)
    # the scan reported further steps after that: the long note waited for a step, not the whole scan
    assert scan_steps_after(turn_at), (turn_at, scan_events)
    assert not _scan_running(long_tab)
    assert long_tab.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count() == 0
    screenshot(long_tab, "queue_long_scan_done")
    assert "Traceback" not in app_server.log()
