"""Behaviour tests in the spirit of CheckList (Ribeiro et al. 2020): edit each note in a way that matters in
clinical text and see whether the prediction moves.

Each :class:`BehaviourTest` makes at most one :class:`Edit` of a note (None when it does not apply):

* **negation flip** (directional: a negation-aware prediction should change): "denies X" <-> "reports X",
  "no X" <-> "X", "negative for" <-> "positive for", ...;
* **uncertainty** (invariance by default): "possible" before an affirmed finding, or a hedge removed;
* **abbreviation <-> expansion** (invariance): "SOB" <-> "shortness of breath";
* **de-id placeholder <-> name or date** (invariance): ``[**2101-3-4**]`` <-> "03/04/2101",
  ``[**Last Name 123**]`` <-> "Smith";
* **case change** (invariance): "COPD" <-> "copd", an all-capitals radiology sentence in sentence case;
* **number change** (invariance): each number one higher ("3 days" -> "4 days").

An edit is a list of (start, end, replacement) character spans of the original note, so it can be
shown, applied, and opened as a counterfactual edit on the Attribution page. :func:`compare` scores a
test from the predictions before and after: the share of predictions that changed, and the failures
(changed where they should stay, stayed where they should change).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cbert_core.evaluation.lexicon import ABBREVIATION_PATTERN, ABBREVIATIONS, EXPANSION_PATTERN, EXPANSIONS
from cbert_core.records import frozen
from cbert_core.text.segment import PLACEHOLDER

Expectation = Literal["change", "same"]


@dataclass(frozen=True, kw_only=True)
class Edit:
    """Replacements of character spans of a note, in order, not overlapping."""

    spans: tuple[tuple[int, int, str], ...]  # (start, end, replacement) in the original note

    def apply(self, text: str) -> str:
        out, last = [], 0
        for start, end, replacement in self.spans:
            out += [text[last:start], replacement]
            last = end
        return "".join(out) + text[last:]

    def one_word(self, text: str) -> tuple[int, int, str] | None:
        """The edit as one word of ``text`` replaced by non-empty text (words both sides share trimmed off), as
        the Attribution page's counterfactual edit takes it; None when it is not one word's replacement."""
        if len(self.spans) != 1:
            return None
        start, end, replacement = self.spans[0]
        old, new = text[start:end].split(" "), replacement.split(" ")
        while len(old) > 1 and len(new) > 1 and old[-1] == new[-1]:
            old, new = old[:-1], new[:-1]
        while len(old) > 1 and len(new) > 1 and old[0] == new[0]:
            start += len(old[0]) + 1
            old, new = old[1:], new[1:]
        word = " ".join(old)
        if len(old) != 1 or not word.strip() or not " ".join(new).strip() or not re.fullmatch(r"[\w/'-]+", word):
            return None
        return start, start + len(word), " ".join(new)

    def describe(self, text: str) -> str:
        """"'denies' → 'reports'" (the first spans, shortened)."""
        parts = [f"'{text[start:end]}' → '{replacement}'" for start, end, replacement in self.spans[:3]]
        return "; ".join(parts) + (f" (+{len(self.spans) - 3} more)" if len(self.spans) > 3 else "")


def _match_case(word: str, template: str) -> str:
    """``word`` written in ``template``'s case (all capitals, a capital first, or as it is)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _first_rule(text: str, rules: Sequence[tuple[str, str]]) -> Edit | None:
    """The earliest match in ``text`` of any (pattern, replacement) rule, case kept from the matched text."""
    best = None
    for pattern, replacement in rules:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match and (best is None or match.start() < best[0].start()):
            best = (match, replacement)
    if best is None:
        return None
    match, replacement = best
    written = _match_case(replacement, match.group()) if replacement else ""
    start, end = match.span()
    if not replacement:  # a removed cue: take the space after it, and capitalise what now starts the sentence
        while end < len(text) and text[end] == " ":
            end += 1
        if match.group()[:1].isupper() and end < len(text):
            return Edit(spans=((start, end + 1, text[end].upper()),))
    return Edit(spans=((start, end, written),))


