"""How a tokenizer splits a note: fertility, unknown pieces, and comparisons.

Comparisons align two tokenizations by characters: for every word of the first,
the pieces of the second that overlap the word's characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from cbert_core.text.tokens import NoteTokens, tokenize_note


@dataclass(frozen=True, kw_only=True)
class WordSplit:
    word: str
    start: int
    end: int
    pieces: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Fertility:
    """Pieces per word for one tokenization."""

    words: tuple[WordSplit, ...]
    mean_pieces: float
    unknown_count: int
    piece_count: int

    def most_split(self, count: int = 15) -> list[WordSplit]:
        """The words cut into the most pieces, longest first; ties by position."""
        ranked = sorted(self.words, key=lambda w: (-len(w.pieces), w.start))
        return [w for w in ranked[:count] if len(w.pieces) > 1]


def word_splits(text: str, tokens: NoteTokens) -> tuple[WordSplit, ...]:
    pieces: dict[int, list[str]] = {}
    for token, word in zip(tokens.tokens, tokens.word_ids.tolist()):
        pieces.setdefault(word, []).append(token)
    return tuple(WordSplit(word=text[int(start):int(end)], start=int(start), end=int(end),
                           pieces=tuple(pieces.get(index, ())))
                 for index, (start, end) in enumerate(tokens.word_spans.tolist()))


def fertility(text: str, tokens: NoteTokens, unk_token: str | None) -> Fertility:
    words = word_splits(text, tokens)
    return Fertility(words=words, mean_pieces=float(len(tokens) / max(len(words), 1)),
                     unknown_count=sum(1 for token in tokens.tokens if token == unk_token),
                     piece_count=len(tokens))


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Words whose pieces differ between tokenization A (in force) and B."""

    a_piece_count: int
    b_piece_count: int
    differing: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # (word, A pieces, B pieces)
    word_count: int


def compare(text: str, tokenizer_a: PreTrainedTokenizerBase, tokenizer_b: PreTrainedTokenizerBase) -> Comparison:
    """Tokenize ``text`` with both and list the words split differently (by characters)."""
    a = tokenize_note(tokenizer_a, text)
    b = tokenize_note(tokenizer_b, text)
    b_starts = b.offsets[:, 0]
    b_ends = b.offsets[:, 1]
    differing = []
    for split in word_splits(text, a):
        overlap = np.flatnonzero((b_starts < split.end) & (b_ends > split.start))
        b_pieces = tuple(b.tokens[i] for i in overlap)
        if b_pieces != split.pieces:
            differing.append((split.word, split.pieces, b_pieces))
    return Comparison(a_piece_count=len(a), b_piece_count=len(b), differing=tuple(differing),
                      word_count=len(a.word_spans))
