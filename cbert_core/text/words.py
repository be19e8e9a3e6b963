"""Words as a reader counts them (not the model's word pieces, nor its punctuation-split words).

A tokenizer's words split at every punctuation mark, so "08/27/2007" is five of them and a lone
"," is one. A reader's word is a run of letters or digits, kept whole across the marks that join
parts of one word: "08/27/2007", "2.0", "b.i.d.", "O2", "s/p", "end-stage", "don't", "10:30",
"318,000". Punctuation alone ("-", ",", "%", "##") is not a word.
"""

from __future__ import annotations

import re

# Letters or digits ([^\W_]), joined by . / - ' or ’; a colon only between digits (10:30, 1:1) and a comma
# only as a thousands separator (318,000). "HISTORY:,The" is two words.
READER_WORD = re.compile(
    r"[^\W_]+(?:(?:[./'\u2019-]|(?<=\d):(?=\d)|(?<=\d),(?=\d{3}(?!\d)))[^\W_]+)*")


def count_words(text: str) -> int:
    """How many words a reader would count in ``text`` (see the module docstring)."""
    return sum(1 for _ in READER_WORD.finditer(text))


def whitespace_words(text: str) -> list[tuple[int, int]]:
    """(start, end) characters of each whitespace-separated word: the words a tag sequence (one label per
    word, as in CoNLL files) labels."""
    return [match.span() for match in re.finditer(r"\S+", text)]
