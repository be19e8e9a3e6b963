"""Example notes used across tests (synthetic, no patient data)."""

CLINICAL_NOTE = """HISTORY OF PRESENT ILLNESS: The pt is a 67 y/o M seen by Dr. Smith on [**2101-3-4**]. He takes \
metoprolol 25 mg b.i.d. and aspirin 81 mg q.d. for CAD. BP 120/80, HR 72. Patient denies chest pain. No fever.
MEDICATIONS:
1. Lisinopril 10 mg p.o. daily.
2. Atorvastatin 40 mg q.h.s.
Assessment/Plan: COPD exacerbation. No evidence of pneumonia. Follow up with [**Doctor Last Name 123**] in 2 wks."""

HOSTILE_NOTES = {
    "control": "Patient\x00 denies\x07 chest\x1b pain.",
    "zero_width": "Pa\u200btient de\u200cnies\u200d chest\ufeff pain.",
    "bidi_override": "Patient \u202edenies\u202c chest pain \u2067x\u2069.",
    "emoji": "Patient 😀 denies 🫀 chest pain 👍🏽.",
    "cjk": "患者否认胸痛。 Patient denies chest pain.",
    "rtl": "المريض ينفي ألم الصدر. Patient denies.",
    "html": "<script>alert(1)</script> <img src=x onerror=alert(2)> Patient </script> denies.",
    "literal_specials": "[CLS] Patient [SEP] denies [UNK] chest [PAD] pain.",
    "punctuation": "?!.,;:()[]{}--//..",
    "long_word": "x" * 10_000,
    "combining": "Pa\u0301tient de\u0308nies cafe\u0301.",
}

