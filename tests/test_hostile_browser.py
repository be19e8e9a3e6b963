"""Hostile input through the real browser: huge pastes and uploads, wrong encodings; the app keeps serving."""

from __future__ import annotations

from pathlib import Path

from browser_support import needs_chromium, screenshot, set_note, settle

pytestmark = needs_chromium


def upload(page, path: Path) -> None:
    """Upload a file from disk (Chromium reads it itself: fast even at 50 MB)."""
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(path), timeout=180_000)
    settle(page)


def sidebar_errors(page) -> str:
    return " ".join(page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]').all_inner_texts())


def still_serving(page) -> None:
    set_note(page, "Patient denies chest pain. No fever.")
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert values[3] == "2"


def test_one_megabyte_paste_is_refused_with_the_limit(tab) -> None:
    note = "Patient denies chest pain. " * 40_000
    tab.locator('[data-testid="stSidebar"] textarea').evaluate(
        "(area, text) => { const set = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;"
        " set.call(area, text); area.dispatchEvent(new Event('input', {bubbles: true})); }", note)
    tab.locator('[data-testid="stSidebar"] textarea').press("Control+Enter")
    settle(tab)
    message = " ".join(tab.locator('[data-testid="stAlertContentError"]').all_inner_texts())
    assert "1,080,000 characters; the limit is 100,000" in message
    screenshot(tab, "hostile_1mb")
    still_serving(tab)


def test_fifty_megabyte_upload_is_refused(tab, tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"Patient denies chest pain. " * (50 * 2**20 // 27))
    upload(tab, huge)
    assert "a note can be at most 2 MB" in sidebar_errors(tab)
    still_serving(tab)


def test_non_utf8_upload_is_refused_and_a_good_one_loads(tab, tmp_path: Path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Café patient, naïve, 40° fever".encode("cp1252") + b"\xff\xfe\x81")
    upload(tab, latin)
    assert "not UTF-8 text" in sidebar_errors(tab)
    good = tmp_path / "note.txt"
    good.write_text("HISTORY: Patient reports cough. No fever.", encoding="utf-8")
    upload(tab, good)
    assert tab.locator('[data-testid="stSidebar"] textarea').input_value() == \
        "HISTORY: Patient reports cough. No fever."
    assert sidebar_errors(tab) == ""
