"""Clinical segmentation: section headers and sentences, with character offsets.

Sentences come from pysbd (a rule-based splitter with good abbreviation
handling). Clinical text trips it in known ways, so before pysbd sees the text
we mask, character for character (offsets stay valid):

* MIMIC de-identification placeholders ``[** ... **]`` (kept whole),
* dosing abbreviations such as ``b.i.d.``, ``q.d.``, ``p.o.``, ``q.h.s.``.

Sections are found by header patterns: ALL-CAPS headers (``HISTORY OF PRESENT
ILLNESS:``, also inline as in MTSamples' ``DIAGNOSIS: ,...``) and title-case
headers at a line start that use a clinical header word (``Assessment/Plan:``).
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass

import pysbd

PLACEHOLDER = re.compile(r"\[\*\*.*?\*\*\]", re.DOTALL)
# Letter groups joined by dots: b.i.d., q.d., p.o., q.h.s., t.i.d., p.r.n., e.g., a.m.
DOTTED_ABBREVIATION = re.compile(r"(?<![\w.])(?:[A-Za-z]{1,3}\.){2,}")
SENTENCE_START_AFTER = re.compile(r"\s+[A-Z][a-z]")
ALL_CAPS_HEADER = re.compile(
    r"(?:(?<=^)|(?<=\n)|(?<=[.;]\s)|(?<=,\s)|(?<=\.\s\s))[ \t]*"
    r"(?P<title>[A-Z][A-Z0-9/&()' -]*[A-Z)])[ \t]*:(?!\d)",
    re.MULTILINE,
)
TITLE_CASE_HEADER = re.compile(
    r"^[ \t]*(?P<title>[A-Z][A-Za-z]+(?:[ /&-]+[A-Za-z]+){0,5})[ \t]*:(?!\d)",
    re.MULTILINE,
)
HEADER_WORDS = frozenset("""
    history illness assessment plan impression medications medication allergies allergy exam examination
    diagnosis diagnoses course complaint labs laboratory results findings procedure procedures disposition
    instructions vitals vital review systems social family past hpi subjective objective recommendations
    followup indication indications technique comparison condition discharge admission summary studies
    imaging medical surgical problem problems signs pmh psh ros note reason consult consultation operation
    anesthesia specimen complications narrative data
""".split())
LIST_OR_BLANK_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:\d{1,2}[.)]|[-*\u2022])\s)")


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
    """The text with placeholders and dotted abbreviations masked, same length."""
    chars = list(text)
    for match in PLACEHOLDER.finditer(text):
        chars[match.start():match.end()] = "X" * (match.end() - match.start())
    for match in DOTTED_ABBREVIATION.finditer(text):
        start, end = match.span()
        keeps_final_dot = SENTENCE_START_AFTER.match(text, end) is not None
        for index in range(start, end - 1 if keeps_final_dot else end):
            if chars[index] == ".":
                chars[index] = "_"
    return "".join(chars)


def find_sections(text: str) -> list[tuple[str, int, int]]:
    """Header (title, start, end-after-colon) triples in text order, placeholders excluded."""
    blocked = [match.span() for match in PLACEHOLDER.finditer(text)]

    def inside_placeholder(position: int) -> bool:
        return any(start <= position < end for start, end in blocked)

    headers: dict[int, tuple[str, int, int]] = {}
    for match in ALL_CAPS_HEADER.finditer(text):
        title = match.group("title").strip()
        if sum(ch.isalpha() for ch in title) >= 3 and not inside_placeholder(match.start("title")):
            headers[match.start("title")] = (title, match.start("title"), match.end())
    for match in TITLE_CASE_HEADER.finditer(text):
        title = match.group("title").strip()
        words = {word.lower() for word in re.split(r"[ /&-]+", title) if word}
        if words & HEADER_WORDS and not inside_placeholder(match.start("title")):
            headers.setdefault(match.start("title"), (title, match.start("title"), match.end()))
    return [headers[start] for start in sorted(headers)]


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
            while piece_end > piece_start and text[piece_end - 1].isspace():
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
