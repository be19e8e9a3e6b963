"""Example clinical notes for demos. Written for this project: no patient data."""

from __future__ import annotations

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
