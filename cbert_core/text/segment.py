"""Clinical segmentation: section headers and sentences, with character offsets.

Sentences come from pysbd (a rule-based splitter with good abbreviation
handling). Clinical text trips it in known ways, so before pysbd sees the text
we mask, character for character (offsets stay valid):

* MIMIC de-identification placeholders ``[** ... **]`` (kept whole),
* dosing abbreviations such as ``b.i.d.``, ``q.d.``, ``p.o.``, ``q.h.s.``.

Sections are found by their headers: a title followed by ``:`` that starts where
a line would start. That is the start of the text or of a line, the end of a
sentence (``". "``), another header's colon, or a comma: MTSamples writes a
comma where the original note had a line break (``"...hip pain.,ALLERGIES:,  No
known drug allergies.,PAST MEDICAL HISTORY:,  Anxiety..."``). Two kinds of
title count there:

* ALL CAPS (``HISTORY OF PRESENT ILLNESS``, ``PHYSICAL EXAMINATION``,
  ``HEENT``) with at least three letters, or a known short form (``CC``,
  ``PE``, ``A/P``);
* title or sentence case (``Assessment/Plan``, ``Vital signs``, ``Brief
  Hospital Course``) whose last word is a clinical header word
  (:data:`HEADER_LAST_WORDS`); after a comma only when the comma touches it.

Never a header: a colon followed by a digit (times ``10:30``, ratios ``1:1``),
anything inside a placeholder, a name after an initial or a title (``Dr. A.
Smith:``), or a phrase that is part of a sentence (``She was seen and her
vitals: stable``).
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass

import pysbd

PLACEHOLDER = re.compile(r"\[\*\*.*?\*\*\]", re.DOTALL)
# Letter groups joined by dots: b.i.d., q.d., p.o., q.h.s., t.i.d., p.r.n., e.g., a.m., q.4h.
DOTTED_ABBREVIATION = re.compile(r"(?<![\w.])[A-Za-z]{1,3}\.(?:\d{0,2}[A-Za-z]{1,3}\.)+")
SENTENCE_START_AFTER = re.compile(r"\s+[A-Z][a-z]")
# A blank line, a line that starts a list item, or MTSamples' comma for a line break before a
# numbered item ("DISCHARGE DIAGNOSIS:,1.  Respiratory failure.,2.  Hypotension.") end a sentence.
# It is matched on the masked text, where a list number's dot is already "_".
LIST_OR_BLANK_BREAK = re.compile(
    r"\n[ \t]*\n|\n(?=[ \t]*(?:\d{1,2}[._)]|[-*\u2022])\s)|(?<!\d),(?=[ \t]*\d{1,2}[._)][ \t])")
# The number of a list item at a line start (or after MTSamples' comma): "1.  Respiratory failure."
# is one sentence, not "1." and another.
LIST_NUMBER = re.compile(r"(?:^|(?<!\d),)[ \t]*\d{1,2}(?P<dot>\.)(?=[ \t])", re.MULTILINE)

# Characters a header title is made of; the title runs back from its colon over these.
_TITLE_PUNCTUATION = frozenset(" \t/&()'-")
_MAX_CAPS_WORDS = 8
_MAX_TITLE_CASE_WORDS = 5
SHORT_CAPS_HEADERS = frozenset({"A/P", "A&P", "CC", "CN", "CV", "DX", "FH", "GI", "GU", "HX", "PE", "SH"})
# Words a title- or sentence-case header can end with (its head noun): "Chief Complaint", "Review of
# Systems", "Code Status", "Medications on Admission", and the parts of a physical examination.
HEADER_LAST_WORDS = frozenset("""
    history illness complaint complaints hpi subjective objective assessment assessments plan plans
    impression impressions recommendation recommendations medication medications meds allergy allergies
    exam examination exams diagnosis diagnoses problem problems pmh psh ros systems course summary
    disposition instructions followup follow-up education counseling condition status visit referral
    admission discharge consult consultation indication indications technique comparison findings
    results labs laboratory data studies imaging procedure procedures operation anesthesia specimen
    specimens complications addendum treatment therapy
    vitals signs appearance general gen constitutional heent head eyes ears nose throat mouth neck
    face chest breast breasts back lungs lung pulmonary pulm respiratory resp heart cardiac cardiovascular
    abdomen abd gastrointestinal genitourinary pelvic rectal extremities extremity ext skin
    integumentary lymphatic neurologic neurological neuro musculoskeletal msk psychiatric psych
    hematologic endocrine
