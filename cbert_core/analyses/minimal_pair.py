"""Minimal pairs: the note ("clean") and an edited copy ("corrupted"), lined up position by position.

Activation patching compares two runs that differ in one place. :func:`make_pair` plans the edited
copy with the note's options, picks the window both runs read (the one holding the edit, for a
note longer than one window), places the target in both, and aligns their positions by word:
words outside the edit are matched by their text (:class:`difflib.SequenceMatcher` over the two
word lists), a replaced run of words is matched word for word when both sides have as many words,
and a matched word's pieces are matched in order when both have as many pieces. Every position
without a partner is reported (:attr:`MinimalPair.partner` -1, :attr:`MinimalPair.corrupted_only`),
never dropped silently.

The default edits flip one negation cue (:data:`NEGATION_FLIPS`: "denies" -> "reports", "no" ->
removed, ...), as NegEx's cues are the usual minimal pairs.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

import numpy as np

from cbert_core.analyses.counterfactual import apply_edit
from cbert_core.analyses.targets import Target, resolve_target
from cbert_core.errors import TargetError
from cbert_core.model.loading import LoadedModel
from cbert_core.records import frozen
from cbert_core.run.plan import NotePlan, plan_note
from cbert_core.text.tokens import mask_positions
from cbert_core.text.windows import Window

# Negation cue -> its affirmed counterpart ("" removes the cue), tried in this order.
NEGATION_FLIPS: tuple[tuple[str, str], ...] = (
    ("denies", "reports"), ("denied", "reported"), ("deny", "report"), ("negative for", "positive for"),
    ("no evidence of", "evidence of"), ("without", "with"), ("free of", "with"), ("absence of", "presence of"),
    ("no", ""), ("not", ""), ("never", ""),
)


@dataclass(frozen=True, kw_only=True)
class Edit:
    """Characters [start, end) of a note replaced by ``replacement``."""

    start: int
    end: int
    replacement: str


def negation_flip(text: str) -> Edit | None:
    """The first negation cue of ``text`` flipped (see :data:`NEGATION_FLIPS`), or None without one.

    A removed cue takes the spaces after it along; a flipped cue keeps its capital ("Denies" -> "Reports").
    """
    found: list[tuple[int, int, str]] = []
    for cue, flipped in NEGATION_FLIPS:
        match = re.search(rf"\b{re.escape(cue)}\b", text, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), -len(cue), flipped))
    if not found:
        return None
    start, minus_length, flipped = min(found)
    end = start - minus_length
    if not flipped:
        while end < len(text) and text[end] in " \t":
            end += 1
    elif text[start].isupper():
        flipped = flipped[0].upper() + flipped[1:]
    return Edit(start=start, end=end, replacement=flipped)


@dataclass(frozen=True, kw_only=True)
class MinimalPair:
    """The clean and corrupted versions of one window, position by position (0 is [CLS])."""

    clean_text: str
    corrupted_text: str
    window: Window  # the clean note's window the runs read
    corrupted_window: Window
    window_count: int  # windows of the clean note (more than 1: a long note, patched in ``window``)
    clean_ids: np.ndarray  # int64 [t]: [CLS] + the window's pieces + [SEP]
    corrupted_ids: np.ndarray  # int64 [u]
    clean_tokens: tuple[str, ...]  # [t]
    corrupted_tokens: tuple[str, ...]  # [u]
    clean_word_ids: np.ndarray  # int32 [t]: word of each position in the clean note, -1 for [CLS]/[SEP]
    partner: np.ndarray  # int32 [t]: the corrupted position aligned with each clean position, -1 for none
    corrupted_only: np.ndarray  # int32 [k]: corrupted positions no clean position is aligned with
    clean_row: int  # the row the target reads in the clean run (-1: all rows, a similarity)
    corrupted_row: int
    changed: tuple[int, int]  # characters of the clean note the edit changed
    corrupted_target: Target  # the target as it reads the corrupted note (a labelled word moves with the edit)

    def __post_init__(self) -> None:
        t, u = len(self.clean_tokens), len(self.corrupted_tokens)
        if self.clean_ids.shape != (t,) or self.corrupted_ids.shape != (u,) or self.partner.shape != (t,):
            raise ValueError("MinimalPair arrays disagree with the token counts")
        if self.clean_word_ids.shape != (t,):
            raise ValueError("MinimalPair.clean_word_ids must be [t]")
        frozen(self.clean_ids, self.corrupted_ids, self.clean_word_ids, self.partner, self.corrupted_only)

    @property
    def positions(self) -> int:
        return len(self.clean_tokens)

    @property
    def unpartnered(self) -> np.ndarray:
        """int64 [m]: clean positions without a partner."""
        return np.flatnonzero(self.partner < 0)

    @property
    def one_to_one(self) -> bool:
        """True when every position of each run has a partner in the other."""
        return bool((self.partner >= 0).all()) and self.corrupted_only.size == 0


def _changed_span(clean: str, corrupted: str) -> tuple[int, int, int]:
    """(start, clean end, corrupted end): the characters that differ, after the common start and end."""
    start = len(os.path.commonprefix([clean, corrupted]))
    room = min(len(clean), len(corrupted)) - start
    suffix = len(os.path.commonprefix([clean[::-1], corrupted[::-1]]))
    suffix = min(suffix, room)
    return start, len(clean) - suffix, len(corrupted) - suffix


def _piece_at(plan: NotePlan, char: int) -> int:
    """The first content piece ending after character ``char`` (the last piece when none does)."""
    ends = plan.tokens.offsets[:, 1]
    return int(min(np.searchsorted(ends, char, side="right"), len(ends) - 1))


def _place(loaded: LoadedModel, plan: NotePlan, target: Target, piece: int) -> tuple[Window, int]:
    """The window that holds content piece ``piece`` (the edit) and the target, and the target's row in it.

    Raises:
        TargetError: a positional target (a [MASK], a labelled word) and the edit are too far apart to be
        read in one window; the target does not fit the note or the head.
    """
    if not target.positional:
        window = plan.windows[int(plan.owner[piece])]
        return window, resolve_target(loaded, plan, target, window.index).position
    resolved = resolve_target(loaded, plan, target, None)
    content = resolved.window.start + resolved.position - 1
    holding = [plan.windows[int(plan.owner[piece])], resolved.window, *plan.windows]
    for window in holding:
        if window.start <= piece < window.stop and window.start <= content < window.stop:
            return window, content - window.start + 1
    raise TargetError(
        f"The edit and the {'[MASK]' if target.kind == 'masked-token' else 'word explained'} are too far apart: "
        f"the model reads at most {loaded.info.max_tokens} positions at once, and patching needs both in the same "
        f"window. Edit a word closer to it.")


def _window_words(plan: NotePlan, window: Window) -> tuple[list[int], dict[int, list[int]]]:
    """Words with pieces in ``window``, in order, and each word's positions there (1-based, after [CLS])."""
    pieces: dict[int, list[int]] = {}
    for index in range(window.start, window.stop):
        pieces.setdefault(int(plan.tokens.word_ids[index]), []).append(index - window.start + 1)
    return list(pieces), pieces


