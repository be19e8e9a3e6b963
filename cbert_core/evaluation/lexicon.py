"""Clinical word lists the features and the behaviour tests share, written for this project.

* :data:`ABBREVIATIONS`: common clinical abbreviations and what they stand for (the abbreviation feature
  and the abbreviation <-> expansion edit). Written as clinicians write them: capitals are part of
  the abbreviation ("PE" is pulmonary embolism, "pe" is not matched), dotted ones in lower case.
* :data:`UNCERTAINTY_BEFORE`, :data:`UNCERTAINTY_AFTER`: hedging cues in the spirit of the ConText
  algorithm's "probable" and "indication" triggers (Harkema et al. 2009), reworded here: negspacy
  (the NegEx component this project uses) ships negation triggers only, so the uncertainty cue runs
  the same component with these lists.
"""

from __future__ import annotations

import re

ABBREVIATIONS: dict[str, str] = {
    "SOB": "shortness of breath", "CP": "chest pain", "DOE": "dyspnea on exertion", "HA": "headache",
    "N/V": "nausea and vomiting", "PNA": "pneumonia", "COPD": "chronic obstructive pulmonary disease",
    "CHF": "congestive heart failure", "CAD": "coronary artery disease", "MI": "myocardial infarction",
    "HTN": "hypertension", "DM": "diabetes mellitus", "DVT": "deep vein thrombosis", "PE": "pulmonary embolism",
    "UTI": "urinary tract infection", "AFib": "atrial fibrillation", "GI bleed": "gastrointestinal bleeding",
    "abd": "abdominal", "CXR": "chest x-ray", "PTX": "pneumothorax", "BP": "blood pressure",
    "HR": "heart rate", "RR": "respiratory rate", "Pt": "Patient", "pt": "patient", "h/o": "history of",
    "Hx": "history", "hx": "history", "c/o": "complains of", "r/o": "rule out", "s/p": "status post",
    "w/": "with", "w/o": "without", "y/o": "year old", "b.i.d.": "twice a day", "t.i.d.": "three times a day",
    "q.d.": "every day", "p.o.": "by mouth", "p.r.n.": "as needed", "q.h.s.": "at bedtime",
}
# The longest first, so "GI bleed" wins over a shorter abbreviation inside it.
_ORDERED = sorted(ABBREVIATIONS, key=len, reverse=True)
ABBREVIATION_PATTERN = re.compile(
    r"(?<![\w/.])(?:" + "|".join(re.escape(short) for short in _ORDERED) + r")(?![\w/])")
EXPANSION_PATTERN = re.compile(
    r"\b(?:" + "|".join(re.escape(ABBREVIATIONS[short]) for short in _ORDERED if len(ABBREVIATIONS[short]) > 4)
    + r")\b", re.IGNORECASE)
EXPANSIONS: dict[str, str] = {}
for _short in _ORDERED:  # an expansion written several ways goes back to its first (longest) abbreviation
    EXPANSIONS.setdefault(ABBREVIATIONS[_short].lower(), _short)

UNCERTAINTY_BEFORE: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably", "likely", "suspect", "suspected", "suspicious for",
    "concerning for", "worrisome for", "questionable", "question of", "cannot rule out", "can not rule out",
    "cannot exclude", "may represent", "might represent", "could represent", "may be", "rule out", "r/o",
    "differential includes", "versus", "presumed", "presumably", "equivocal", "borderline", "suggestive of",
    "suggests", "vs",
)
UNCERTAINTY_AFTER: tuple[str, ...] = (
    "is suspected", "cannot be excluded", "can not be excluded", "cannot be ruled out", "is not excluded",
    "is possible", "is likely", "is questionable", "is probable", "versus", "vs",
)
# Hedges that hold a negation word ("not", "out") but do not negate: pseudo-triggers for the negation cue.
HEDGED_NEGATIONS: tuple[str, ...] = (
    "cannot be excluded", "can not be excluded", "cannot be ruled out", "can not be ruled out", "cannot rule out",
    "can not rule out", "cannot exclude", "is not excluded", "not been excluded", "not ruled out",
)
