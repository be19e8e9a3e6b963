"""Character spans with labels, checked, and aligned to word pieces (and back) for a tagger.

A span is ``text[start:end]`` with a label ("negated"); an example is a text with its spans. The tagger
learns BIO tags ("O", "B-negated", "I-negated") on *units*: every word piece, or only the first piece of
each word (the other pieces are then ignored by the loss, as the Predictions page reads a word by its
first piece). A span covers the units whose characters it overlaps, so a span that starts or ends inside
a word piece (or a word, in first-piece mode) is widened to whole units; such spans are counted. Two
spans that overlap each other, or share a unit, cannot be told apart by BIO tags and are refused, as are
spans past the end of their text. Units map back to characters through the pieces' offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbert_core.errors import DataFileError
from cbert_core.records import frozen
from cbert_core.text.examples import EXAMPLE_SPANS
from cbert_core.text.tokens import NoteTokens

IGNORED = -100  # the label a loss skips (torch's CrossEntropyLoss ignore_index)
OUTSIDE = "O"


@dataclass(frozen=True, kw_only=True)
class Span:
    """``text[start:end]`` labelled ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, kw_only=True)
class SpanExample:
    """One text and its spans, sorted by start."""

    text: str
    spans: tuple[Span, ...]


@dataclass(frozen=True, kw_only=True)
class SpanDataset:
    """Texts with labelled spans, ready to train a tagger on."""

    examples: tuple[SpanExample, ...]
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> tuple[str, ...]:
        """The span labels, sorted."""
        return tuple(sorted({span.label for example in self.examples for span in example.spans}))

    @property
    def tag_names(self) -> tuple[str, ...]:
        """"O", then "B-<label>" and "I-<label>" for each label: the tagger's classes."""
        return (OUTSIDE, *(f"{prefix}-{label}" for label in self.labels for prefix in ("B", "I")))

    @property
    def span_count(self) -> int:
        return sum(len(example.spans) for example in self.examples)


def check_spans(text: str, spans: Sequence[Span], where: str) -> tuple[Span, ...]:
    """``spans`` sorted by start, after checking they fit ``text`` and do not overlap.

    Args:
        where: names the example in messages ("Row 3").

    Raises:
        DataFileError: a span past the end of the text, empty or reversed, without a label, or two spans
            overlapping (BIO tags cannot hold both).
    """
    ordered = sorted(spans, key=lambda span: (span.start, span.end))
    for span in ordered:
        if not str(span.label).strip():
            raise DataFileError(f"{where}: the span at characters {span.start}-{span.end} has no label.")
        if span.start < 0 or span.end > len(text):
            raise DataFileError(f"{where}: the span '{span.label}' at characters {span.start}-{span.end} lies past "
                                f"the text, which has {len(text)} characters. Check the offsets (0-based, end "
                                f"excluded) against the text as written in the file.")
        if span.end <= span.start:
            raise DataFileError(f"{where}: the span '{span.label}' at characters {span.start}-{span.end} is empty or "
                                f"reversed (its end must come after its start).")
    for first, second in zip(ordered, ordered[1:]):
        if second.start < first.end:
            raise DataFileError(
                f"{where}: the spans '{text[first.start:first.end]}' ({first.label}, characters {first.start}-"
                f"{first.end}) and '{text[second.start:second.end]}' ({second.label}, characters {second.start}-"
                f"{second.end}) overlap. A tagger gives each word one label: keep one of them, or split them.")
    return tuple(ordered)


def spans_of_phrases(text: str, phrases: Sequence[tuple[str, str]], where: str) -> tuple[Span, ...]:
    """Spans from (phrase, label) pairs, each phrase found in ``text`` after the previous one.

    Raises:
        DataFileError: a phrase that is not in the text (after the previous phrase).
    """
    spans, cursor = [], 0
    for phrase, label in phrases:
        start = text.find(phrase, cursor)
        if start < 0:
            raise DataFileError(f"{where}: '{phrase}' is not in the text.")
        spans.append(Span(start=start, end=start + len(phrase), label=label))
        cursor = start + len(phrase)
    return check_spans(text, spans, where)