# A discharge summary of about 710 words written for the tests in the style of the public MTSamples
# transcriptions: headers inline, commas standing for line breaks. Invented; no patient data.
LONG_NOTE = (
    "DISCHARGE SUMMARY,CHIEF COMPLAINT:,  Shortness of breath and productive cough for five days.,"
    "HISTORY OF PRESENT ILLNESS:  ,The patient is a 68-year-old man with a history of chronic obstructive "
    "pulmonary disease, hypertension and type 2 diabetes who presented to the emergency department with five "
    "days of worsening shortness of breath, a cough productive of yellow sputum and subjective fevers at home.  "
    "He reports that he has been using his albuterol inhaler every two hours without relief.  He denies chest "
    "pain, palpitations, orthopnea or leg swelling.  He denies nausea, vomiting or diarrhea.  He has not traveled "
    "recently and has no sick contacts.  He was seen by his primary care physician two weeks ago and was started "
    "on a short course of prednisone for wheezing, which he finished three days before admission.  In the "
    "emergency department his oxygen saturation was 86% on room air, which improved to 93% on 3 liters by nasal "
    "cannula.  A chest x-ray showed hyperinflation and a patchy opacity in the right lower lobe.,"
    "ALLERGIES:,  Penicillin, which causes a rash.,"
    "PAST MEDICAL HISTORY:,  1.  Chronic obstructive pulmonary disease, on 2 liters of home oxygen at night.,"
    "2.  Hypertension.,3.  Type 2 diabetes mellitus, diet controlled until last year.,4.  Coronary artery disease "
    "status post stent placement in 2015.,5.  Gastroesophageal reflux disease.,"
    "PAST SURGICAL HISTORY:,  Cholecystectomy in 2009 and right knee arthroscopy in 2012.,"
    "MEDICATIONS:  ,1.  Albuterol inhaler two puffs every four hours as needed.,2.  Tiotropium one capsule "
    "inhaled daily.,3.  Lisinopril 20 mg daily.,4.  Metformin 500 mg p.o. b.i.d.,5.  Aspirin 81 mg daily.,"
    "6.  Atorvastatin 40 mg at bedtime.,7.  Omeprazole 20 mg daily.,"
    "SOCIAL HISTORY: , He is a retired electrician who lives with his wife.  He smoked one pack per day for "
    "forty years and quit eight years ago.  He drinks one or two beers on weekends and denies illicit drug use.,"
    "FAMILY HISTORY:,  His father died of a myocardial infarction at the age of 70.  His mother had breast "
    "cancer.  His brother has emphysema.,"
    "REVIEW OF SYSTEMS:,  As in the history of present illness.  He reports fatigue and poor appetite for the "
    "past week.  He denies weight loss, night sweats, hemoptysis, dysuria or rash.  All other systems were "
    "reviewed and are negative.,"
    "PHYSICAL EXAMINATION:,VITAL SIGNS:  Temperature 38.4, blood pressure 148/86, heart rate 108, respiratory "
    "rate 26, oxygen saturation 93% on 3 liters.,GENERAL:  An elderly man in moderate respiratory distress, "
    "speaking in short sentences.,HEENT:  Mucous membranes are dry.  No pharyngeal erythema.,NECK:  No jugular "
    "venous distension.  No lymphadenopathy.,LUNGS:  Diffuse expiratory wheezes with coarse crackles at the right "
    "base.  Use of accessory muscles.,HEART:  Tachycardic, regular rhythm, no murmurs.,ABDOMEN:  Soft, "
    "nontender, nondistended.  Normal bowel sounds.,EXTREMITIES:  No edema.  Pulses are intact.,"
    "LABORATORY DATA:,  White blood cell count 14.2 with 85% neutrophils, hemoglobin 13.1, platelets 310.  "
    "Sodium 136, potassium 4.2, creatinine 1.1, glucose 212.  Arterial blood gas on 3 liters showed pH 7.36, "
    "pCO2 52 and pO2 68.  Troponin was negative twice.  Blood cultures were drawn.,"
    "HOSPITAL COURSE:,  The patient was admitted to the medical floor with an acute exacerbation of chronic "
    "obstructive pulmonary disease and a right lower lobe pneumonia.  He was treated with nebulized albuterol "
    "and ipratropium every four hours, intravenous methylprednisolone for two days followed by oral "
    "prednisone, and ceftriaxone with azithromycin, chosen because of his penicillin allergy history after "
    "a discussion of the low risk of cross reactivity.  His oxygen requirement fell over three days and he "
    "was weaned to his home level, with his home oxygen continued at night as before.  His fever resolved on the second day.  Blood cultures remained negative.  "
    "His glucose rose while on steroids and was managed with sliding scale insulin.  He was seen by physical "
    "therapy, who found him safe to go home with a walker.  There was no evidence of a pulmonary embolism "
    "and no evidence of heart failure during this admission.,"
    "DISCHARGE DIAGNOSES:,1.  Acute exacerbation of chronic obstructive pulmonary disease.,2.  Community "
    "acquired pneumonia of the right lower lobe.,3.  Steroid induced hyperglycemia.,4.  Hypertension.,"
    "DISCHARGE MEDICATIONS:,1.  Prednisone 40 mg daily for three more days.,2.  Azithromycin 250 mg daily for "
    "two more days.,3.  Albuterol and tiotropium as before.,4.  Home medications as listed above.,"
    "DISCHARGE INSTRUCTIONS:,  He will follow up with his primary care physician in one week and with "
    "pulmonology in four weeks.  He was told to return for worsening shortness of breath, chest pain or fever.  "
    "Smoking cessation was reinforced.  The patient and his wife verbalized understanding of the plan."
)


SYMPTOMS = ("chest pain", "shortness of breath", "fever", "cough", "nausea", "headache", "back pain",
            "dizziness", "palpitations", "abdominal pain")


def labelled_rows(count: int) -> list[dict[str, str]]:
    """Short notes, half of them negated findings, with an id, a text and a label column."""
    rows = []
    for index in range(count):
        symptom = SYMPTOMS[index % len(SYMPTOMS)]
        negated = index % 2 == 1
        text = (f"Patient {index} denies {symptom} today." if negated
                else f"Patient {index} reports {symptom} since yesterday.")
        rows.append({"id": f"N{index:03d}", "text": text, "finding": "negated" if negated else "affirmed"})
    return rows