def _align(clean: NotePlan, clean_window: Window, corrupted: NotePlan, corrupted_window: Window) -> np.ndarray:
    """int32 [t]: each clean position's partner in the corrupted window, -1 for none (see the module notes)."""
    partner = np.full(clean_window.size + 2, -1, np.int32)
    partner[0], partner[-1] = 0, corrupted_window.size + 1  # [CLS] and [SEP]
    clean_words, clean_pieces = _window_words(clean, clean_window)
    other_words, other_pieces = _window_words(corrupted, corrupted_window)

    def text(plan: NotePlan, word: int) -> str:
        start, end = plan.tokens.word_spans[word]
        return plan.text[int(start):int(end)]

    matcher = difflib.SequenceMatcher(None, [text(clean, w) for w in clean_words],
                                      [text(corrupted, w) for w in other_words], autojunk=False)
    for operation, a0, a1, b0, b1 in matcher.get_opcodes():
        if operation not in {"equal", "replace"} or a1 - a0 != b1 - b0:
            continue
        for a, b in zip(clean_words[a0:a1], other_words[b0:b1]):
            mine, theirs = clean_pieces[a], other_pieces[b]
            if len(mine) == len(theirs):
                partner[mine] = theirs
    return partner


def make_pair(loaded: LoadedModel, plan: NotePlan, corrupted_text: str, target: Target) -> MinimalPair:
    """Plan the corrupted copy like ``plan``, choose the window, place the target and align the positions.

    Raises:
        TargetError: the copy equals the note (nothing to explain), it adds or removes a [MASK], it edits the
            word being explained, or the target and the edit cannot share a window; WrongHeadError: the
            target does not fit the model's head.
        EmptyNoteError, NoteTooLongError: the corrupted copy cannot be read.
    """
    clean_text = plan.text
    if corrupted_text == clean_text:
        raise TargetError("The edited copy is the same as the note: there is no difference to explain. Change a "
                          "word, for example 'denies' to 'reports'.")
    corrupted = plan_note(loaded, corrupted_text, plan.options, segment_in_background=False)
    start, clean_end, corrupted_end = _changed_span(clean_text, corrupted_text)
    corrupted_target = target
    if target.kind == "masked-token":
        if mask_positions(plan.tokens.ids, plan.mask_id).size != mask_positions(corrupted.tokens.ids,
                                                                                 corrupted.mask_id).size:
            mask = loaded.info.mask_token or "[MASK]"
            raise TargetError(f"The edit must not add or remove {mask} tokens: the pair must ask the same question.")
    elif target.kind == "token-class":
        if start <= target.char_index < clean_end:
            raise TargetError("The edit changes the word being explained. Edit another word, or explain another.")
        if target.char_index >= clean_end:
            corrupted_target = Target(kind="token-class", label=target.label, class_index=target.class_index,
                                      char_index=target.char_index + corrupted_end - clean_end)
    window, clean_row = _place(loaded, plan, target, _piece_at(plan, start))
    corrupted_window, corrupted_row = _place(loaded, corrupted, corrupted_target, _piece_at(corrupted, start))
    clean_ids, corrupted_ids = plan.window_ids(window), corrupted.window_ids(corrupted_window)
    if np.array_equal(clean_ids, corrupted_ids):
        raise TargetError("The edit does not change the word pieces the model reads (only spacing or letters the "
                          "tokenizer ignores): there is no difference to explain. Change a word.")
    partner = _align(plan, window, corrupted, corrupted_window)
    corrupted_only = np.setdiff1d(np.arange(corrupted_ids.size), partner[partner >= 0]).astype(np.int32)
    clean_tokens = plan.global_tokens()
    positions = plan.window_positions(window)
    return MinimalPair(
        clean_text=clean_text, corrupted_text=corrupted_text, window=window, corrupted_window=corrupted_window,
        window_count=len(plan.windows), clean_ids=clean_ids, corrupted_ids=corrupted_ids,
        clean_tokens=tuple(clean_tokens[p] for p in positions),
        corrupted_tokens=tuple(corrupted.global_tokens()[p] for p in corrupted.window_positions(corrupted_window)),
        clean_word_ids=plan.global_word_ids()[positions].astype(np.int32), partner=partner,
        corrupted_only=corrupted_only, clean_row=int(clean_row), corrupted_row=int(corrupted_row),
        changed=(start, clean_end), corrupted_target=corrupted_target,
    )


def edited_copy(text: str, edit: Edit) -> str:
    """``text`` with ``edit`` applied (see :func:`cbert_core.analyses.counterfactual.apply_edit`)."""
    return apply_edit(text, edit.start, edit.end, edit.replacement)