@dataclass(frozen=True, kw_only=True)
class AlignedTags:
    """An example's spans as tags on its word pieces."""

    tags: np.ndarray  # int64 [n]: tag id per piece; IGNORED where a piece is not a unit
    units: np.ndarray  # int64 [u]: the pieces that carry a tag (every piece, or each word's first piece)
    unit_spans: np.ndarray  # int32 [u, 2]: characters of each unit (its piece, or its whole word)
    widened: int  # spans that started or ended inside a unit (widened to whole units)

    def __post_init__(self) -> None:
        if self.units.shape != (len(self.unit_spans),) or self.unit_spans.shape[1:] != (2,):
            raise ValueError("AlignedTags.units must be [u] and unit_spans [u, 2]")
        frozen(self.tags, self.units, self.unit_spans)

    def unit_tags(self) -> np.ndarray:
        """int64 [u]: the tag of each unit."""
        return self.tags[self.units]


def tagging_units(tokens: NoteTokens, all_pieces: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [u] unit pieces, int32 [u, 2] their characters): every piece, or each word's first piece
    standing for the whole word."""
    if all_pieces:
        return np.arange(len(tokens), dtype=np.int64), np.asarray(tokens.offsets, dtype=np.int32).reshape(-1, 2)
    first = np.unique(tokens.word_ids, return_index=True)[1].astype(np.int64)  # [word] first piece of each word
    return first, np.asarray(tokens.word_spans, dtype=np.int32)[tokens.word_ids[first]].reshape(-1, 2)


def align_spans(tokens: NoteTokens, spans: Sequence[Span], tag_ids: dict[str, int], *, all_pieces: bool,
                where: str = "The example") -> AlignedTags:
    """BIO tags for ``spans`` (checked by :func:`check_spans`) on ``tokens``' units.

    A span tags every unit whose characters it overlaps: B- on the first, I- on the rest; units outside
    every span are "O". Pieces that are not units get :data:`IGNORED`.

    Raises:
        DataFileError: a span covering no word piece (only spaces), or two spans sharing one unit.
    """
    units, unit_spans = tagging_units(tokens, all_pieces)
    tags = np.full(len(tokens), IGNORED, dtype=np.int64)
    tags[units] = tag_ids[OUTSIDE]
    owner = np.full(len(units), -1, dtype=np.int64)
    widened = 0
    unit_name = "word piece" if all_pieces else "word"
    for index, span in enumerate(spans):
        covered = np.flatnonzero((unit_spans[:, 0] < span.end) & (unit_spans[:, 1] > span.start))
        if covered.size == 0:
            raise DataFileError(f"{where}: the span '{span.label}' at characters {span.start}-{span.end} covers no "
                                f"word (only spaces or symbols the model does not read).")
        shared = covered[owner[covered] >= 0]
        if shared.size:
            other = spans[int(owner[shared[0]])]
            raise DataFileError(f"{where}: the spans at characters {other.start}-{other.end} and {span.start}-"
                                f"{span.end} fall in the same {unit_name}, which can carry only one label. Merge "
                                f"them, or choose 'all word pieces' if they are in different pieces.")
        owner[covered] = index
        widened += int(unit_spans[covered[0], 0] != span.start or unit_spans[covered[-1], 1] != span.end)
        tags[units[covered]] = tag_ids[f"I-{span.label}"]
        tags[units[covered[0]]] = tag_ids[f"B-{span.label}"]
    return AlignedTags(tags=tags, units=units, unit_spans=unit_spans, widened=widened)



def example_dataset() -> SpanDataset:
    """The built-in example: conditions in short clinical sentences with their assertion
    (:data:`cbert_core.text.examples.EXAMPLE_SPANS`)."""
    return SpanDataset(examples=tuple(
        SpanExample(text=text, spans=spans_of_phrases(text, phrases, f"Example {number}"))
        for number, (text, phrases) in enumerate(EXAMPLE_SPANS, start=1)))
