"""The Fine-tune page's two new stages in a real browser, on the bundled model (a bare encoder):
continue its masked-LM pretraining on the example notes, then train a word tagger on the example spans,
save it, use it, and see its spans on the Predictions page. Screenshots go to tests/screenshots/
(train_pretrain_*.png, train_tagger_*.png)."""

from __future__ import annotations

from pathlib import Path

from browser_support import NOTE_BOX, needs_chromium, open_page, screenshot, settle, wait_for_plots

pytestmark = needs_chromium

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
NOTE_WITH_MASK = "Chest x-ray shows a right lower lobe [MASK]. Patient denies chest pain."


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def no_errors(page, where: str) -> None:
    shown = page.locator(ERRORS).all_inner_texts()
    assert not shown, f"{where}: {shown}"


def choose_stage(page, stage: str) -> None:
    page.locator('[data-testid="stRadio"]').get_by_text(stage, exact=True).click()
    settle(page)


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def save_to(page, folder: Path) -> None:
    box = page.get_by_label("Folder", exact=True)
    box.fill(str(folder))
    box.press("Enter")
    settle(page)
    page.get_by_role("button", name="Save", exact=True).click()
    settle(page)


def test_pretraining_then_a_tagger_whose_spans_show_on_predictions(tab, app_server, tmp_path: Path) -> None:
    area = tab.locator(NOTE_BOX)
    area.fill(NOTE_WITH_MASK)
    area.press("Control+Enter")
    settle(tab)
    open_page(tab, "Fine-tune")
    choose_stage(tab, "Continue pretraining")
    text = main_text(tab)
    assert "has no masked-LM head" in text and "untrained" in text
    assert "Held-out notes: 6 of 34" in text
    tab.get_by_text("Training settings").click()
    set_number(tab, "Epochs", 3)
    set_number(tab, "Held-out pieces scored (0: all)", 500)
    screenshot(tab, "train_pretrain_1_ready")
    tab.get_by_role("button", name="Continue pretraining", exact=True).click()
    settle(tab, timeout_s=600)
    wait_for_plots(tab, 4)
    no_errors(tab, "after pretraining")
    text = main_text(tab)
    assert "Held-out pseudo-perplexity" in text and "The note's fill-mask before and after" in text
    assert "since step 0" in text
    screenshot(tab, "train_pretrain_2_trained")
    save_to(tab, tmp_path / "adapted")
    no_errors(tab, "after saving the adapted model")
    assert (tmp_path / "adapted" / "model.safetensors").is_file()
    screenshot(tab, "train_pretrain_3_saved")

    choose_stage(tab, "Tag words")
    assert "80 texts with 95 spans" in main_text(tab)
    tab.get_by_role("button", name="Train the tagger", exact=True).click()
    settle(tab, timeout_s=600)
    wait_for_plots(tab, 2)
    no_errors(tab, "after training the tagger")
    text = main_text(tab)
    assert "Entity F1" in text and "a span counts only when the tagger finds its label and both its ends" in text
    screenshot(tab, "train_tagger_1_trained")
    save_to(tab, tmp_path / "tagger")
    assert (tmp_path / "tagger" / "config.json").is_file()
    tab.get_by_role("button", name="Use the trained model on every page").click()
    settle(tab, timeout_s=300)
    open_page(tab, "Predictions")
    settle(tab, timeout_s=300)
    no_errors(tab, "Predictions with the tagger")
    text = main_text(tab)
    assert "This checkpoint labels each word" in text
    tinted = tab.locator('[data-testid="stMain"] [title]').all()
    titles = [element.get_attribute("title") or "" for element in tinted]
    assert any(title.split(" (")[0] in {"affirmed", "negated", "possible"} for title in titles), titles[:10]
    screenshot(tab, "train_tagger_2_predictions")
