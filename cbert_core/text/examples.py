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

# The finding each sentence of EXAMPLE_COLLECTION is about (its target phrase, as NegEx's Condition column), in
# the same order: probes can read the label at the finding's pieces.
EXAMPLE_COLLECTION_FINDINGS: tuple[str, ...] = (
    "chest pain", "pneumonia", "fever", "shortness of breath", "pleural effusion", "focal consolidation", "diabetes",
    "nausea", "deep vein thrombosis", "tenderness", "hemorrhage", "headache", "myocardial infarction", "rash",
    "shortness of breath", "pneumonia", "fever", "chest pain", "pleural effusion", "wheezes", "diabetes", "nausea",
    "deep vein thrombosis", "tender", "hemorrhage", "headache", "myocardial infarction", "rash", "sputum", "wheezing",
)