""".split())
# First words that make a colon phrase part of a sentence, not a title ("Her vitals:", "The plan:").
_SENTENCE_FIRST_WORDS = frozenset("""
    a an the this that these those his her hers their its our my your he she they we i it there here
    and or but with without for of to in on at by as if when while then no not
""".split())
# Small words a title keeps in lower case ("Review of Systems", "Assessment and Plan").
_TITLE_CONNECTORS = frozenset({"of", "and", "or", "on", "at", "for", "to", "in", "the", "with", "without"})
# A period after these does not end a sentence ("Dr. A. Smith:" is a name, not a header).
_TITLE_ABBREVIATIONS = frozenset({"dr", "drs", "mr", "mrs", "ms", "st", "prof", "sr", "jr", "vs"})
_WORD = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*")


@dataclass(frozen=True, kw_only=True)
class Section:
    """A section: its header (may be empty for text before the first header) and its body."""

    title: str
    start: int  # first character of the header (or of the body when there is no header)
    body_start: int
    end: int  # one past the last character of the section


@dataclass(frozen=True, kw_only=True)
class Sentence:
    start: int
    end: int
    section: int  # index into Segmentation.sections


@dataclass(frozen=True, kw_only=True)
class Segmentation:
    """Sections and sentences of a note; offsets index the original text."""

    sections: tuple[Section, ...]
    sentences: tuple[Sentence, ...]
    placeholders: tuple[tuple[int, int], ...]  # de-identification spans [** ... **]

    def sentence_at(self, char: int) -> int:
        """Index of the sentence holding ``char`` (the nearest one before it, or -1)."""
        starts = [sentence.start for sentence in self.sentences]
        return bisect.bisect_right(starts, char) - 1

    def section_at(self, char: int) -> int:
        """Index of the section holding ``char`` (-1 before the first section)."""
        starts = [section.start for section in self.sections]
        return bisect.bisect_right(starts, char) - 1


_LOCAL = threading.local()


def _segmenter() -> pysbd.Segmenter:
    """One pysbd segmenter per thread: ``Segmenter.segment`` keeps the text it is working
    on in an attribute, so a shared instance could mix two sessions' notes."""
    segmenter = getattr(_LOCAL, "segmenter", None)
    if segmenter is None:
        segmenter = _LOCAL.segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return segmenter


def mask_for_sentences(text: str) -> str:
    """The text with placeholders, dotted abbreviations and list numbers' dots masked, same length."""
    chars = list(text)
    for match in PLACEHOLDER.finditer(text):
        chars[match.start():match.end()] = "X" * (match.end() - match.start())
    for match in LIST_NUMBER.finditer(text):
        chars[match.start("dot")] = "_"
    for match in DOTTED_ABBREVIATION.finditer(text):
        start, end = match.span()
        keeps_final_dot = SENTENCE_START_AFTER.match(text, end) is not None
        for index in range(start, end - 1 if keeps_final_dot else end):
            if chars[index] == ".":
                chars[index] = "_"
    return "".join(chars)


def _blank_placeholders(text: str) -> str:
    """The text with every placeholder character replaced by NUL (never part of a title), same length."""
    return PLACEHOLDER.sub(lambda match: "\0" * (match.end() - match.start()), text)


def _ends_sentence_at(text: str, position: int) -> bool:
    """Whether the punctuation at ``text[position]`` ends what came before (a sentence or a header)."""
    mark = text[position]
    if mark in "\"')" and position > 0 and text[position - 1] in ".!?":
        return True
    if mark in "!?;:":
        return True
    if mark != ".":
        return False
    start, limit = position, max(0, position - 8)  # an initial or a title is short: look no further back
    while start > limit and not text[start - 1].isspace():
        start -= 1
    token = text[start:position].lstrip("([\"'")
    return not ((len(token) == 1 and token.isalpha()) or token.lower() in _TITLE_ABBREVIATIONS)


def _at_line_start(text: str, start: int, *, comma_must_touch: bool) -> bool:
    """Whether a title starting at ``start`` starts where a line would (see the module docstring)."""
    position = start - 1
    while position >= 0 and text[position] in " \t":
        position -= 1
    if position < 0 or text[position] in "\n\r":
        return True
    if text[position] != ",":
        return _ends_sentence_at(text, position)
    if not comma_must_touch or position == start - 1:
        return True
    before = position - 1  # ", Title:" after a comma with a space: only where the comma follows a full stop
    while before >= 0 and text[before] in " \t,":
        before -= 1
    return before < 0 or text[before] in "\n\r" or _ends_sentence_at(text, before)


