"""Section headers as clinical notes write them, and the Note page's counts for such a note.

The notes are written by hand in the styles of real notes: MTSamples writes a comma where the
original had a line break ("...hip pain.,ALLERGIES:,  No known drug allergies."), MIMIC notes use
title-case headers on their own line and [** ... **] placeholders. Each expected list of titles is
what a reader of the note would call its headers.
"""

from __future__ import annotations

import pytest

from cbert_core.text.segment import segment
from test_app_pages import start

HEADER_STYLES = {
    "inline MTSamples with commas": (
        "CHIEF COMPLAINT:,  Cough for three days.,HISTORY OF PRESENT ILLNESS:  ,The patient is a 60-year-old man "
        "referred by Dr. A.  He has a dry cough.,ALLERGIES:,  No known drug allergies.,PAST MEDICAL HISTORY:,  "
        "Asthma and hypertension.",
        ["CHIEF COMPLAINT", "HISTORY OF PRESENT ILLNESS", "ALLERGIES", "PAST MEDICAL HISTORY"]),
    "ALL CAPS at line start, short forms": (
        "CC: Cough.\nHPI: Three days of dry cough.\nPMH: Asthma.\nPE: Lungs clear.\n"
        "A/P: Viral bronchitis. Fluids and rest.\nBP: 120/80. HR: 72.",
        ["CC", "HPI", "PMH", "PE", "A/P"]),
    "title case at line start": (
        "Chief Complaint: Cough.\nPhysical Exam:\nGeneral: Alert, no distress.\nNeck: Supple.\n"
        "Lungs: Scattered wheezes.\nAssessment/Plan: Asthma exacerbation. Start prednisone.",
        ["Chief Complaint", "Physical Exam", "General", "Neck", "Lungs", "Assessment/Plan"]),
    "sentence case at line start": (
        "Past medical history: Asthma.\nVital signs: BP 120/80, HR 72.\nReview of systems: Negative.\n"
        "Code status: Full code.",
        ["Past medical history", "Vital signs", "Review of systems", "Code status"]),
    "title case after a period": (
        "PHYSICAL EXAMINATION:,  Blood pressure 140/80, pulse 88.  Lungs:  Clear.  Heart:  Regular rate and "
        "rhythm.  Impression: viral illness.",
        ["PHYSICAL EXAMINATION", "Lungs", "Heart", "Impression"]),
    "inline title case after MTSamples commas": (
        "SUBJECTIVE:,  Allergies are worse this spring.,OBJECTIVE:,Vital Signs:  Weight 130 pounds.,"
        "HEENT:  Throat mildly red.,Neck:  Supple without adenopathy.,Lungs:  Clear.",
        ["SUBJECTIVE", "OBJECTIVE", "Vital Signs", "HEENT", "Neck", "Lungs"]),
    "headers followed by numbered lists": (
        "DISCHARGE DIAGNOSES:,1.  Pneumonia, improved.,2.  Anemia of chronic disease.,DISCHARGE MEDICATIONS:,"
        "1.  Amoxicillin 500 mg p.o. t.i.d.,2.  Ferrous sulfate 325 mg daily.",
        ["DISCHARGE DIAGNOSES", "DISCHARGE MEDICATIONS"]),
    "nested exam headers": (
        "PHYSICAL EXAMINATION:,VITAL SIGNS:  Temperature 98.6, pulse 72.,GENERAL:  No acute distress.,"
        "HEENT:  Normocephalic.,LUNGS:  Clear to auscultation.",
        ["PHYSICAL EXAMINATION", "VITAL SIGNS", "GENERAL", "HEENT", "LUNGS"]),
    "MIMIC with placeholders holding colons": (
        "Admission Date:  [**2101-3-4**]     Discharge Date:  [**2101-3-9**]\n\n"
        "History of Present Illness:\n67M sent from [**HOSPITAL: ST. MARY'S CLINIC**] at 10:30 with dyspnea. "
        "Seen by [**Doctor Last Name: JONES**].\n\nPhysical Exam:\nGen: NAD.\nNeck: JVP 8 cm.\n\n"
        "Brief Hospital Course:\nTreated for CHF; diuresed well.\n\nDischarge Disposition:\nHome",
        ["History of Present Illness", "Physical Exam", "Gen", "Neck", "Brief Hospital Course",
         "Discharge Disposition"]),
    "times and ratios": (
        "PROCEDURE:,  Lidocaine 1% with epinephrine 1:100,000 was injected at 10:30.  The I:E ratio was 1:2.,"
        "FINDINGS:,  Mixed 1:1 with saline.  Start time 10:30, end time 11:15.,PLAN:,  Recheck at 08:00.",
        ["PROCEDURE", "FINDINGS", "PLAN"]),
    "names after initials": (
        "HISTORY OF PRESENT ILLNESS:,  Referred by Dr. A. Smith: she asks about a cough.  Seen with DR. B. JONES: "
        "no change.,ASSESSMENT:,  Bronchitis.",
        ["HISTORY OF PRESENT ILLNESS", "ASSESSMENT"]),
    "vitals inside sentences": (
        "OBJECTIVE:,  She was seen in triage and her vitals: stable.  On arrival, Vitals: normal.  Patient arrived "
        "and Vitals: were taken.,Vitals:  Temperature 98.6.,ASSESSMENT:,  Well child.",
        ["OBJECTIVE", "Vitals", "ASSESSMENT"]),
}