# Negated -> affirmed, and affirmed -> negated; the earliest cue in the note is flipped.
_TO_AFFIRMED = (
    (r"\bdenies any\b", "reports"), (r"\bdenies\b", "reports"), (r"\bdenied\b", "reported"),
    (r"\bno evidence of\b", "evidence of"), (r"\bnegative for\b", "positive for"), (r"\bneg for\b", "pos for"),
    (r"\breports no\b", "reports"), (r"\bhas no\b", "has"), (r"\bthere is no\b", "there is"),
    (r"\bno family history of\b", "a family history of"), (r"\bwas ruled out\b", "was confirmed"),
    (r"\bhas not had any\b", "has had"), (r"\bwithout\b", "with"), (r"\bfree of\b", "troubled by"),
    (r"(?<![\w-])no\b(?! [\w-]+ (?:of|is|was)\b)", ""),
)
_TO_NEGATED = (
    (r"\breports\b", "denies"), (r"\bcomplains of\b", "denies"), (r"\bpresents with\b", "denies"),
    (r"\bc/o\b", "denies"), (r"\bpositive for\b", "negative for"), (r"\bsignificant for\b", "negative for"),
    (r"\bis present\b", "is absent"), (r"\bis seen\b", "is not seen"), (r"\bthere is a\b", "there is no"),
    (r"\bhas had\b", "has not had"), (r"\badmitted with\b", "admitted without"),
    (r"\bwas diagnosed with\b", "was never diagnosed with"), (r"\bhad\b", "never had"),
)
_NEGATED_CUE = re.compile("|".join(pattern for pattern, _ in _TO_AFFIRMED), re.IGNORECASE)


def negation_flip(text: str) -> Edit | None:
    """Flip the earliest negation cue to its affirmed form, or (with no negation cue) an affirmation to a negation."""
    if _NEGATED_CUE.search(text):
        return _first_rule(text, _TO_AFFIRMED)
    return _first_rule(text, _TO_NEGATED)


_HEDGES = ((r"\bpossible\b", ""), (r"\bcannot rule out\b", ""), (r"\bquestionable\b", ""), (r"\blikely\b", ""),
           (r"\bconcerning for\b", "consistent with"), (r"\bwe suspect\b", "we see"), (r"\bis suspected\b", "is seen"),
           (r"\bcannot be excluded\b", "is present"))
_ASSERTING = re.compile(r"\b(?:reports|presents with|complains of|positive for|admitted with|significant for|"
                        r"has had|diagnosed with|c/o|hx of|w/|IMPRESSION:|FINDINGS:)\s+", re.IGNORECASE)


def uncertainty(text: str) -> Edit | None:
    """Remove the earliest hedge ("possible", "cannot rule out"...), or put "possible" before an asserted finding."""
    hedged = _first_rule(text, _HEDGES)
    if hedged is not None:
        return hedged
    match = _ASSERTING.search(text)
    if match is None or _NEGATED_CUE.search(text[match.end():match.end() + 12]):
        return None
    letters = [ch for ch in text if ch.isalpha()]
    word = "POSSIBLE " if sum(ch.isupper() for ch in letters) >= 0.6 * len(letters) else "possible "
    return Edit(spans=((match.end(), match.end(), word),))


def abbreviation_swap(text: str) -> Edit | None:
    """Expand the first clinical abbreviation ("SOB" -> "shortness of breath"), or abbreviate the first expansion."""
    short = ABBREVIATION_PATTERN.search(text)
    if short is not None:
        return Edit(spans=((short.start(), short.end(), ABBREVIATIONS[short.group()]),))
    long = EXPANSION_PATTERN.search(text)
    if long is not None:
        return Edit(spans=((long.start(), long.end(), EXPANSIONS[long.group().lower()]),))
    return None


_DATE_INSIDE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_WRITTEN_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_DOCTOR_NAME = re.compile(r"\b(Dr\.) ([A-Z][a-z]+)\b")
_NAMES = ("Smith", "Jordan Lee", "Patel", "Garcia")


