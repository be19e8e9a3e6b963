"""A 700-word discharge summary explained over every window and read by section, in headless Chromium."""

from __future__ import annotations

from browser_support import needs_chromium, open_page, pick, screenshot, set_note, settle, wait_for_plots
from notes import LONG_NOTE

pytestmark = needs_chromium
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def test_a_long_note_explained_by_section(tab) -> None:
    set_note(tab, LONG_NOTE)
    open_page(tab, "Attribution")
    assert tab.get_by_text("The whole note (every window)", exact=True).count() == 1
    tab.get_by_text("Methods and settings").click()
    pick(tab, "Score by", "sections")
    for method in ("Saliency (gradient norm)", "Gradient × Input"):
        tab.get_by_role("button", name=f"Remove {method}", exact=True).click()
        settle(tab)
    # the grouping changed the method's heading, not the choice of methods
    assert tab.get_by_role("button", name="Remove Leave one out (occlusion)", exact=True).count() == 1
    steps = tab.get_by_label("Integrated Gradients steps")
    steps.fill("10")
    steps.press("Enter")
    settle(tab)
    tab.get_by_role("button", name="Explain", exact=True).click()
    settle(tab, timeout_s=900)
    tab.get_by_role("heading", name="Leave one section out").wait_for(timeout=900_000)
    assert tab.locator(ERRORS).count() == 0
    assert tab.get_by_text("The whole note: all 3 windows").count() == 1
    assert tab.get_by_text("Convergence delta over the 3 windows").count() == 1
    wait_for_plots(tab, 2)  # the section bar and the agreement heatmap
    assert tab.locator('[data-testid="stHtml"] span[style*="rgba"]').count() >= 6  # sections shaded
    assert tab.get_by_text("holds up").count() >= 1
    screenshot(tab, "attribution_whole_note_sections")
    tab.get_by_role("heading", name="Integrated Gradients").scroll_into_view_if_needed()
    screenshot(tab, "attribution_whole_note_sections_text")  # the note shaded by section, completeness
    tab.get_by_role("heading", name="Which explanation to trust here").scroll_into_view_if_needed()
    screenshot(tab, "attribution_whole_note_trust")  # faithfulness, the verdict and the agreement heatmap
