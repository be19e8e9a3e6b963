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
