"""Clinical features of each note, computed from its text, to slice a collection by.

* **negation cue** and **uncertainty cue**: whether a NegEx-style trigger puts some word of the note in
  its scope. negspacy's Negex component runs on a blank English spaCy pipeline (no model download),
  with every word marked as a candidate finding: for negation with negspacy's clinical trigger list
  (``en_clinical``: "denies", "no evidence of", "negative for", ..., with its pseudo-triggers such as
  "no increase" and its scope terminators such as "but"; hedges such as "cannot be excluded" added as
  pseudo-triggers, since they are uncertainty, not negation); for uncertainty with the ConText-style
  hedges of :mod:`cbert_core.evaluation.lexicon` and the same terminators.
* **section header**: the header of the section the note's first sentence sits in
  (:func:`cbert_core.text.segment.segment`), or "(none)".
* **de-id placeholder**: a MIMIC ``[** ... **]`` placeholder is present.
* **abbreviation**: a clinical abbreviation of :data:`cbert_core.evaluation.lexicon.ABBREVIATIONS`.
* **mostly upper case**: at least :data:`UPPER_SHARE` of the letters (and 8 letters or more) are capitals.
* **word pieces** and **windows** (:func:`length_features`): the note's length as the model read it.

Values are short strings ("yes"/"no", a header, a length range), one column per feature.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pandas as pd
import spacy
from negspacy.negation import Negex  # noqa: F401 - registers the "negex" pipeline component with spaCy
from negspacy.termsets import termset

from cbert_core.evaluation.lexicon import (
    ABBREVIATION_PATTERN,
    HEDGED_NEGATIONS,
    UNCERTAINTY_AFTER,
    UNCERTAINTY_BEFORE,
)
from cbert_core.progress import Progress, report
from cbert_core.text.segment import PLACEHOLDER, segment

NEGATION, UNCERTAINTY, SECTION = "negation cue", "uncertainty cue", "section header"
PLACEHOLDERS, ABBREVIATION, UPPER = "de-id placeholder", "abbreviation", "mostly upper case"
PIECES, WINDOWS = "word pieces", "windows"
TEXT_FEATURES = (NEGATION, UNCERTAINTY, SECTION, PLACEHOLDERS, ABBREVIATION, UPPER)
UPPER_SHARE = 0.6
PIECE_EDGES = (16, 32, 64, 128, 256, 510)  # word-piece ranges of the length slice
NO_SECTION = "(none)"
_LOCAL = threading.local()
_BATCH = 256


def _pipeline() -> spacy.language.Language:
    """One pipeline per thread (spaCy pipelines are not made to be shared between threads)."""
    nlp = getattr(_LOCAL, "nlp", None)
    if nlp is None:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        nlp.add_pipe("entity_ruler").add_patterns([{"label": "WORD", "pattern": [{"IS_ALPHA": True}]}])
        clinical = termset("en_clinical")
        clinical.add_patterns({"pseudo_negations": list(HEDGED_NEGATIONS)})  # a hedge, not a negation
        negation = clinical.get_patterns()
        nlp.add_pipe("negex", name="negation", config={"neg_termset": negation, "ent_types": ["WORD"],
                                                       "extension_name": "negated"})
        hedges = {"pseudo_negations": [], "preceding_negations": list(UNCERTAINTY_BEFORE),
                  "following_negations": list(UNCERTAINTY_AFTER), "termination": negation["termination"]}
        nlp.add_pipe("negex", name="uncertainty", config={"neg_termset": hedges, "ent_types": ["WORD"],
                                                          "extension_name": "uncertain"})
        _LOCAL.nlp = nlp
    return nlp


def cues(texts: Sequence[str], *, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(negated, uncertain): bool [note] each, whether some word of the note is in a cue's scope."""
    negated = np.zeros(len(texts), dtype=bool)
    uncertain = np.zeros(len(texts), dtype=bool)
    # Lower-cased: the triggers match lower-cased words anyway, and spaCy's tokenizer splits "cannot" into
    # "can not" (as the trigger lists are written) but leaves "CANNOT" whole.
    for index, doc in enumerate(_pipeline().pipe((text.lower() for text in texts), batch_size=_BATCH)):
        negated[index] = any(entity._.negated for entity in doc.ents)
        uncertain[index] = any(entity._.uncertain for entity in doc.ents)
        if (index + 1) % _BATCH == 0:
            report(progress, (index + 1) / len(texts), f"Reading cues: {index + 1:,} of {len(texts):,} notes")
    return negated, uncertain


def section_of(text: str) -> str:
    """The header of the section the first sentence of ``text`` sits in, or :data:`NO_SECTION`."""
    segmentation = segment(text)
    if not segmentation.sentences:
        return NO_SECTION
    title = segmentation.sections[segmentation.sentences[0].section].title.strip()
    return title.upper() if title else NO_SECTION


def mostly_upper(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) >= 8 and sum(ch.isupper() for ch in letters) >= UPPER_SHARE * len(letters)


def _yes(flags: Sequence[bool]) -> list[str]:
    return ["yes" if flag else "no" for flag in flags]


def text_features(texts: Sequence[str], *, progress: Progress | None = None) -> pd.DataFrame:
    """[note, feature]: the features of :data:`TEXT_FEATURES` as short strings (see the module notes)."""
    negated, uncertain = cues(texts, progress=progress)
    report(progress, 1.0, "Sections and abbreviations")
    return pd.DataFrame({
        NEGATION: _yes(negated), UNCERTAINTY: _yes(uncertain), SECTION: [section_of(text) for text in texts],
        PLACEHOLDERS: _yes(PLACEHOLDER.search(text) is not None for text in texts),
        ABBREVIATION: _yes(ABBREVIATION_PATTERN.search(text) is not None for text in texts),
        UPPER: _yes(mostly_upper(text) for text in texts),
    })


def piece_range(count: int) -> str:
    """The length range (word pieces) a note of ``count`` pieces falls in: "≤16", "17–32", ..., ">510"."""
    low = 0
    for edge in PIECE_EDGES:
        if count <= edge:
            return f"≤{edge}" if low == 0 else f"{low + 1}–{edge}"
        low = edge
    return f">{PIECE_EDGES[-1]}"


def length_features(n_tokens: np.ndarray, n_windows: np.ndarray) -> pd.DataFrame:
    """[note, feature]: word-piece range and windows ("1", "2", "3+")."""
    return pd.DataFrame({PIECES: [piece_range(int(n)) for n in n_tokens],
                         WINDOWS: [str(int(n)) if n < 3 else "3+" for n in n_windows]})
