"""Every file uploader of the app gets a real upload through the browser's file chooser.

The sidebar's .txt note, the Corpus page's CSV and the Fine-tune page's JSONL: after each
upload the page shows what the file holds and no error; after going to another page and
back, the note, the collection and its chosen columns are still there. (Uploading a CSV
once crashed Corpus and Fine-tune for the rest of the session: Streamlit refuses a value
written back for an uploader.) The app runs offline on the bundled model. Screenshots go to
tests/screenshots/.
"""

from __future__ import annotations

import json
from pathlib import Path

from browser_support import NOTE_BOX, needs_chromium, open_page, screenshot, settle
from notes import labelled_rows

pytestmark = needs_chromium

# An invented consultation note in the MTSamples layout (inline headers, "HEADER:, text"); no patient data.
NOTE = """CHIEF COMPLAINT:, Shortness of breath and productive cough for five days.

HISTORY OF PRESENT ILLNESS:, The patient is a 68-year-old man with a long history of chronic obstructive \
pulmonary disease who presents to the clinic with five days of worsening shortness of breath, a cough \
productive of thick yellow sputum and wheezing at night. He reports using his albuterol inhaler six to eight \
times a day over the last three days with only brief relief. He denies chest pain, palpitations, hemoptysis, \
calf swelling or recent travel. He had a low-grade fever two days ago that resolved with acetaminophen. He \
denies nausea, vomiting or diarrhea. He was last admitted for a COPD exacerbation fourteen months ago and did \
not require intubation at that time. He stopped smoking four years ago after a forty pack-year history.

PAST MEDICAL HISTORY:, Chronic obstructive pulmonary disease, hypertension, hyperlipidemia, osteoarthritis of \
both knees and benign prostatic hyperplasia.

MEDICATIONS:, Tiotropium inhaled once daily, fluticasone and salmeterol inhaled twice daily, albuterol as \
needed, lisinopril 20 mg daily, atorvastatin 40 mg at bedtime and tamsulosin 0.4 mg daily.

ALLERGIES:, Penicillin causes a rash.

SOCIAL HISTORY:, He lives with his wife, walks with a cane and drinks alcohol rarely. Former smoker as above.

REVIEW OF SYSTEMS:, Negative for weight loss, night sweats, headache, dysuria and new joint pain. Positive for \
fatigue and decreased exercise tolerance. All other systems reviewed and negative.

PHYSICAL EXAMINATION:, Temperature 37.6, pulse 96, respiratory rate 22, blood pressure 138/84, oxygen \
saturation 90% on room air. He is speaking in full sentences but appears mildly short of breath. Lungs show \
diffuse expiratory wheezes with a prolonged expiratory phase and scattered rhonchi at both bases, without \
crackles. Heart is regular without murmurs, rubs or gallops. There is no leg edema. Abdomen is soft and \
nontender.

DIAGNOSTIC DATA:, Chest x-ray shows hyperinflation without focal consolidation, effusion or pneumothorax. \
White blood cell count is 11.2. No evidence of pneumonia.

ASSESSMENT:, Acute exacerbation of chronic obstructive pulmonary disease, likely triggered by a viral \
bronchitis. No evidence of pneumonia or heart failure.

PLAN:, Prednisone 40 mg daily for five days, doxycycline for five days given the purulent sputum and the \
penicillin allergy, albuterol and ipratropium nebulizers every four hours while awake, and continue his \
maintenance inhalers. He was instructed on warning signs and to return or call if his breathing worsens, if \
he develops chest pain or if the fever returns. Follow up in the clinic in one week, sooner if needed, with \
pulmonary function tests after recovery.
"""
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def no_errors(page, where: str) -> None:
    shown = page.locator(ERRORS).all_inner_texts()
    assert not shown, f"{where}: {shown}"


def note_area(page):
    return page.locator(NOTE_BOX)


def chosen(page, label: str) -> str:
    """The option shown in the selectbox labelled ``label`` (its combobox input holds it)."""
    return page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text=label).locator(
        "input").first.input_value()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (on the main page)."""
    page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def upload_on_page(page, source: str, file: Path) -> None:
    """Choose the page's upload option, then give its uploader the file."""
    page.locator('[data-testid="stRadio"]').get_by_text(source).click()
    settle(page)
    page.locator('[data-testid="stMain"] input[type="file"]').set_input_files(str(file))
    settle(page)


