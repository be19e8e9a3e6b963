"""Example clinical notes for demos. Written for this project: no patient data."""

from __future__ import annotations

import math

EXAMPLE_NOTES: dict[str, str] = {
    "COPD admission (with [MASK])": """HISTORY OF PRESENT ILLNESS: 67 y/o M with COPD on 2L home O2, CAD s/p PCI, who presents with 3 days of \
worsening dyspnea and productive cough. He denies chest pain or fever. He was seen by Dr. Lee in clinic on \
[**2101-3-4**] and started on azithromycin. Home meds include metoprolol 25 mg p.o. b.i.d. and aspirin 81 mg q.d.

PHYSICAL EXAM: BP 142/88, HR 104, RR 24, SpO2 88% on 2L. Diffuse expiratory wheezes bilaterally.

Assessment/Plan: Acute [MASK] exacerbation, likely viral. No evidence of pneumonia on chest x-ray.
1. Prednisone 40 mg daily x 5 days.
2. Albuterol/ipratropium nebs q4h.
3. Follow up with [**Doctor Last Name 123**] in 2 wks.""",
    "Discharge summary": """DISCHARGE DIAGNOSIS: Community-acquired pneumonia, right lower lobe.

HOSPITAL COURSE: The patient is a 54-year-old woman with type 2 diabetes who presented with fever, cough and \
pleuritic chest pain. Chest x-ray showed a right lower lobe consolidation. She was treated with ceftriaxone \
and azithromycin with rapid improvement. Blood cultures remained negative. She was afebrile for 48 hours before \
discharge.

DISCHARGE MEDICATIONS:
1. Amoxicillin-clavulanate 875 mg p.o. b.i.d. for 5 more days.
2. Metformin 1000 mg p.o. b.i.d.

FOLLOW UP: Primary care in one week. Return for shortness of breath, fever or chest pain.""",
    "Radiology report (all capitals)": """EXAMINATION: CHEST, PA AND LATERAL.
INDICATION: SHORTNESS OF BREATH, RULE OUT PNEUMONIA.
FINDINGS: THE LUNGS ARE HYPERINFLATED, CONSISTENT WITH COPD. NO FOCAL CONSOLIDATION, PLEURAL EFFUSION OR \
PNEUMOTHORAX. THE CARDIAC SILHOUETTE IS NORMAL IN SIZE.
IMPRESSION: NO ACUTE CARDIOPULMONARY PROCESS. HYPERINFLATION SUGGESTING COPD.""",
    "Negation examples": """Patient denies chest pain. No evidence of pneumonia. Patient reports shortness of breath. \
Negative for fever and chills. Possible small pleural effusion. Mother had breast cancer.""",
}

DEFAULT_EXAMPLE = "COPD admission (with [MASK])"


# A small labelled collection for the Corpus and Fine-tune pages (synthetic sentences written for this
# project; the label says whether the finding is affirmed or negated).
EXAMPLE_COLLECTION: tuple[tuple[str, str], ...] = (
    ("Patient denies chest pain or pressure.", "negated"),
    ("No evidence of pneumonia on the chest x-ray.", "negated"),
    ("Negative for fever, chills and night sweats.", "negated"),
    ("He denies shortness of breath at rest.", "negated"),
    ("No pleural effusion or pneumothorax is seen.", "negated"),
    ("There is no focal consolidation.", "negated"),
    ("She has no history of diabetes.", "negated"),
    ("Denies nausea, vomiting or diarrhea.", "negated"),
    ("No signs of deep vein thrombosis in the left leg.", "negated"),
    ("The abdomen is soft without tenderness.", "negated"),
    ("No acute intracranial hemorrhage.", "negated"),
    ("Patient reports no headache today.", "negated"),
    ("Rules out myocardial infarction by serial troponins.", "negated"),
    ("Free of any rash or skin lesions.", "negated"),
    ("Patient reports worsening shortness of breath.", "affirmed"),
    ("Chest x-ray shows a right lower lobe pneumonia.", "affirmed"),
    ("She presents with fever and productive cough.", "affirmed"),
    ("Complains of crushing substernal chest pain.", "affirmed"),
    ("Small left pleural effusion is present.", "affirmed"),
    ("Exam is notable for diffuse expiratory wheezes.", "affirmed"),
    ("History of type 2 diabetes on metformin.", "affirmed"),
    ("He has had nausea and vomiting for two days.", "affirmed"),
    ("Ultrasound confirms deep vein thrombosis of the left leg.", "affirmed"),
    ("The abdomen is tender in the right lower quadrant.", "affirmed"),
    ("CT shows an acute subdural hemorrhage.", "affirmed"),
    ("Patient reports a severe headache since morning.", "affirmed"),
    ("Troponin is elevated, consistent with myocardial infarction.", "affirmed"),
    ("A diffuse maculopapular rash covers the trunk.", "affirmed"),
    ("COPD exacerbation with increased sputum production.", "affirmed"),
    ("No wheezing, rales or rhonchi.", "negated"),
)


