"""Word pieces with character offsets into the original note, and word alignment.

Special-token strings a user types ("[CLS]", "[SEP]", "[UNK]") are text, not
control tokens: they are split like any other characters. The one exception is
the tokenizer's mask token ("[MASK]" for BERT), which is how a user asks the
model to fill in a word.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from cbert_core.errors import EmptyNoteError, NoteTooLongError

DEFAULT_MAX_CHARS = 100_000
# A tokenizers-backed tokenizer may reconfigure its Rust backend per call, which is
# not safe from two threads at once ("Already borrowed"); calls are serialized.
_TOKENIZER_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class NoteTokens:
    """A note's word pieces, without the special tokens a forward pass adds."""

    tokens: tuple[str, ...]  # [n]
    ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int32 [n, 2]: characters text[start:end] each piece came from
    word_ids: np.ndarray  # int32 [n]: index into word_spans
    word_spans: np.ndarray  # int32 [w, 2]: character span of each word
    mask_id: int | None  # id of the tokenizer's mask token, if it has one

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if self.ids.shape != (n,) or self.offsets.shape != (n, 2) or self.word_ids.shape != (n,):
            raise ValueError("NoteTokens arrays disagree with the token count")
        if self.word_spans.ndim != 2 or self.word_spans.shape[1:] != (2,):
            raise ValueError("word_spans must be [words, 2]")
        for array in (self.ids, self.offsets, self.word_ids, self.word_spans):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def piece_numbers(self) -> np.ndarray:
        """int32 [n]: 0 for a word's first piece, 1 for its second, ..."""
        numbers = np.zeros(len(self.tokens), dtype=np.int32)
        for index in range(1, len(self.tokens)):
            if self.word_ids[index] == self.word_ids[index - 1]:
                numbers[index] = numbers[index - 1] + 1
        return numbers


def check_note(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> None:
    """Raise a typed error for a note that cannot be analysed.

    Raises:
        EmptyNoteError: empty or whitespace-only (including zero-width characters).
        NoteTooLongError: more than ``max_chars`` characters.
    """
    if not isinstance(text, str) or not text.strip().strip("\u200b\u200c\u200d\u2060\ufeff").strip():
        raise EmptyNoteError("The note is empty. Paste or upload a clinical note to analyse.")
    if len(text) > max_chars:
        raise NoteTooLongError(
            f"The note has {len(text):,} characters; the limit is {max_chars:,}. "
            f"Analyse a shorter excerpt (for example one section), or raise the limit in the settings."
        )


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def tokenizable(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (possible from JSON escapes) replaced by U+FFFD.

    The tokenizer cannot encode them; one character replaces one, so offsets still hold.
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def tokenize_note(tokenizer: PreTrainedTokenizerBase, text: str) -> NoteTokens:
    """Tokenize ``text`` into word pieces with offsets and word alignment.

    Args:
        tokenizer: a fast (tokenizers-backed) tokenizer.
        text: the note; the tokenizer's mask token in it becomes the mask id.

    Returns:
        :class:`NoteTokens`; a note that yields no pieces (e.g. only control
        characters) raises :class:`EmptyNoteError`.
    """
    text = tokenizable(text)
    mask = tokenizer.mask_token
    pieces: list[tuple[int, int, bool]] = []  # (start, end, is_mask) runs of text
    cursor = 0
    if mask:
        position = text.find(mask)
        while position != -1:
            pieces.append((cursor, position, False))
            pieces.append((position, position + len(mask), True))
            cursor = position + len(mask)
            position = text.find(mask, cursor)
    pieces.append((cursor, len(text), False))

    tokens: list[str] = []
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    word_keys: list[tuple[int, int]] = []  # (run, local word id) identifies a word
    for run, (start, end, is_mask) in enumerate(pieces):
        if is_mask:
            tokens.append(mask)
            ids.append(int(tokenizer.mask_token_id))
            offsets.append((start, end))
            word_keys.append((run, 0))
            continue
        if start == end:
            continue
        with _TOKENIZER_LOCK:
            encoded = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True,
                                split_special_tokens=True)
            local_words = encoded.word_ids()
        for token_id, (a, b), word in zip(encoded["input_ids"], encoded["offset_mapping"], local_words):
            ids.append(int(token_id))
            offsets.append((start + a, start + b))
            word_keys.append((run, -1 if word is None else int(word)))
        tokens.extend(tokenizer.convert_ids_to_tokens(encoded["input_ids"]))
    if not ids:
        raise EmptyNoteError("The note has no readable text (only control or invisible characters).")

    word_ids = np.empty(len(ids), dtype=np.int32)
    spans: list[list[int]] = []
    previous: tuple[int, int] | None = None
    for index, key in enumerate(word_keys):
        if key != previous or key[1] == -1:
            spans.append([offsets[index][0], offsets[index][1]])
        else:
            spans[-1][1] = max(spans[-1][1], offsets[index][1])
        word_ids[index] = len(spans) - 1
        previous = key
    return NoteTokens(
        tokens=tuple(tokens),
        ids=np.asarray(ids, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.int32).reshape(-1, 2),
        word_ids=word_ids,
        word_spans=np.asarray(spans, dtype=np.int32).reshape(-1, 2),
        mask_id=tokenizer.mask_token_id,
    )


def sentence_start_tokens(offsets: np.ndarray, sentence_starts: list[int]) -> list[int]:
    """Token indices at which a sentence begins (first piece at or after each start)."""
    starts = np.searchsorted(offsets[:, 0], np.asarray(sentence_starts, dtype=np.int64), side="left")
    return sorted({int(index) for index in starts if 0 < index < len(offsets)})


def mask_positions(ids: np.ndarray, mask_id: int | None) -> np.ndarray:
    """int64 [m]: the positions in ``ids`` holding the mask token (none when the tokenizer has no mask token)."""
    if mask_id is None:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.asarray(ids) == mask_id).astype(np.int64)
