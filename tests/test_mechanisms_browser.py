"""The Mechanisms page in headless Chromium: patch a minimal pair, click a head to open it on Attention and a
layer to open it on "Inside the model", knock out the heads that carry the difference."""

from __future__ import annotations

from browser_support import NOTE_BOX, needs_chromium, open_page, screenshot, set_note, settle, wait_for_plots

pytestmark = needs_chromium
NOTE = "The patient denies chest pain and shortness of breath. No fever."
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def click(tab, label: str) -> None:
    tab.get_by_role("button", name=label, exact=True).click()
    settle(tab, timeout_s=600)


def cell(tab, chart: int, index: int):
    """Point ``index`` (row * columns + column) of the grid in the ``chart``-th plotly chart."""
    plot = tab.locator('[data-testid="stPlotlyChart"]').nth(chart)
    return plot.locator(".scatterlayer .trace").first.locator(".points path").nth(index)


def run_scans(tab) -> None:
    if tab.get_by_role("button", name="Run the scans", exact=True).count():
        click(tab, "Run the scans")
    wait_for_plots(tab, 4, timeout_s=600)


def test_patch_a_pair_then_open_a_head_and_a_layer_from_the_heatmaps(tab) -> None:
    set_note(tab, NOTE)
    open_page(tab, "Mechanisms")
    assert tab.locator(ERRORS).count() == 0
    assert tab.get_by_role("textbox", name="Replace with (empty: remove it)").input_value() == "reports"
    run_scans(tab)
    assert tab.get_by_text("patched runs in").count() == 1
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "mechanisms_scans")

    cell(tab, 3, 14).click(force=True)  # the head grid (4th chart), L2 H3
    tab.wait_for_selector("h1:has-text('Attention')", timeout=120_000)
    settle(tab, timeout_s=300)
    assert tab.get_by_role("spinbutton", name="Layer").input_value() == "2"
    assert tab.get_by_role("spinbutton", name="Head").input_value() == "3"
    # the switch keeps the sidebar's choices: the note is still the one typed, not the default example
    assert tab.locator(NOTE_BOX).input_value() == NOTE
    screenshot(tab, "mechanisms_opened_head")

    open_page(tab, "Mechanisms")
    run_scans(tab)  # computed before: drawn at once
    residual = tab.locator('[data-testid="stPlotlyChart"]').first
    residual.locator(".xtick").first.wait_for(timeout=60_000)
    columns = residual.locator(".xtick").count()
    assert residual.locator(".scatterlayer .trace").first.locator(".points path").count() == 6 * columns
    cell(tab, 0, 3 * columns + 2).click(force=True)  # the residual stream before layer 4
    tab.wait_for_selector("h1:has-text('Inside the model')", timeout=120_000)
    settle(tab, timeout_s=300)
    assert tab.get_by_role("spinbutton", name="Layer").first.input_value() == "4"

    open_page(tab, "Mechanisms")
    run_scans(tab)
    knock = tab.get_by_role("button", name="Knock out", exact=False)
    knock.click()
    settle(tab, timeout_s=600)
    assert tab.get_by_text("of what it was").count() == 1
    assert tab.locator(ERRORS).count() == 0
    screenshot(tab, "mechanisms_knocked_out")