# Labelled spans for the Fine-tune page's word tagger (sentences written for this project): each
# condition in a short clinical sentence, labelled with its assertion: "affirmed" (the patient has it),
# "negated" (ruled out or denied) or "possible" (suspected, not confirmed). (sentence, ((phrase, label), ...)),
# each phrase found in the sentence after the previous one.
EXAMPLE_SPANS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Patient denies chest pain.", (("chest pain", "negated"),)),
    ("No evidence of pneumonia on the chest x-ray.", (("pneumonia", "negated"),)),
    ("She reports fever and a productive cough.", (("fever", "affirmed"), ("productive cough", "affirmed"))),
    ("He denies shortness of breath at rest.", (("shortness of breath", "negated"),)),
    ("Small left pleural effusion is present.", (("pleural effusion", "affirmed"),)),
    ("Possible early pneumonia in the right lower lobe.", (("pneumonia", "possible"),)),
    ("No pleural effusion or pneumothorax.", (("pleural effusion", "negated"), ("pneumothorax", "negated"))),
    ("History of type 2 diabetes on metformin.", (("type 2 diabetes", "affirmed"),)),
    ("Negative for fever and chills.", (("fever", "negated"), ("chills", "negated"))),
    ("Findings are suspicious for appendicitis.", (("appendicitis", "possible"),)),
    ("Complains of crushing substernal chest pain.", (("chest pain", "affirmed"),)),
    ("There is no focal consolidation.", (("focal consolidation", "negated"),)),
    ("Rule out pulmonary embolism.", (("pulmonary embolism", "possible"),)),
    ("Ultrasound confirms deep vein thrombosis of the left leg.", (("deep vein thrombosis", "affirmed"),)),
    ("No signs of deep vein thrombosis.", (("deep vein thrombosis", "negated"),)),
    ("He has had nausea and vomiting for two days.", (("nausea", "affirmed"), ("vomiting", "affirmed"))),
    ("Denies nausea, vomiting or diarrhea.", (("nausea", "negated"), ("vomiting", "negated"),
                                              ("diarrhea", "negated"))),
    ("CT shows an acute subdural hemorrhage.", (("subdural hemorrhage", "affirmed"),)),
    ("No acute intracranial hemorrhage.", (("intracranial hemorrhage", "negated"),)),
    ("Cannot exclude a small pneumothorax.", (("pneumothorax", "possible"),)),
    ("Patient reports a severe headache since morning.", (("headache", "affirmed"),)),
    ("Patient reports no headache today.", (("headache", "negated"),)),
    ("Troponin is elevated, consistent with myocardial infarction.", (("myocardial infarction", "affirmed"),)),
    ("Myocardial infarction was ruled out by serial troponins.", (("Myocardial infarction", "negated"),)),
    ("Likely viral bronchitis.", (("viral bronchitis", "possible"),)),
    ("A diffuse rash covers the trunk.", (("rash", "affirmed"),)),
    ("Free of any rash or skin lesions.", (("rash", "negated"), ("skin lesions", "negated"))),
    ("Exam is notable for diffuse wheezes.", (("wheezes", "affirmed"),)),
    ("No wheezes, rales or rhonchi.", (("wheezes", "negated"), ("rales", "negated"), ("rhonchi", "negated"))),
    ("Symptoms may represent early sepsis.", (("sepsis", "possible"),)),
    ("COPD exacerbation with increased sputum.", (("COPD exacerbation", "affirmed"),)),
    ("She has no history of asthma.", (("asthma", "negated"),)),
    ("Known history of atrial fibrillation on warfarin.", (("atrial fibrillation", "affirmed"),)),
    ("Questionable urinary tract infection, culture pending.", (("urinary tract infection", "possible"),)),
    ("The abdomen is tender in the right lower quadrant.", (("tender", "affirmed"),)),
    ("The abdomen is soft without tenderness.", (("tenderness", "negated"),)),
    ("Left leg swelling and redness are noted.", (("swelling", "affirmed"), ("redness", "affirmed"))),
    ("There is no leg swelling.", (("leg swelling", "negated"),)),
    ("Concern for cellulitis of the left foot.", (("cellulitis", "possible"),)),
    ("He presents with acute kidney injury.", (("acute kidney injury", "affirmed"),)),
    ("No evidence of acute kidney injury.", (("acute kidney injury", "negated"),)),
    ("Probable community-acquired pneumonia.", (("community-acquired pneumonia", "possible"),)),
    ("Chest x-ray shows a right lower lobe pneumonia.", (("pneumonia", "affirmed"),)),
    ("Patient denies dysuria or hematuria.", (("dysuria", "negated"), ("hematuria", "negated"))),
    ("She reports dizziness when standing.", (("dizziness", "affirmed"),)),
    ("He denies dizziness or syncope.", (("dizziness", "negated"), ("syncope", "negated"))),
    ("Differential includes migraine.", (("migraine", "possible"),)),
    ("Worsening shortness of breath over three days.", (("shortness of breath", "affirmed"),)),
    ("He denies fever.", (("fever", "negated"),)),
    ("She reports chills.", (("chills", "affirmed"),)),
    ("No rash.", (("rash", "negated"),)),
    ("Patient has a cough.", (("cough", "affirmed"),)),
    ("Denies headache or neck stiffness.", (("headache", "negated"), ("neck stiffness", "negated"))),
    ("Positive for nausea.", (("nausea", "affirmed"),)),
    ("Negative for dysuria.", (("dysuria", "negated"),)),
    ("Possible pleural effusion.", (("pleural effusion", "possible"),)),
    ("Small pneumothorax is seen.", (("pneumothorax", "affirmed"),)),
    ("No pneumothorax is seen.", (("pneumothorax", "negated"),)),
    ("Likely sepsis from a urinary source.", (("sepsis", "possible"),)),
    ("He has sepsis and hypotension.", (("sepsis", "affirmed"), ("hypotension", "affirmed"))),
    ("Without chest pain or palpitations.", (("chest pain", "negated"), ("palpitations", "negated"))),
    ("She reports palpitations at night.", (("palpitations", "affirmed"),)),
    ("Suspicious for early cellulitis.", (("cellulitis", "possible"),)),
    ("Cellulitis of the right arm.", (("Cellulitis", "affirmed"),)),
    ("No cellulitis.", (("cellulitis", "negated"),)),
    ("Denies syncope.", (("syncope", "negated"),)),
    ("Episode of syncope this morning.", (("syncope", "affirmed"),)),
    ("Possible syncope.", (("syncope", "possible"),)),
    ("Mild edema of both ankles.", (("edema", "affirmed"),)),
    ("No edema.", (("edema", "negated"),)),
    ("Probable asthma.", (("asthma", "possible"),)),
    ("Asthma since childhood.", (("Asthma", "affirmed"),)),
    ("No diarrhea.", (("diarrhea", "negated"),)),
    ("Reports diarrhea for a week.", (("diarrhea", "affirmed"),)),
    ("Negative for hematuria.", (("hematuria", "negated"),)),
    ("Gross hematuria is present.", (("hematuria", "affirmed"),)),
    ("Possible hematuria.", (("hematuria", "possible"),)),
    ("Denies vomiting.", (("vomiting", "negated"),)),
    ("Vomiting since last night.", (("Vomiting", "affirmed"),)),
    ("No chills.", (("chills", "negated"),)),
)


