"""The Evaluate page in a real browser, offline on the bundled model (zero-shot): the example set evaluated,
a click on a misclassified row opening Attribution on that note, the way back to the same row, and an
uploaded CSV evaluated. Screenshots go to tests/screenshots/evaluate_*.png."""

from __future__ import annotations

import time
from pathlib import Path

from browser_support import NOTE_BOX, needs_chromium, open_page, screenshot, settle
from cbert_core.evaluation.dataset import example_set

pytestmark = needs_chromium

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
ROW_HEIGHT = 35  # Streamlit's dataframe: header and rows are 35 px high


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def no_errors(page, where: str) -> None:
    shown = page.locator(ERRORS).all_inner_texts()
    assert not shown, f"{where}: {shown}"


def wait_for_text(page, text: str, timeout_s: float = 240.0, where: str = "") -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if text in main_text(page):
            settle(page)
            return
        time.sleep(0.2)
    if where:
        screenshot(page, f"evaluate_failed_{where}")
    raise TimeoutError(f"{text!r} never showed: {main_text(page)[:3000]}")


def evaluate(page) -> None:
    """Press Evaluate, wait for the views of the result, and show its metrics."""
    page.get_by_role("button", name="Evaluate", exact=True).click()
    wait_for_text(page, "Behaviour tests")
    show(page, "Metrics")
    assert "Macro-F1" in main_text(page)
    no_errors(page, "after Evaluate")


def show(page, view: str) -> None:
    page.locator('[data-testid="stRadio"]').get_by_text(view, exact=True).click()
    settle(page)


def click_row(page, row: int) -> None:
    """Select row ``row`` (0 first) of the first dataframe by its row-marker cell."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + ROW_HEIGHT * (row + 1) + ROW_HEIGHT / 2)


def test_evaluate_example_click_through_to_attribution_and_back_then_an_upload(tab, app_server,
                                                                             tmp_path: Path) -> None:
    open_page(tab, "Evaluate")
    no_errors(tab, "Evaluate opened")
    assert "353 labelled notes from example" in main_text(tab)
    evaluate(tab)
    text = main_text(tab)
    assert "Accuracy" in text and "Notes evaluated" in text and "353" in text
    screenshot(tab, "evaluate_1_example_metrics")

    show(tab, "Errors")
    assert "misclassified of 353 notes" in main_text(tab)
    click_row(tab, 0)
    tab.wait_for_selector("h1:has-text('Attribution')", timeout=120_000)
    settle(tab)
    no_errors(tab, "Attribution opened from an error")
    note = tab.locator(NOTE_BOX).input_value()
    assert note in example_set().texts  # the clicked row's note is the current note
    wait_for_text(tab, "Back to the Evaluate page", timeout_s=60, where="attribution")
    screenshot(tab, "evaluate_2_attribution_from_error")

    tab.get_by_text("Back to the Evaluate page").click()
    tab.wait_for_selector("h1:has-text('Evaluate')", timeout=120_000)
    wait_for_text(tab, "Opened last:")
    no_errors(tab, "back on Evaluate")
    assert "row 1 of" in main_text(tab)
    assert not tab.get_by_role("button", name="Evaluate", exact=True).count()  # not run again
    screenshot(tab, "evaluate_3_back_at_the_row")

    rows = ["sentence,assertion,site"] + \
        [f"Patient denies chest pain number {i}.,absent,clinic a" for i in range(8)] + \
        [f"Patient reports fever and cough number {i}.,present,clinic b" for i in range(8)]
    upload = tmp_path / "assertions.csv"
    upload.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tab.locator('[data-testid="stRadio"]').get_by_text("Upload CSV or JSONL").click()
    settle(tab)
    tab.locator('[data-testid="stMain"] input[type="file"]').set_input_files(str(upload))
    settle(tab)
    no_errors(tab, "after the upload")
    assert "16 labelled notes from assertions.csv" in main_text(tab)
    evaluate(tab)
    assert "Notes evaluated" in main_text(tab) and "16" in main_text(tab)
    screenshot(tab, "evaluate_4_uploaded_csv_metrics")
    show(tab, "Slices")
    no_errors(tab, "slices of the upload")
    assert "site" in main_text(tab)
    screenshot(tab, "evaluate_5_uploaded_csv_slices")
    log = app_server.log()
    assert "Traceback" not in log, log[-3000:]
