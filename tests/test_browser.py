"""The real app in headless Chromium: every page draws, offline, and hostile text stays text.

The app is started the way `make run` starts it, on a free port, offline
(HF_HUB_OFFLINE=1, so it runs on the bundled model). Screenshots of every page
go to tests/screenshots/ (ignored by git).
"""

from __future__ import annotations

import time

from browser_support import (
    needs_chromium,
    open_page,
    screenshot,
    set_note,
    settle,
    wait_for_plots,
)
from notes import CLINICAL_NOTE

pytestmark = needs_chromium
HOSTILE_NOTE = ("Pt denies <script>alert(1)</script> chest pain. <img src=x onerror=alert(2)> No fever. "
                "</script> COPD [MASK] exacerbation.")
PAGES = ["Note", "Inside the model", "Tokenization", "Attention", "Embeddings"]


def grid_rows(tab) -> int:
    """Rows of the first Streamlit dataframe (glide grid reports them as aria-rowcount)."""
    grid = tab.locator('[data-testid="stDataFrame"] [role="grid"]').first
    return int(grid.get_attribute("aria-rowcount")) - 1  # minus the header row


def test_every_page_draws_its_content_offline(tab_and_traffic) -> None:
    tab, traffic = tab_and_traffic
    set_note(tab, CLINICAL_NOTE)
    assert "Word pieces" in tab.locator('[data-testid="stMetric"]').all_inner_texts()[1]
    screenshot(tab, "note")
    assert tab.locator("text=HISTORY OF PRESENT ILLNESS:").count() >= 1

    open_page(tab, "Tokenization")
    words = int(tab.locator('[data-testid="stMetric"]').nth(0).locator('[data-testid="stMetricValue"]')
                .inner_text().replace(",", ""))
    assert grid_rows(tab) == words
    screenshot(tab, "tokenization")

    open_page(tab, "Attention")
    wait_for_plots(tab, 2)
    screenshot(tab, "attention")
    tab.locator('[data-testid="stSelectbox"]', has_text="View").first.click()
    tab.get_by_role("option", name="bertviz head view").click()
    settle(tab)
    frame = tab.frame_locator("iframe").first
    frame.locator("svg").first.wait_for(timeout=30_000)
    time.sleep(1.0)
    # bertviz draws one line per (head, query, key) with visible weight, and the tokens as text.
    assert frame.locator("line, path").count() > 50
    assert frame.locator("text").count() > 10
    screenshot(tab, "attention_bertviz_head")

    open_page(tab, "Embeddings")
    wait_for_plots(tab, 3)
    screenshot(tab, "embeddings")

    open_page(tab, "Inside the model")
    wait_for_plots(tab, 5)
    screenshot(tab, "inside")

    assert traffic.outside_requests == []
    assert traffic.dialogs == []


def test_hostile_note_shows_as_text_everywhere(tab_and_traffic) -> None:
    tab, traffic = tab_and_traffic
    set_note(tab, HOSTILE_NOTE)
    note_text = tab.locator('[data-testid="stHtml"]').first.inner_text()
    assert "<script>alert(1)</script>" in note_text and "<img src=x onerror=alert(2)>" in note_text
    assert tab.locator('[data-testid="stMain"] img[src="x"]').count() == 0
    screenshot(tab, "hostile_note")

    open_page(tab, "Tokenization")
    boxed = tab.locator('[data-testid="stHtml"]').first.inner_text()
    assert "<img src=x onerror=alert(2)>" in boxed

    open_page(tab, "Attention")
    wait_for_plots(tab, 2)
    labels = " ".join(tab.locator(".js-plotly-plot text").all_text_contents())
    assert "<" in labels  # tick labels show the characters
    assert tab.locator(".js-plotly-plot img").count() == 0
    tab.locator('[data-testid="stSelectbox"]', has_text="View").first.click()
    tab.get_by_role("option", name="bertviz head view").click()
    settle(tab)
    frame = tab.frame_locator("iframe").first
    frame.locator("svg").first.wait_for(timeout=30_000)
    time.sleep(1.0)
    tokens = frame.locator("text").all_text_contents()
    assert "<" in tokens and "script" in tokens
    assert frame.locator("img").count() == 0
    screenshot(tab, "hostile_bertviz")

    for title in ("Embeddings", "Inside the model"):
        open_page(tab, title)
    time.sleep(1.0)
    assert traffic.dialogs == [], f"a script ran: {traffic.dialogs}"
    assert traffic.outside_requests == []