# ------------------------------------------------------------------ a labelled evaluation set
# A few hundred short sentences written for this project (no patient data), made from hand-written
# sentence frames and findings, for the Evaluate page and the batch command line's example. The label
# says whether the finding is negated or affirmed (as EXAMPLE_COLLECTION's); the metadata columns say
# what kind of sentence it is, so slices can show where a model fails: uncertain findings (labelled
# affirmed: they are not negated), a family member's history, abbreviations, upper-case radiology,
# de-identification placeholders.
LABELLED_COLUMNS = ("id", "text", "label", "note_type", "section", "style", "certainty", "experiencer", "finding")

# (finding, its usual abbreviation or "")
_FINDINGS: tuple[tuple[str, str], ...] = (
    ("chest pain", "CP"), ("shortness of breath", "SOB"), ("fever", ""), ("cough", ""), ("pneumonia", "PNA"),
    ("nausea and vomiting", "N/V"), ("headache", "HA"), ("deep vein thrombosis", "DVT"),
    ("pulmonary embolism", "PE"), ("myocardial infarction", "MI"), ("congestive heart failure", "CHF"),
    ("hypertension", "HTN"), ("diabetes mellitus", "DM"), ("urinary tract infection", "UTI"),
    ("abdominal pain", "abd pain"), ("dizziness", ""), ("rash", ""), ("atrial fibrillation", "AFib"),
    ("leg swelling", ""), ("syncope", ""), ("chronic obstructive pulmonary disease", "COPD"),
    ("gastrointestinal bleeding", "GI bleed"), ("palpitations", ""),
)
_IMAGING: tuple[str, ...] = ("pleural effusion", "pneumothorax", "focal consolidation", "cardiomegaly",
                             "pulmonary edema", "rib fracture", "pulmonary nodule", "intracranial hemorrhage",
                             "hydronephrosis", "free air")