def placeholder_swap(text: str) -> Edit | None:
    """Each ``[** ... **]`` placeholder as a realistic date or name; without any, real dates and doctors'
    names as placeholders."""
    spans = []
    for number, match in enumerate(PLACEHOLDER.finditer(text)):
        date = _DATE_INSIDE.search(match.group())
        if date:
            year, month, day = date.groups()
            spans.append((match.start(), match.end(), f"{int(month):02d}/{int(day):02d}/{year}"))
        else:
            spans.append((match.start(), match.end(), _NAMES[number % len(_NAMES)]))
    if not spans:
        for match in _WRITTEN_DATE.finditer(text):
            month, day, year = match.groups()
            spans.append((match.start(), match.end(), f"[**{year}-{int(month)}-{int(day)}**]"))
        for match in _DOCTOR_NAME.finditer(text):
            spans.append((match.start(2), match.end(2), "[**Last Name 123**]"))
        spans.sort()
    return Edit(spans=tuple(spans)) if spans else None


_CAPITALS = re.compile(r"\b[A-Z][A-Z/]{1,}[A-Z]?\b")


def case_change(text: str) -> Edit | None:
    """An all-capitals note in sentence case; else its capitalised abbreviations in lower case ("COPD" -> "copd");
    else its lower-case clinical abbreviations in capitals."""
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(ch.isupper() for ch in letters) >= 0.6 * len(letters):
        lowered = text.lower()
        sentence_case = re.sub(r"(^|[.:!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), lowered)
        return Edit(spans=((0, len(text), sentence_case),)) if sentence_case != text else None
    spans = [(m.start(), m.end(), m.group().lower()) for m in _CAPITALS.finditer(text)
             if not PLACEHOLDER.search(text[max(0, m.start() - 3):m.end() + 3])]
    if not spans:
        spans = [(m.start(), m.end(), m.group().upper()) for m in ABBREVIATION_PATTERN.finditer(text)
                 if m.group() != m.group().upper()]
    return Edit(spans=tuple(spans)) if spans else None


_NUMBER = re.compile(r"(?<![\w./:-])\d+(?![\w/:-]|\.\d)")


def number_change(text: str) -> Edit | None:
    """Every whole number outside placeholders, dates, times and ratios one higher ("3 days" -> "4 days",
    "81 mg" -> "82 mg")."""
    hidden = PLACEHOLDER.sub(lambda m: "x" * len(m.group()), text)
    spans = [(m.start(), m.end(), str(int(m.group()) + 1)) for m in _NUMBER.finditer(hidden)]
    return Edit(spans=tuple(spans)) if spans else None


@dataclass(frozen=True, kw_only=True)
class BehaviourTest:
    """One kind of edit and what a sound model should do under it."""

    name: str
    expectation: Expectation  # the default; the page lets the user say otherwise for their task
    description: str
    edit: Callable[[str], Edit | None]


TESTS: dict[str, BehaviourTest] = {test.name: test for test in (
    BehaviourTest(name="negation flip", expectation="change", edit=negation_flip,
                  description="'denies X' ↔ 'reports X', 'no X' ↔ 'X': a model of assertion status should change "
                              "its prediction."),
    BehaviourTest(name="uncertainty", expectation="same", edit=uncertainty,
                  description="'possible X' added or a hedge removed: an uncertain finding is still not negated."),
    BehaviourTest(name="abbreviation ↔ expansion", expectation="same", edit=abbreviation_swap,
                  description="'SOB' ↔ 'shortness of breath': the same meaning."),
    BehaviourTest(name="de-id placeholder ↔ name or date", expectation="same", edit=placeholder_swap,
                  description="'[**2101-3-4**]' ↔ '03/04/2101', '[**Last Name**]' ↔ 'Smith': de-identification "
                              "should not change a clinical prediction."),
    BehaviourTest(name="case change", expectation="same", edit=case_change,
                  description="'COPD' ↔ 'copd', capitals ↔ sentence case: the same words."),
    BehaviourTest(name="number change", expectation="same", edit=number_change,
                  description="every number one higher ('3 days' → '4 days'): usually the same finding."),
)}


def edits(test: BehaviourTest, texts: Sequence[str], rows: Sequence[int] | None = None) -> list[tuple[int, Edit]]:
    """(row, edit) for each note of ``texts`` (or of ``rows`` only) the test applies to."""
    chosen = range(len(texts)) if rows is None else rows
    found = []
    for row in chosen:
        edit = test.edit(texts[int(row)])
        if edit is not None and edit.apply(texts[int(row)]) != texts[int(row)]:
            found.append((int(row), edit))
    return found


@dataclass(frozen=True, kw_only=True)
class BehaviourResult:
    """How a test went: for each edited note, the predicted class before and after."""

    name: str
    expectation: Expectation
    rows: np.ndarray  # int64 [edited]: collection rows
    edits: tuple[Edit, ...]  # [edited]
    before: np.ndarray  # int64 [edited]: predicted class of the original
    after: np.ndarray  # int64 [edited]: predicted class of the edited note
    before_prob: np.ndarray  # float32 [edited]: probability of the original's predicted class, before
    after_prob: np.ndarray  # float32 [edited]: ... and after the edit
    tested: int  # notes the test was tried on

    def __post_init__(self) -> None:
        frozen(self.rows, self.before, self.after, self.before_prob, self.after_prob)

    @property
    def changed(self) -> np.ndarray:
        """bool [edited]: the predicted class changed."""
        return self.before != self.after

    @property
    def failed(self) -> np.ndarray:
        """bool [edited]: changed where it should stay, or stayed where it should change."""
        return ~self.changed if self.expectation == "change" else self.changed

    @property
    def changed_share(self) -> float:
        return float(self.changed.mean()) if len(self.rows) else float("nan")

    @property
    def failure_rate(self) -> float:
        return float(self.failed.mean()) if len(self.rows) else float("nan")


def compare(test: BehaviourTest, expectation: Expectation, applied: Sequence[tuple[int, Edit]],
            before_probs: np.ndarray, after_probs: np.ndarray, tested: int) -> BehaviourResult:
    """Score a test from the original notes' probabilities (float [row, class], by collection row) and the edited
    notes' (float [edited, class], in the order of ``applied``)."""
    rows = np.asarray([row for row, _edit in applied], dtype=np.int64)
    original = np.asarray(before_probs, dtype=np.float32)[rows] if len(rows) else np.zeros((0, 1), np.float32)
    edited = np.asarray(after_probs, dtype=np.float32).reshape(len(rows), -1) if len(rows) else original
    before = original.argmax(-1).astype(np.int64)
    index = np.arange(len(rows))
    return BehaviourResult(name=test.name, expectation=expectation, rows=rows,
                           edits=tuple(edit for _row, edit in applied), before=before,
                           after=edited.argmax(-1).astype(np.int64), before_prob=original[index, before],
                           after_prob=edited[index, before], tested=tested)


Planned = tuple[tuple[str, tuple[tuple[int, Edit], ...]], ...]  # (test name, ((row, edit), ...)) per test


def plan_edits(names: Sequence[str], texts: Sequence[str], rows: Sequence[int] | None = None, *,
               limit: int = 1000) -> Planned:
    """The edits of each named test over ``rows`` of ``texts``, at most ``limit`` per test (evenly spread)."""
    planned = []
    for name in names:
        applied = edits(TESTS[name], texts, rows)
        if len(applied) > limit:
            applied = [applied[int(i)] for i in np.linspace(0, len(applied) - 1, limit).round()]
        planned.append((name, tuple(applied)))
    return tuple(planned)


def edited_texts(planned: Planned, texts: Sequence[str]) -> tuple[str, ...]:
    """Every test's edited notes, test after test, in the order of ``planned``."""
    return tuple(edit.apply(texts[row]) for _name, applied in planned for row, edit in applied)


def score_all(planned: Planned, expectations: dict[str, Expectation], before_probs: np.ndarray,
              after_probs: np.ndarray, tested: int) -> list[BehaviourResult]:
    """:func:`compare` for each test of ``planned``; ``after_probs`` are the predictions of :func:`edited_texts`."""
    results, start = [], 0
    for name, applied in planned:
        stop = start + len(applied)
        results.append(compare(TESTS[name], expectations.get(name, TESTS[name].expectation), applied, before_probs,
                               np.asarray(after_probs)[start:stop], tested))
        start = stop
    return results
