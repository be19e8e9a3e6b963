"""The first seconds after `make run` (a cold start): what a newcomer sees before the model is ready.

A fresh server, a browser opened the moment the server's health endpoint answers, the page polled
watched from its first paint: the sidebar never lists the pages/ folder's files (Streamlit's
listing of a legacy multipage app: "app", "attention", ...), and the note box is on screen before
the model has loaded (it is drawn before torch is imported). How long each step takes is measured
by bench/ui.py, not asserted here.
"""

from __future__ import annotations

import time
import urllib.request

from browser_support import browser, needs_chromium, running_app

pytestmark = needs_chromium
FOLDER_LISTING = {"app", "note", "inside", "tokenization", "attention", "embeddings", "predictions", "attribution",
                  "corpus", "compare", "finetune"}  # the pages/ files' own names
NOTE_BOX = '[data-testid="stSidebar"] textarea[aria-label="Clinical note"]'
MODEL_READY = '[data-testid="stSidebar"] :text("In force:")'
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


def wait_for_health(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                if answer.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the server's health endpoint did not answer")


def test_a_cold_start_never_shows_the_folder_listing_and_shows_the_note_box_before_the_model(tmp_path) -> None:
    with browser() as chromium, running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": ""},
                                            log_dir=tmp_path) as server:
        tab = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        tab.add_init_script(RECORD_NAVIGATION)
        wait_for_health(server.url)
        tab.goto(server.url, wait_until="commit")
        note_box_at = model_ready_at = None
        started = time.perf_counter()
        while time.perf_counter() - started < 180 and model_ready_at is None:
            if note_box_at is None and tab.locator(NOTE_BOX).count():
                note_box_at = time.perf_counter() - started
            if tab.locator(MODEL_READY).count():
                model_ready_at = time.perf_counter() - started
            time.sleep(0.05)
        assert model_ready_at is not None, "the model never loaded"
        navigation_seen = set(tab.evaluate("[...window.navigationSeen]"))
        assert not navigation_seen & FOLDER_LISTING, f"the folder listing was shown: {navigation_seen}"
        assert {"Note", "Attention", "Fine-tune"} <= navigation_seen
        assert note_box_at is not None and note_box_at < model_ready_at, (
            f"the note box came at {note_box_at} s, the model at {model_ready_at} s")
        assert "Traceback" not in server.log()