# (frames, label, note type, section, style, certainty, experiencer); {f} a finding, {F} capitalised,
# {a} its abbreviation, {R} an imaging finding in capitals, {r} in lower case.
_FRAMES: tuple[tuple[tuple[str, ...], str, str, str, str, str, str], ...] = (
    (("Patient denies {f}.", "He denies any {f}.", "She reports no {f}.", "No evidence of {f}.",
      "There is no {f} at this time.", "{F} was ruled out.", "The patient has not had any {f}.",
      "He has been free of {f} since discharge."),
     "negated", "progress note", "HPI", "prose", "certain", "patient"),
    (("REVIEW OF SYSTEMS: Negative for {f}.", "ROS: Denies {f}."),
     "negated", "progress note", "ROS", "prose", "certain", "patient"),
    (("Patient reports {f}.", "She presents with {f}.", "He complains of {f} since yesterday.",
      "History is significant for {f}.", "{F} started two days ago.", "The patient was admitted with {f}.",
      "She has had {f} for about a week."),
     "affirmed", "progress note", "HPI", "prose", "certain", "patient"),
    (("REVIEW OF SYSTEMS: Positive for {f}.",),
     "affirmed", "progress note", "ROS", "prose", "certain", "patient"),
    (("Possible {f}.", "Cannot rule out {f}.", "Findings are concerning for {f}.", "{F} is likely.",
      "Questionable {f} on arrival.", "We suspect early {f}."),
     "affirmed", "ED note", "Assessment", "prose", "uncertain", "patient"),
    (("FAMILY HISTORY: Mother had {f}.", "Family history is significant for {f} in his father.",
      "Her brother was diagnosed with {f}."),
     "affirmed", "progress note", "Family history", "prose", "certain", "family"),
    (("FAMILY HISTORY: No family history of {f}.", "Family history is negative for {f}."),
     "negated", "progress note", "Family history", "prose", "certain", "family"),
    (("Pt denies {a}.", "Neg for {a}.", "No {a} today.", "ROS neg for {a}."),
     "negated", "ED note", "HPI", "abbreviated", "certain", "patient"),
    (("Pt c/o {a} x 3 days.", "+ {a} on arrival.", "Hx of {a}.", "Admitted w/ {a}."),
     "affirmed", "ED note", "HPI", "abbreviated", "certain", "patient"),
    (("IMPRESSION: NO {R}.", "FINDINGS: NO EVIDENCE OF {R}.", "NO {R} IS SEEN."),
     "negated", "radiology report", "Impression", "upper case", "certain", "patient"),
    (("IMPRESSION: {R}.", "FINDINGS: SMALL {R} IS PRESENT.", "{R} IS SEEN ON THE LEFT."),
     "affirmed", "radiology report", "Impression", "upper case", "certain", "patient"),
    (("IMPRESSION: POSSIBLE {R}.", "FINDINGS: {R} CANNOT BE EXCLUDED."),
     "affirmed", "radiology report", "Impression", "upper case", "uncertain", "patient"),
    (("No {r} is seen.", "There is no {r}."),
     "negated", "radiology report", "Findings", "prose", "certain", "patient"),
    (("There is a small {r}.", "A {r} is present on the right."),
     "affirmed", "radiology report", "Findings", "prose", "certain", "patient"),
    (("Seen by Dr. [**Last Name 123**] on [**2101-3-4**]; denies {f}.",
      "Per [**Name (NI) 456**], the patient has no {f}."),
     "negated", "discharge summary", "Hospital course", "de-identified", "certain", "patient"),
    (("Admitted on [**2101-3-4**] with {f}.", "Per [**Name (NI) 456**], the patient reports {f}.",
      "Dr. [**Last Name 789**] was called for {f}."),
     "affirmed", "discharge summary", "Hospital course", "de-identified", "certain", "patient"),
)
_PER_FRAME = 6  # findings per sentence frame


