"""What a user does on the Attribution and Inside pages, with short notes and a 700-word discharge summary.

Each test follows the user's steps in headless Chromium against the app started as `make run`
starts it (offline, bundled model): choices made in the page survive reruns and page
switches, a click in the head scan keeps what was computed, and a note longer than the
model's 512 positions can be walked through and explained part by part.
"""

from __future__ import annotations

import pytest

from browser_support import (
    listed,
    needs_chromium,
    open_page,
    pick,
    picked,
    screenshot,
    set_note,
    settle,
    wait_for_plots,
)
from notes import LONG_NOTE

pytestmark = needs_chromium
SHORT_NOTE = "The patient denies shortness of breath and chest pain. No fever."
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def click(tab, label: str) -> None:
    tab.get_by_role("button", name=label, exact=True).click()
    settle(tab, timeout_s=600)


def explain(tab) -> None:
    """Click Explain when the page asks for it (a result computed earlier in the server is shown at once)."""
    button = tab.get_by_role("button", name="Explain", exact=True)
    heading = tab.get_by_role("heading", name="Integrated Gradients")
    button.or_(heading).first.wait_for(timeout=600_000)  # the page may still be drawing its settings
    if button.count():
        click(tab, "Explain")
    heading.wait_for(timeout=600_000)


def knock_out(tab, head: str) -> None:
    expander = tab.get_by_text("Head knockout: compare with some heads switched off")
    if not tab.get_by_role("combobox", name="Heads").is_visible():
        expander.click()
    pick(tab, "Heads", head)


def test_the_word_to_replace_survives_a_knockout_explain_and_a_page_switch(tab) -> None:
    set_note(tab, SHORT_NOTE)
    open_page(tab, "Attribution")
    explain(tab)
    assert picked(tab, "Word to replace") == "denies (word 3)"
    knock_out(tab, "L1 H1")
    # The explanation the user asked for is recomputed for the knocked-out model without a new click.
    assert tab.get_by_role("button", name="Explain", exact=True).count() == 0
    assert tab.get_by_text("heads knocked out").count() >= 1
    assert picked(tab, "Word to replace") == "denies (word 3)"
    click(tab, "Compare")
    tab.get_by_text("Edit: denies → reports (word 3).").wait_for(timeout=600_000)  # after any quiet moment
    assert tab.get_by_text("Edit: denies → reports (word 3).").count() == 1

    pick(tab, "Word to replace", "shortness (word 4)")
    open_page(tab, "Note")
    open_page(tab, "Attribution")
    assert picked(tab, "Word to replace") == "shortness (word 4)"
    screenshot(tab, "attribution_counterfactual_kept")


def test_a_click_in_the_head_scan_keeps_the_page_and_shows_the_knockout(tab) -> None:
    set_note(tab, SHORT_NOTE)
    open_page(tab, "Attribution")
    explain(tab)
    click(tab, "Scan every head")
    wait_for_plots(tab, 1)
    scan = tab.locator('[data-testid="stPlotlyChart"]').last
    scan.locator(".scatterlayer .trace").first.locator(".points path").nth(14).click(force=True)  # L2 H3
    settle(tab, timeout_s=600)
    # the explanations are recomputed for the knocked-out model: wait for that run's end, not a quiet moment in it
    tab.get_by_text("Knocked out in the explanations above: L2 H3").wait_for(timeout=600_000)
    settle(tab, timeout_s=600)
    for method in ("Integrated Gradients", "Gradient × Input", "Saliency (gradient norm)", "Leave one word out"):
        assert tab.get_by_role("heading", name=method).count() == 1
    assert tab.get_by_text("Knocked out in the explanations above: L2 H3").count() == 1
    assert tab.get_by_text("heads knocked out").count() >= 4  # every method beside the intact model
    assert tab.locator(".scatterlayer .trace").count() >= 2  # the scan is still drawn, with the crossed head
    assert tab.get_by_role("combobox", name="Word to replace").count() == 1
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "attribution_scan_click")