@pytest.mark.parametrize("style", sorted(HEADER_STYLES))
def test_header_styles(style: str) -> None:
    text, titles = HEADER_STYLES[style]
    result = segment(text)
    assert [section.title for section in result.sections if section.title] == titles
    for section in result.sections:
        if section.title:  # the header is the title and its colon, where the title is written
            assert text[section.start:section.start + len(section.title)] == section.title
            assert text[section.body_start - 1] == ":"
    for sentence in result.sentences:
        words = text[sentence.start:sentence.end]
        assert words[0] not in ",;:" and words[-1] != ",", words
        section = result.sections[sentence.section]
        assert section.body_start <= sentence.start and sentence.end <= section.end


def test_inline_sections_hold_their_own_sentences() -> None:
    text, _ = HEADER_STYLES["headers followed by numbered lists"]
    result = segment(text)
    by_section = [(result.sections[s.section].title, text[s.start:s.end]) for s in result.sentences]
    assert by_section == [
        ("DISCHARGE DIAGNOSES", "1.  Pneumonia, improved."),
        ("DISCHARGE DIAGNOSES", "2.  Anemia of chronic disease."),
        ("DISCHARGE MEDICATIONS", "1.  Amoxicillin 500 mg p.o. t.i.d."),
        ("DISCHARGE MEDICATIONS", "2.  Ferrous sulfate 325 mg daily."),
    ]


def test_placeholders_stay_whole_inside_new_sections() -> None:
    text, _ = HEADER_STYLES["MIMIC with placeholders holding colons"]
    result = segment(text)
    assert [text[a:b] for a, b in result.placeholders] == [
        "[**2101-3-4**]", "[**2101-3-9**]", "[**HOSPITAL: ST. MARY'S CLINIC**]", "[**Doctor Last Name: JONES**]"]
    by_section = [(result.sections[s.section].title, text[s.start:s.end]) for s in result.sentences]
    assert by_section == [
        ("", "Admission Date:  [**2101-3-4**]     Discharge Date:  [**2101-3-9**]"),
        ("History of Present Illness", "67M sent from [**HOSPITAL: ST. MARY'S CLINIC**] at 10:30 with dyspnea."),
        ("History of Present Illness", "Seen by [**Doctor Last Name: JONES**]."),
        ("Gen", "NAD."),
        ("Neck", "JVP 8 cm."),
        ("Brief Hospital Course", "Treated for CHF; diuresed well."),
        ("Discharge Disposition", "Home"),
    ]


def test_dosing_abbreviations_inside_an_inline_list_do_not_end_sentences() -> None:
    text = ("PLAN:,1.  Pain.  Oxycodone 5 mg q.4h. p.r.n. pain.,2.  Anxiety, lorazepam 0.5 mg q.h.s.,"
            "3.  Follow up with Dr. B. in 2 weeks.")
    sentences = [text[s.start:s.end] for s in segment(text).sentences]
    assert sentences == ["1.  Pain.", "Oxycodone 5 mg q.4h. p.r.n. pain.", "2.  Anxiety, lorazepam 0.5 mg q.h.s.",
                         "3.  Follow up with Dr. B. in 2 weeks."]


def test_note_page_counts_inline_sections_and_reader_words() -> None:
    note = ("CHIEF COMPLAINT:,  Cough.,HISTORY OF PRESENT ILLNESS:  ,Seen on 08/27/2007 by Dr. A.  Dry cough for "
            "3 days.,MEDICATIONS:,1.  Albuterol 2 puffs q.4h. p.r.n.,ALLERGIES:,  None.,PHYSICAL EXAMINATION:,"
            "VITAL SIGNS:  Temperature 98.6.,LUNGS:  Scattered wheezes.,IMPRESSION:,  Asthma exacerbation.")
    app = start(note_text=note)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Sections"] == "8"
    # CHIEF COMPLAINT Cough HISTORY OF PRESENT ILLNESS Seen on 08/27/2007 by Dr A Dry cough for 3 days (18)
    # MEDICATIONS 1 Albuterol 2 puffs q.4h p.r.n ALLERGIES None (27) PHYSICAL EXAMINATION VITAL SIGNS
    # Temperature 98.6 LUNGS Scattered wheezes IMPRESSION Asthma exacerbation (39)
    assert metrics["Words"] == "39"
    sections = app.dataframe[0].value
    assert list(sections["section"]) == ["CHIEF COMPLAINT", "HISTORY OF PRESENT ILLNESS", "MEDICATIONS", "ALLERGIES",
                                         "PHYSICAL EXAMINATION", "VITAL SIGNS", "LUNGS", "IMPRESSION"]
    captions = " ".join(caption.value for caption in app.caption)
    assert f"{metrics['Word pieces']} word pieces for 39 words" in captions
    assert "##" in captions