def _is_caps_title(title: str) -> bool:
    letters = sum(ch.isalpha() for ch in title)
    return (title[-1].isalpha() or title[-1] == ")") and len(title.split()) <= _MAX_CAPS_WORDS and (
        letters >= 3 or title in SHORT_CAPS_HEADERS)


def _is_title_case_title(title: str) -> bool:
    """Title case ("Review of Systems") or sentence case with at most three content words ("Vital
    signs", "History of present illness"), ending in a header word; a mix ("Patient arrived and
    Vitals") is the end of a sentence, not a title."""
    words = _WORD.findall(title)
    if not (0 < len(words) <= _MAX_TITLE_CASE_WORDS and title[-1].isalpha()
            and words[0].lower() not in _SENTENCE_FIRST_WORDS and words[-1].lower() in HEADER_LAST_WORDS):
        return False
    rest = [word for word in words[1:] if word.lower() not in _TITLE_CONNECTORS and not word.isupper()]
    return all(word[0].isupper() for word in rest) or (
        len(rest) <= 2 and not any(word[0].isupper() for word in rest))


def find_sections(text: str) -> list[tuple[str, int, int]]:
    """Header (title, start, end-after-colon) triples in text order, placeholders excluded."""
    plain = _blank_placeholders(text)
    headers: list[tuple[str, int, int]] = []
    colon = plain.find(":")
    while colon != -1:
        if not plain[colon + 1:colon + 2].isdigit():
            start = colon
            while start > 0 and (plain[start - 1].isalnum() or plain[start - 1] in _TITLE_PUNCTUATION):
                start -= 1
            while start < colon and plain[start] in " \t":
                start += 1
            title = plain[start:colon].rstrip(" \t")
            if title and title[0].isalpha() and title[0].isupper():
                if title.upper() == title:
                    found = _is_caps_title(title) and _at_line_start(plain, start, comma_must_touch=False)
                else:
                    found = _is_title_case_title(title) and _at_line_start(plain, start, comma_must_touch=True)
                if found:
                    headers.append((title, start, colon + 1))
        colon = plain.find(":", colon + 1)
    return headers


def _sentence_spans(text: str, masked: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans inside text[start:end], stripped of surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    cuts = [start, *(m.end() + start for m in LIST_OR_BLANK_BREAK.finditer(masked[start:end])), end]
    for chunk_start, chunk_end in zip(cuts, cuts[1:]):
        chunk = masked[chunk_start:chunk_end]
        if not chunk.strip():
            continue
        for piece in _segmenter().segment(chunk):
            piece_start = chunk_start + piece.start
            piece_end = chunk_start + piece.end
            while piece_start < piece_end and (text[piece_start].isspace() or text[piece_start] in ",;:"):
                piece_start += 1
            while piece_end > piece_start and (text[piece_end - 1].isspace() or text[piece_end - 1] == ","):
                piece_end -= 1
            if piece_end > piece_start:
                spans.append((piece_start, piece_end))
    return spans


def segment(text: str) -> Segmentation:
    """Split a clinical note into sections and sentences.

    Args:
        text: the note as the user gave it.

    Returns:
        A :class:`Segmentation` whose offsets index ``text``.
    """
    masked = mask_for_sentences(text)
    headers = find_sections(text)
    sections: list[Section] = []
    first_header = headers[0][1] if headers else len(text)
    if text[:first_header].strip():
        sections.append(Section(title="", start=0, body_start=0, end=first_header))
    for index, (title, start, colon_end) in enumerate(headers):
        end = headers[index + 1][1] if index + 1 < len(headers) else len(text)
        sections.append(Section(title=title, start=start, body_start=colon_end, end=end))
    sentences: list[Sentence] = []
    for section_index, section in enumerate(sections):
        for start, end in _sentence_spans(text, masked, section.body_start, section.end):
            sentences.append(Sentence(start=start, end=end, section=section_index))
    placeholders = tuple(match.span() for match in PLACEHOLDER.finditer(text))
    return Segmentation(sections=tuple(sections), sentences=tuple(sentences), placeholders=placeholders)