def test_every_uploader_takes_a_file_and_keeps_it_across_pages(tab, app_server, tmp_path: Path) -> None:
    # The sidebar's note uploader: a consultation note of several hundred words.
    assert len(NOTE.split()) > 300
    note_file = tmp_path / "consult_note.txt"
    note_file.write_text(NOTE, encoding="utf-8")
    tab.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(note_file))
    settle(tab)
    assert note_area(tab).input_value() == NOTE
    no_errors(tab, "after the note upload")
    assert "CHIEF COMPLAINT" in main_text(tab) and "pulmonary function tests" in main_text(tab)  # the note, shown
    screenshot(tab, "uploads_1_note")
    open_page(tab, "Tokenization")
    no_errors(tab, "Tokenization with the uploaded note")
    open_page(tab, "Note")
    assert note_area(tab).input_value() == NOTE
    assert "CHIEF COMPLAINT" in main_text(tab) and "pulmonary function tests" in main_text(tab)

    # The Corpus page's uploader: a CSV with a text and a label column (and an id), 20 rows.
    rows = labelled_rows(20)
    csv_file = tmp_path / "visits.csv"
    csv_file.write_text("id,text,finding\n" + "".join(f'{row["id"]},"{row["text"]}",{row["finding"]}\n'
                                                       for row in rows), encoding="utf-8")
    open_page(tab, "Corpus")
    upload_on_page(tab, "Upload CSV or JSONL", csv_file)
    no_errors(tab, "after the CSV upload")
    assert "In use: visits.csv" in main_text(tab) and "20 notes" in main_text(tab)
    choose(tab, "Label column (optional)", "finding")
    no_errors(tab, "after choosing the label column")
    assert "20 notes, labels: affirmed, negated" in main_text(tab)
    assert chosen(tab, "Label column (optional)") == "finding"
    screenshot(tab, "uploads_2_corpus")
    open_page(tab, "Attention")
    no_errors(tab, "Attention after the CSV upload")
    open_page(tab, "Corpus")
    no_errors(tab, "Corpus after coming back")
    text = main_text(tab)
    assert "In use: visits.csv" in text and "uploaded earlier" in text
    assert "20 notes, labels: affirmed, negated" in text
    assert chosen(tab, "Label column (optional)") == "finding" and chosen(tab, "Text column") == "text"
    screenshot(tab, "uploads_3_corpus_after_return")

    # The Fine-tune page's uploader: the same notes as JSONL (text + label).
    jsonl_file = tmp_path / "training.jsonl"
    jsonl_file.write_text("".join(json.dumps({"text": row["text"], "label": row["finding"]}) + "\n" for row in rows),
                          encoding="utf-8")
    open_page(tab, "Fine-tune")
    upload_on_page(tab, "Upload a labelled CSV or JSONL", jsonl_file)
    no_errors(tab, "after the JSONL upload")
    assert "In use: training.jsonl" in main_text(tab)
    assert "20 labelled notes: affirmed 10, negated 10" in main_text(tab)
    tab.get_by_role("button", name="Train", exact=True).click()
    settle(tab)
    no_errors(tab, "after training")
    text = main_text(tab)
    assert "These figures rest on 4 held-out validation notes" in text
    assert "Only 4 validation notes" in text and "is uncertain" in text
    screenshot(tab, "uploads_4_finetune_trained")
    open_page(tab, "Corpus")
    assert "In use: visits.csv" in main_text(tab) and "20 notes, labels: affirmed, negated" in main_text(tab)
    open_page(tab, "Fine-tune")
    no_errors(tab, "Fine-tune after coming back")
    text = main_text(tab)
    assert "In use: training.jsonl" in text and "20 labelled notes: affirmed 10, negated 10" in text
    assert "These figures rest on 4 held-out validation notes" in text
    assert note_area(tab).input_value() == NOTE  # the uploaded note is still the note in force
    screenshot(tab, "uploads_5_finetune_after_return")

    log = app_server.log()
    assert "StreamlitValueAssignmentNotAllowedError" not in log and "Traceback" not in log, log[-3000:]
