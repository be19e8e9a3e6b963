"""The run plan: how one model reads one note, decided once and shared by every analysis.

Data flow: ``RunOptions`` + model + note text -> :func:`plan_note` -> :class:`NotePlan` -> the
trace, the lean forward pass (predictions, attribution, head scans), the exact inside walk,
batch encoding. Every analysis of one note with one set of options therefore sees the same word
pieces, windows and positions: a window is a run of content pieces; the model reads it with
[CLS] and [SEP] around it; position 0 is [CLS], 1..n the note's pieces, n + 1 [SEP].

Sentences and sections are found while the model runs when the note fits in one window (a long
note needs them first: its windows end at sentence boundaries), so the segmentation of a short
note costs no waiting.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cbert_core.errors import DataFileError, EmptyNoteError, NoteTooLongError
from cbert_core.model.hooks import HeadSet
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import Precision, check_precision
from cbert_core.records import frozen
from cbert_core.text.segment import Segmentation, segment
from cbert_core.text.tokens import DEFAULT_MAX_CHARS, NoteTokens, check_note, sentence_start_tokens, tokenize_note
from cbert_core.text.windows import DEFAULT_OVERLAP, Window, owner_windows, plan_windows

_SEGMENTING = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cbert-segment")
# Called with (word pieces, windows cut without sentence snapping) before a long note's sentences are
# found (the slow part of planning a very long note); raises to refuse the note early.
Budget = Callable[[int, tuple[Window, ...]], None]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything besides the model and the note that changes a result (built once from the sidebar)."""

    lowercase: bool | None = None  # None: the checkpoint's tokenizer default
    overlap: int = DEFAULT_OVERLAP  # content pieces shared by neighbouring windows of a long note
    max_chars: int = DEFAULT_MAX_CHARS  # longer notes are refused
    precision: Precision = "fp32"  # "bf16": the model's matrix products under bfloat16 autocast
    knocked_out: HeadSet = frozenset()  # (layer, head) pairs whose output is zeroed, 0-based

    def __post_init__(self) -> None:
        check_precision(self.precision)
        object.__setattr__(self, "knocked_out", frozenset((int(a), int(b)) for a, b in self.knocked_out))

    def with_knocked_out(self, heads: Iterable[tuple[int, int]]) -> RunOptions:
        return dataclasses.replace(self, knocked_out=frozenset(heads))


class _Deferred:
    """A value computed once, on first use or in the background; safe to read from several threads."""

    def __init__(self, compute: Callable[[], Segmentation], *, background: bool) -> None:
        self._lock = threading.Lock()
        self._compute: Callable[[], Segmentation] | None = compute
        self._future = _SEGMENTING.submit(compute) if background else None
        self._value: Segmentation | None = None

    def get(self) -> Segmentation:
        if self._future is not None:
            return self._future.result()
        with self._lock:
            if self._value is None and self._compute is not None:
                self._value, self._compute = self._compute(), None
            return self._value


@dataclass(frozen=True, kw_only=True, eq=False)
class NotePlan:
    """A note prepared for one model and one set of options: pieces, sentences, windows, owners.

    Compared and hashed by identity; :attr:`key` names it for caches (the note text never
    becomes a visible key).
    """

    model_key: str
    text: str
    options: RunOptions  # with ``lowercase`` resolved to the casing in force
    tokens: NoteTokens  # the note's word pieces, without [CLS]/[SEP]
    windows: tuple[Window, ...]  # content-piece ranges the model reads at once
    owner: np.ndarray  # int32 [n]: the window where each content piece is most central
    cls_id: int
    sep_id: int
    mask_id: int | None
    pad_id: int | None
    cls_token: str
    sep_token: str
    segmentation_source: _Deferred = field(repr=False)

    def __post_init__(self) -> None:
        if self.owner.shape != (len(self.tokens),):
            raise ValueError("NotePlan.owner must be [n]")
        frozen(self.owner)

    @property
    def segmentation(self) -> Segmentation:
        """Sections and sentences (waits for the background segmentation of a short note)."""
        return self.segmentation_source.get()

    @property
    def key(self) -> str:
        """A digest naming (model, note, options): equal plans have equal keys."""
        payload = repr((self.model_key, self.text, self.options))
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def positions(self) -> int:
        """[CLS] + the note's pieces + [SEP]."""
        return len(self.tokens) + 2

    @property
    def lowercase(self) -> bool:
        return bool(self.options.lowercase)

    def with_options(self, **changes: object) -> NotePlan:
        """The same note under other run-time options (precision, knocked-out heads): pieces and windows are shared.

        Raises:
            ValueError: a change that would need the note prepared again (casing, overlap, length limit).
        """
        options = dataclasses.replace(self.options, **changes)
        if (options.lowercase, options.overlap, options.max_chars) != (self.options.lowercase, self.options.overlap,
                                                                        self.options.max_chars):
            raise ValueError("casing, overlap and the length limit change the plan: plan the note again")
        return dataclasses.replace(self, options=options)

    def window_ids(self, window: Window) -> np.ndarray:
        """int64 [window.size + 2]: [CLS] + the window's pieces + [SEP], the model's input for ``window``."""
        return np.concatenate([[self.cls_id], self.tokens.ids[window.start:window.stop], [self.sep_id]]).astype(np.int64)

    def window_positions(self, window: Window) -> np.ndarray:
        """int64 [window.size + 2]: the note position of each of the window's inputs."""
        return np.concatenate([[0], np.arange(window.start + 1, window.stop + 1), [self.positions - 1]]).astype(np.int64)

    def global_tokens(self) -> tuple[str, ...]:
        """[pos]: every position's token, [CLS] and [SEP] included."""
        return (self.cls_token, *self.tokens.tokens, self.sep_token)

    def global_offsets(self) -> np.ndarray:
        """int32 [pos, 2]: characters of each position; (-1, -1) for [CLS]/[SEP]."""
        return np.concatenate([[[-1, -1]], self.tokens.offsets, [[-1, -1]]]).astype(np.int32)

    def global_word_ids(self) -> np.ndarray:
        """int32 [pos]: word of each position; -1 for [CLS]/[SEP]."""
        return np.concatenate([[-1], self.tokens.word_ids, [-1]]).astype(np.int32)


