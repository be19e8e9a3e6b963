"""What a classification head says: entity labels per word piece, class probabilities per note.

:func:`token_labels` runs a token-classification head over every window of a note
and merges word labels into entity spans (:func:`merge_entities`); :func:`classify`
runs a sequence-classification head on each window's [CLS] row and averages the
windows' probabilities. Both use the lean forward pass of :mod:`cbert_core.run.forward`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import forward_ids, require_head
from cbert_core.run.plan import NotePlan
from cbert_core.text.windows import Window


@dataclass(frozen=True, kw_only=True)
class EntitySpan:
    """Consecutive words with one entity label."""

    label: str  # without the B-/I- prefix
    start: int  # characters text[start:end]
    end: int
    text: str
    score: float  # mean over the words of the label's probability at each word's first piece
    first_word: int
    last_word: int  # inclusive


@dataclass(frozen=True, kw_only=True)
class TokenLabels:
    """A token-classification head's labels per piece and the entity spans they form."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    windows: tuple[Window, ...]  # the windows the labels were read in
    labels: tuple[str, ...]  # [label]
    tokens: tuple[str, ...]  # [pos]
    offsets: np.ndarray  # int32 [pos, 2]
    probs: np.ndarray  # float32 [pos, label]
    word_spans: np.ndarray  # int32 [word, 2]
    word_labels: np.ndarray  # int32 [word]: label of each word's first piece
    word_scores: np.ndarray  # float32 [word]: its probability
    entities: tuple[EntitySpan, ...]

    def __post_init__(self) -> None:
        if self.probs.shape != (len(self.tokens), len(self.labels)):
            raise ValueError("TokenLabels.probs must be [pos, label]")
        for array in (self.offsets, self.probs, self.word_spans, self.word_labels, self.word_scores):
            frozen_array(array)


_BIO = re.compile(r"^([BIESLU])[-_](.+)$")


def _entity_parts(label: str) -> tuple[str, str]:
    """("B"/"I"/.../"" , kind); kind "" means outside."""
    if label.upper() in {"O", "OUTSIDE", "NONE"}:
        return "", ""
    match = _BIO.match(label)
    return (match.group(1).upper(), match.group(2)) if match else ("", label)


def merge_entities(text: str, labels: Sequence[str], word_spans: np.ndarray, word_labels: np.ndarray,
                   word_scores: np.ndarray) -> tuple[EntitySpan, ...]:
    """Merge word labels into entity spans (BIO/BIOES prefixes or plain labels).

    B-/S-/U- start an entity; I-/E-/L- continue one of the same kind (or start one);
    plain labels merge consecutive words of the same label; "O" ends the current entity.
    """
    entities: list[EntitySpan] = []
    current: list[int] = []
    kind_now = ""

    def close() -> None:
        nonlocal current, kind_now
        if current:
            start, end = int(word_spans[current[0], 0]), int(word_spans[current[-1], 1])
            entities.append(EntitySpan(label=kind_now, start=start, end=end, text=text[start:end],
                                       score=float(np.mean(word_scores[current])), first_word=current[0],
                                       last_word=current[-1]))
        current, kind_now = [], ""

    for word, label_index in enumerate(word_labels):
        prefix, kind = _entity_parts(labels[int(label_index)])
        if not kind:
            close()
            continue
        if prefix in {"B", "S", "U"} or kind != kind_now:
            close()
        current.append(word)
        kind_now = kind
        if prefix in {"S", "U", "E", "L"}:
            close()
    close()
    return tuple(entities)


def _run_windows(loaded: LoadedModel, plan: NotePlan, *, rows_for: Callable[[Window], np.ndarray | None],
                 progress: Progress | None, message: str) -> tuple[list[np.ndarray], HeadSet]:
    """Head output per window (float32 numpy), last layer only at ``rows_for(window)``."""
    outputs: list[np.ndarray] = []
    with torch.inference_mode(), knockout(loaded.anatomy, plan.options.knocked_out) as heads:
        for window in plan.windows:
            rows = rows_for(window)
            row_tensor = None if rows is None else torch.from_numpy(rows.astype(np.int64))[None].to(loaded.device)
            logits = forward_ids(loaded, torch.from_numpy(plan.window_ids(window))[None].to(loaded.device),
                                 rows=row_tensor)
            outputs.append(logits[0].float().cpu().numpy())
            report(progress, (window.index + 1) / len(plan.windows),
                    f"{message}: window {window.index + 1} of {len(plan.windows)}")
    return outputs, heads


def token_labels(loaded: LoadedModel, plan: NotePlan, *, progress: Progress | None = None) -> TokenLabels:
    """Label probabilities per piece and entity spans (words labelled by their first piece).

    Raises:
        WrongHeadError: the checkpoint has no token-classification head.
    """
    require_head(loaded, "token-classification", "Entity labelling")
    outputs, heads = _run_windows(loaded, plan, rows_for=lambda window: None, progress=progress, message="Labelling")
    return labels_from_windows(loaded, plan, outputs, knocked_out=heads)


