"""Groups of a note's word pieces that an explanation is read by: pieces, words, sentences, sections.

The sentences and sections are the ones the Note page shows (:func:`cbert_core.text.segment.segment`,
through the run plan). Every content piece of the note belongs to exactly one group:

* ``piece``: itself; ``word``: its word (the tokenizer's pre-tokenized word);
* ``sentence``: the sentence holding its first character; a piece outside every sentence (a section
  header, MTSamples' comma between two sentences) goes with the first sentence of its section when it
  is that section's header, else with the sentence before it;
* ``section``: the section holding its first character (headers belong to their section). A note
  without any section header falls back to sentences (:attr:`Groups.fell_back` says so).

A group's score is the sum of its pieces' scores, so the scores of every grouping add up to the
same total; a group's *share* is its score over the sum of every group's absolute score (signed,
the absolute shares add up to 1).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cbert_core.records import frozen_array
from cbert_core.run.plan import NotePlan

Grouping = Literal["piece", "word", "sentence", "section"]
GROUPINGS: tuple[Grouping, ...] = ("piece", "word", "sentence", "section")
EXCERPT_CHARS = 48
UNTITLED_SECTION = "(before the first header)"


@dataclass(frozen=True, kw_only=True)
class Groups:
    """A partition of the note's content pieces into groups, in text order."""

    asked: Grouping  # what the caller asked for
    grouping: Grouping  # what was used: "sentence" when sections were asked of a note without headers
    labels: tuple[str, ...]  # [g]: the piece, the word, a sentence excerpt or a section title
    spans: np.ndarray  # int32 [g, 2]: characters of the note each group covers, in text order, not overlapping
    members: np.ndarray  # int32 [n]: group of each content piece

    def __post_init__(self) -> None:
        g = len(self.labels)
        if self.spans.shape != (g, 2):
            raise ValueError("Groups.spans must be [g, 2]")
        if self.members.ndim != 1 or (self.members.size and not 0 <= self.members.min() <= self.members.max() < g):
            raise ValueError("Groups.members must be [n] group indices")
        frozen_array(self.spans)
        frozen_array(self.members)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def fell_back(self) -> bool:
        """Sections were asked for but the note has no section header: sentences were used."""
        return self.asked != self.grouping

    @property
    def sizes(self) -> np.ndarray:
        """int64 [g]: pieces per group."""
        return np.bincount(self.members, minlength=len(self.labels))


def _excerpt(text: str, start: int, end: int) -> str:
    words = " ".join(text[start:end].split())
    return words if len(words) <= EXCERPT_CHARS else words[:EXCERPT_CHARS - 1].rstrip() + "…"


def _sentence_members(plan: NotePlan, starts: np.ndarray) -> np.ndarray:
    """int64 [n]: the sentence of each piece (see the module docstring)."""
    segmentation = plan.segmentation
    sentences = segmentation.sentences
    sentence_starts = [sentence.start for sentence in sentences]
    first_of_section: dict[int, int] = {}
    for index, sentence in enumerate(sentences):
        first_of_section.setdefault(sentence.section, index)
    members = np.zeros(starts.size, np.int64)
    for piece, char in enumerate(starts.tolist()):
        before = bisect.bisect_right(sentence_starts, char) - 1
        if before >= 0 and char < sentences[before].end:
            members[piece] = before
            continue
        section = segmentation.section_at(char)
        in_header = section >= 0 and char < segmentation.sections[section].body_start
        if in_header and section in first_of_section:
            members[piece] = first_of_section[section]
        else:
            members[piece] = max(before, 0)
    return members


def note_groups(plan: NotePlan, grouping: Grouping) -> Groups:
    """The note's content pieces grouped by ``grouping`` (sections fall back to sentences without headers).

    Raises:
        ValueError: an unknown grouping.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; choose one of {', '.join(GROUPINGS)}")
    text, note = plan.text, plan.tokens
    offsets = np.asarray(note.offsets, np.int64).reshape(-1, 2)
    used: Grouping = grouping
    if grouping == "section" and not any(section.title for section in plan.segmentation.sections):
        used = "sentence"
    labels: list[str]
    if used == "piece":
        members = np.arange(len(note), dtype=np.int64)
        labels = list(note.tokens)
        outer = offsets
    elif used == "word":
        words = np.asarray(note.word_ids, np.int64)
        present, members = np.unique(words, return_inverse=True)
        word_spans = np.asarray(note.word_spans, np.int64).reshape(-1, 2)[present]
        labels = [text[a:b] for a, b in word_spans.tolist()]
        outer = word_spans
    elif used == "sentence" and plan.segmentation.sentences:
        members = _sentence_members(plan, offsets[:, 0])
        sentences = plan.segmentation.sentences
        outer = np.array([(s.start, s.end) for s in sentences], np.int64).reshape(-1, 2)
        labels = [_excerpt(text, s.start, s.end) for s in sentences]
    elif used == "section":
        segmentation = plan.segmentation
        members = np.array([max(segmentation.section_at(char), 0) for char in offsets[:, 0].tolist()], np.int64)
        outer = np.array([(s.start, s.end) for s in segmentation.sections], np.int64).reshape(-1, 2)
        labels = [s.title or UNTITLED_SECTION for s in segmentation.sections]
    else:  # sentences asked of a note the splitter found none in: the note is one group
        members = np.zeros(len(note), np.int64)
        outer = np.array([[0, len(text)]], np.int64)
        labels = [_excerpt(text, 0, len(text))]
    # Keep the groups that hold a piece, numbered in text order; a group's span covers its pieces too.
    kept, members = np.unique(members, return_inverse=True)
    spans = outer[kept].copy()
    if members.size:
        np.minimum.at(spans[:, 0], members, offsets[:, 0])
        np.maximum.at(spans[:, 1], members, offsets[:, 1])
    spans[1:, 0] = np.maximum(spans[1:, 0], spans[:-1, 1])  # never overlapping, so the note can be shaded by group
    spans[:, 0] = np.minimum(spans[:, 0], spans[:, 1])
    return Groups(asked=grouping, grouping=used, labels=tuple(labels[int(k)] for k in kept),
                  spans=spans.astype(np.int32), members=members.astype(np.int32))


def group_scores(piece_scores: np.ndarray, groups: Groups) -> np.ndarray:
    """float64 [g]: the sum of each group's piece scores.

    Args:
        piece_scores: float [n] a score per content piece of the note.
    """
    if piece_scores.shape != groups.members.shape:
        raise ValueError("piece_scores must be [n], one per content piece of the note")
    return np.bincount(groups.members, weights=np.asarray(piece_scores, np.float64), minlength=len(groups))


def shares(scores: np.ndarray) -> np.ndarray:
    """float64 [g]: each score over the sum of absolute scores (0 everywhere when all are 0)."""
    scores = np.asarray(scores, np.float64)
    total = np.abs(scores).sum()
    return scores / total if total > 0 else np.zeros_like(scores)


def spread(values: np.ndarray, groups: Groups) -> np.ndarray:
    """float64 [n]: each group's value divided evenly among its pieces (a perturbation method's group score
    as piece scores, so that :func:`group_scores` gives it back).

    Args:
        values: float [g].
    """
    sizes = groups.sizes
    return np.asarray(values, np.float64)[groups.members] / sizes[groups.members]