def _labelled_examples() -> tuple[dict[str, str], ...]:
    rows: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(text: str, label: str, note_type: str, section: str, style: str, certainty: str, experiencer: str,
            finding: str) -> None:
        if text not in seen:
            seen.add(text)
            rows.append({"id": f"ex{len(rows) + 1:03d}", "text": text, "label": label, "note_type": note_type,
                         "section": section, "style": style, "certainty": certainty, "experiencer": experiencer,
                         "finding": finding})

    for text, label in EXAMPLE_COLLECTION:
        add(text, label, "progress note", "HPI", "prose", "certain", "patient", "")
    frame_number = 0
    for frames, *kind in _FRAMES:
        for frame in frames:
            frame_number += 1
            if "{R}" in frame or "{r}" in frame:
                pool = [(finding, "") for finding in _IMAGING]
            elif "{a}" in frame:
                pool = [(finding, short) for finding, short in _FINDINGS if short]
            else:
                pool = list(_FINDINGS)
            step = next(step for step in (5, 3, 7) if math.gcd(step, len(pool)) == 1)  # distinct findings
            for k in range(_PER_FRAME):
                finding, short = pool[(frame_number * 7 + k * step) % len(pool)]
                text = frame.format(f=finding, F=finding[0].upper() + finding[1:], a=short, R=finding.upper(),
                                    r=finding)
                add(text, *kind, finding)
    return tuple(rows)


LABELLED_EXAMPLES: tuple[dict[str, str], ...] = _labelled_examples()


# The finding each sentence of EXAMPLE_COLLECTION is about (its target phrase, as NegEx's Condition column), in
# the same order: probes can read the label at the finding's pieces.
EXAMPLE_COLLECTION_FINDINGS: tuple[str, ...] = (
    "chest pain", "pneumonia", "fever", "shortness of breath", "pleural effusion", "focal consolidation", "diabetes",
    "nausea", "deep vein thrombosis", "tenderness", "hemorrhage", "headache", "myocardial infarction", "rash",
    "shortness of breath", "pneumonia", "fever", "chest pain", "pleural effusion", "wheezes", "diabetes", "nausea",
    "deep vein thrombosis", "tender", "hemorrhage", "headache", "myocardial infarction", "rash", "sputum", "wheezing",
)