def test_note_and_choices_persist_across_pages(tab_and_traffic) -> None:
    tab, _traffic = tab_and_traffic
    set_note(tab, "Patient denies chest pain. No fever.")
    open_page(tab, "Attention")
    layer = tab.locator('[data-testid="stMain"] input[aria-label="Layer"]')
    layer.fill("3")
    layer.press("Enter")
    settle(tab)
    open_page(tab, "Note")
    assert tab.locator('[data-testid="stSidebar"] textarea').input_value() == "Patient denies chest pain. No fever."
    values = tab.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert values[3] == "2"  # sentences of the new note
    open_page(tab, "Attention")
    assert tab.locator('[data-testid="stMain"] input[aria-label="Layer"]').input_value() == "3"


def test_a_token_choice_belongs_to_its_note(tab_and_traffic) -> None:
    """The word-piece picker shows each new note's [MASK] (its default), not the last note's choice."""
    tab, _traffic = tab_and_traffic
    notes = ["Patient denies chest pain. COPD [MASK] exacerbation.",
             "Pneumonia ruled out on the chest x-ray. Patient afebrile, [MASK] stable."]
    picker = tab.locator('[data-testid="stMain"] input[aria-label="Word piece to follow"]')
    set_note(tab, notes[0])
    open_page(tab, "Inside the model")
    first = picker.input_value()
    assert first.endswith(" [MASK]")
    picker.click()
    tab.get_by_role("option", name="1 patient", exact=True).click()
    settle(tab)
    assert picker.input_value() == "1 patient"
    assert tab.get_by_text("Query 1 patient:").count() == 1  # the figure follows the picker
    set_note(tab, notes[1])
    open_page(tab, "Inside the model")
    second = picker.input_value()
    assert second.endswith(" [MASK]") and second != first
    assert tab.get_by_text(f"Query {second}:").count() == 1


def click(tab, label: str) -> None:
    tab.get_by_role("button", name=label, exact=True).click()
    settle(tab, timeout_s=600)


def test_model_pages_draw_in_the_browser(tab_and_traffic) -> None:
    tab, traffic = tab_and_traffic
    set_note(tab, "Patient denies chest pain. No evidence of pneumonia on the chest x-ray.")
    open_page(tab, "Predictions")
    wait_for_plots(tab, 1)
    assert tab.get_by_text("embedding similarity").count() >= 1
    screenshot(tab, "predictions")

    open_page(tab, "Attribution")
    click(tab, "Explain")
    tab.get_by_role("heading", name="Integrated Gradients").wait_for(timeout=600_000)  # not a quiet moment before
    settle(tab, timeout_s=600)
    tinted = tab.locator('[data-testid="stHtml"] span[style*="rgba"]')
    assert tinted.count() > 5  # words tinted by their attribution scores
    assert tab.get_by_text("Convergence delta").count() == 1
    click(tab, "Scan every head")
    wait_for_plots(tab, 1)
    screenshot(tab, "attribution")

    open_page(tab, "Corpus")
    click(tab, "Embed the collection")
    wait_for_plots(tab, 1)
    click(tab, "Build the search index")
    assert grid_rows(tab) == 10
    screenshot(tab, "corpus")

    open_page(tab, "Fine-tune")
    click(tab, "Train")
    wait_for_plots(tab, 2)
    assert tab.get_by_text("Validation accuracy").count() == 1
    screenshot(tab, "finetune")

    open_page(tab, "Compare")
    assert tab.get_by_text("Name a second model").count() == 1
    screenshot(tab, "compare")
    assert traffic.outside_requests == [] and traffic.dialogs == []