def labels_from_windows(loaded: LoadedModel, plan: NotePlan, window_logits: Sequence[np.ndarray], *,
                        knocked_out: HeadSet = frozenset()) -> TokenLabels:
    """:class:`TokenLabels` from a token-classification head's logits per window of ``plan``.

    Args:
        window_logits: float32 [window.size + 2, label] per window, in ``plan.windows`` order (from
            :func:`token_labels`' own pass, or the batch engine's one pass over many notes).
    """
    text = plan.text
    labels = loaded.info.labels or tuple(f"LABEL_{i}" for i in range(window_logits[0].shape[-1]))
    n = len(plan.tokens)
    probs = np.zeros((n + 2, len(labels)), np.float32)
    for window, logits in zip(plan.windows, window_logits):
        window_probs = torch.softmax(torch.from_numpy(np.array(logits, dtype=np.float32)), dim=-1).numpy()  # [t, label]
        owned = np.flatnonzero(plan.owner == window.index)
        probs[owned + 1] = window_probs[owned - window.start + 1]
        if window.index == 0:
            probs[0] = window_probs[0]
        if window.index == len(plan.windows) - 1:
            probs[-1] = window_probs[-1]
    note = plan.tokens
    first_piece = np.unique(note.word_ids, return_index=True)[1]  # [word] content index of each word's first piece
    word_probs = probs[first_piece + 1]
    word_labels = word_probs.argmax(-1).astype(np.int32)
    word_scores = word_probs[np.arange(len(word_labels)), word_labels].astype(np.float32)
    spans = np.array(note.word_spans, dtype=np.int32)
    return TokenLabels(model_key=loaded.info.key, text=text, lowercase=plan.lowercase, knocked_out=knocked_out,
                       windows=plan.windows, labels=labels, tokens=plan.global_tokens(), offsets=plan.global_offsets(), probs=probs,
                       word_spans=spans, word_labels=word_labels, word_scores=word_scores,
                       entities=merge_entities(text, labels, spans, word_labels, word_scores))


@dataclass(frozen=True, kw_only=True)
class ClassProbabilities:
    """A sequence-classification head's label probabilities, per window and averaged."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    labels: tuple[str, ...]  # [label]
    windows: tuple[Window, ...]
    window_probs: np.ndarray  # float32 [window, label]
    probs: np.ndarray  # float32 [label]: mean over windows

    def __post_init__(self) -> None:
        if self.window_probs.shape != (len(self.windows), len(self.labels)) or self.probs.shape != (len(self.labels),):
            raise ValueError("ClassProbabilities arrays must be [window, label] and [label]")
        frozen_array(self.window_probs)
        frozen_array(self.probs)


def classify(loaded: LoadedModel, plan: NotePlan, *, progress: Progress | None = None) -> ClassProbabilities:
    """Label probabilities of a sequence classifier; a long note averages its windows' probabilities.

    Raises:
        WrongHeadError: the checkpoint has no sequence-classification head.
    """
    require_head(loaded, "sequence-classification", "Note classification")
    outputs, heads = _run_windows(loaded, plan, rows_for=lambda window: np.array([0]), progress=progress,
                                  message="Classifying")
    return probabilities_from_windows(loaded, plan, outputs, knocked_out=heads)


def probabilities_from_windows(loaded: LoadedModel, plan: NotePlan, window_logits: Sequence[np.ndarray], *,
                               knocked_out: HeadSet = frozenset()) -> ClassProbabilities:
    """:class:`ClassProbabilities` from a sequence classifier's logits per window of ``plan``.

    Args:
        window_logits: float32 [label] per window, in ``plan.windows`` order (from :func:`classify`'s own
            pass, or the batch engine's one pass over many notes).
    """
    logits = np.stack([np.asarray(row, dtype=np.float32) for row in window_logits])  # [window, label]
    window_probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy().astype(np.float32)
    labels = loaded.info.labels or tuple(f"LABEL_{i}" for i in range(window_probs.shape[-1]))
    return ClassProbabilities(model_key=loaded.info.key, text=plan.text, lowercase=plan.lowercase,
                              knocked_out=knocked_out, labels=labels, windows=plan.windows, window_probs=window_probs,
                              probs=window_probs.mean(0).astype(np.float32))


def span_probabilities(tagged: TokenLabels, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """float32 [span, label]: the label probabilities of the first word piece that starts inside each span.

    A span no piece starts in (only characters the tokenizer drops) gets NaN.
    """
    starts = tagged.offsets[:, 0]  # [pos]; -1 for [CLS]/[SEP]
    out = np.full((len(spans), len(tagged.labels)), np.nan, dtype=np.float32)
    for index, (start, end) in enumerate(spans):
        inside = np.flatnonzero((starts >= start) & (starts < end))
        if inside.size:
            out[index] = tagged.probs[inside[0]]
    return out