def resolved_options(loaded: LoadedModel, options: RunOptions) -> RunOptions:
    """``options`` with the casing in force for ``loaded`` written out (None becomes its default)."""
    return dataclasses.replace(options, lowercase=loaded.resolve_lowercase(options.lowercase))


def plan_note(loaded: LoadedModel, text: str, options: RunOptions = RunOptions(), *,
              max_content: int | None = None, segment_in_background: bool = True,
              budget: Budget | None = None) -> NotePlan:
    """Tokenize ``text`` for ``loaded``, find its sentences and cut it into windows.

    Args:
        options: the run options (casing, overlap and length limit shape the plan; precision
            and knocked-out heads ride along for the analyses that run it).
        max_content: content pieces per window (None: the model's positions minus [CLS]/[SEP]);
            smaller windows are a deliberate, separate plan (a benchmark's choice).
        segment_in_background: for a note that fits one window, start finding its sentences in a
            background thread now (the interactive path: the trace runs meanwhile); otherwise
            segment only when first asked.
        budget: a check of what the note will cost (see :data:`Budget`, e.g.
            :func:`cbert_core.run.trace.trace_budget`), run before a long note is segmented.

    Raises:
        EmptyNoteError, NoteTooLongError: the note cannot be analysed.
        ResourceLimitError: raised by ``budget``.
    """
    check_note(text, options.max_chars)
    options = resolved_options(loaded, options)
    tokenizer = loaded.tokenizer(options.lowercase)
    tokens = tokenize_note(tokenizer, text)
    limit = loaded.info.max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
    content = limit if max_content is None else int(max(8, min(max_content, limit)))
    if budget is not None:
        budget(len(tokens), plan_windows(len(tokens), content, options.overlap))
    if len(tokens) > content:  # a long note: its windows end at sentence boundaries
        segmentation = segment(text)
        source = _Deferred(lambda: segmentation, background=False)
        boundaries = sentence_start_tokens(tokens.offsets, [sentence.start for sentence in segmentation.sentences])
    else:
        source = _Deferred(lambda: segment(text), background=segment_in_background)
        boundaries = []
    windows = plan_windows(len(tokens), content, options.overlap, boundaries)
    return NotePlan(
        model_key=loaded.info.key, text=text, options=options, tokens=tokens, windows=windows,
        owner=owner_windows(windows, len(tokens)), cls_id=int(tokenizer.cls_token_id),
        sep_id=int(tokenizer.sep_token_id), mask_id=tokenizer.mask_token_id, pad_id=tokenizer.pad_token_id,
        cls_token=str(tokenizer.cls_token), sep_token=str(tokenizer.sep_token), segmentation_source=source,
    )


def plan_notes(loaded: LoadedModel, texts: Sequence[str], options: RunOptions = RunOptions()) -> list[NotePlan]:
    """:func:`plan_note` for a collection (sentences found only where windows need them or when asked).

    Raises:
        DataFileError: a note is empty or too long (its 1-based number is named).
    """
    plans = []
    for number, text in enumerate(texts, start=1):
        try:
            plans.append(plan_note(loaded, text, options, segment_in_background=False))
        except (EmptyNoteError, NoteTooLongError) as bad:
            raise DataFileError(f"Note {number}: {bad}") from bad
    return plans