def test_a_700_word_note_can_be_walked_through_and_explained_part_by_part(tab) -> None:
    set_note(tab, LONG_NOTE)
    open_page(tab, "Inside the model")
    assert tab.locator(ERRORS).count() == 0
    assert picked(tab, "Part of the note").startswith("Window ")
    assert tab.get_by_text("The note is read in 3 overlapping windows").count() == 1
    wait_for_plots(tab, 4)
    screenshot(tab, "long_note_inside_window")

    names = listed(tab, "Part of the note", "window 2")
    tab.keyboard.press("Escape")
    section = next(name for name in names if name.startswith("Section "))
    pick(tab, "Part of the note", section)
    assert tab.locator(ERRORS).count() == 0
    assert tab.get_by_text("the section chosen above").count() == 1
    wait_for_plots(tab, 4)
    screenshot(tab, "long_note_inside_section")

    open_page(tab, "Attribution")
    tab.get_by_text("One part of the note", exact=True).click()  # not the whole note: part by part
    settle(tab)
    assert picked(tab, "Part of the note to explain").startswith(("Window ", "Section ", "Sentence "))
    tab.get_by_text("Methods and settings").click()
    for method in ("Integrated Gradients", "Saliency (gradient norm)", "Leave one out (occlusion)"):
        tab.get_by_role("button", name=f"Remove {method}", exact=True).click()
        settle(tab)
    assert picked(tab, "Part of the note to explain")  # the choice of part survives the reruns
    explain_button = tab.get_by_role("button", name="Explain", exact=True)
    if explain_button.count():
        explain_button.click()
        settle(tab, timeout_s=600)
    tab.get_by_role("heading", name="Gradient × Input").wait_for(timeout=600_000)
    assert tab.locator('[data-testid="stHtml"] span[style*="rgba"]').count() > 50
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "long_note_attribution")


@pytest.mark.parametrize("title", ["Note", "Tokenization", "Attention", "Embeddings", "Predictions", "Corpus",
                                   "Compare", "Fine-tune"])
def test_a_700_word_note_on_every_page(tab, title: str) -> None:
    set_note(tab, LONG_NOTE)
    open_page(tab, title)
    assert tab.locator(ERRORS).count() == 0
    if title == "Attention":
        wait_for_plots(tab, 2)
        ticks = tab.locator('[data-testid="stPlotlyChart"]').nth(1).locator(".xtick text").all_text_contents()
        assert len(ticks) >= 10  # a long window's heatmap keeps readable labels
    screenshot(tab, f"long_note_{title.lower().replace(' ', '_')}")


def use_model(tab, folder: str) -> None:
    """Choose a local model folder in the sidebar, as a user does."""
    pick(tab, "Model", "Other hub id or local folder...")
    field = tab.locator('[data-testid="stSidebar"] input[aria-label="Hub id or local folder"]')
    field.fill(folder)
    field.press("Enter")
    settle(tab, timeout_s=300)


def test_a_masked_language_model_through_predictions_attribution_and_compare(tab, tiny_dir) -> None:
    use_model(tab, str(tiny_dir))
    sidebar = tab.locator('[data-testid="stSidebar"]')
    assert sidebar.get_by_text("switch on Keep upper/lower case").count() == 1  # a cased vocabulary
    sidebar.get_by_test_id("stCheckbox").get_by_text("Keep upper/lower case").click()
    settle(tab)
    assert sidebar.get_by_text("Case is kept, as the model was pretrained").count() == 1
    set_note(tab, "Patient denies chest pain. No [MASK] on the chest x-ray. COPD exacerbation with cough.")

    open_page(tab, "Predictions")
    wait_for_plots(tab, 1)
    click(tab, "Compute the surprise map")
    assert tab.get_by_text("per piece (mean)").count() >= 1
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "masked_lm_predictions")

    open_page(tab, "Attribution")
    explain(tab)
    # The [MASK] being explained is outlined, off the colour scale of the gradient methods.
    assert tab.locator('[data-testid="stHtml"] span[style*="dashed"]').count() >= 3
    screenshot(tab, "masked_lm_attribution")

    open_page(tab, "Compare")
    wait_for_plots(tab, 3)
    assert tab.get_by_text("reference", exact=False).count() >= 1
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "compare_two_models")
