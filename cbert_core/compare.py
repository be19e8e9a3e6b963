"""Two models on the same note: how they tokenize it and how their layers relate (linear CKA).

CKA needs the same items in both models, but two tokenizers cut a note into
different pieces. Items are therefore words aligned by characters: each
trace's pieces are mean-pooled per word at every layer, and only words whose
character span is the same in both traces are kept.

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited") between X [n, d1] and Y [n, d2], columns centred:
``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``; it lies in [0, 1], is 1 for
identical representations and is invariant to orthogonal transforms and
isotropic scaling of either side (not to arbitrary linear maps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import TargetError
from .loading import LoadedModel
from .tokenization import Comparison, compare
from .trace import Trace, trace

Progress = Callable[[float, str], None]
DEFAULT_MAX_WORDS = 1000  # words beyond this are sampled (seeded): [n, n] float64 Gram matrices per layer


def _centred_gram(features: np.ndarray) -> np.ndarray:
    """float64 [n, n]: Gram matrix of column-centred features [n, d]."""
    centred = features.astype(np.float64) - features.astype(np.float64).mean(axis=0, keepdims=True)
    return centred @ centred.T


def _cka_from_grams(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    denominator = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
    if denominator <= 1e-300:
        return float("nan")  # a constant representation has no structure to compare
    return float(np.clip((gram_x * gram_y).sum() / denominator, 0.0, 1.0))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same ``n`` items.

    Args:
        x: [n, d1] features.
        y: [n, d2] features (same rows, any width).

    Returns:
        A value in [0, 1] (NaN when either side is constant over the items).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError("linear_cka needs two matrices with the same number of rows")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least two items")
    return _cka_from_grams(_centred_gram(x), _centred_gram(y))


def cka_matrix(states_a: np.ndarray, states_b: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """float32 [layer_a, layer_b]: linear CKA between every layer of A and every layer of B.

    Args:
        states_a: [layer_a, n, d_a] representations of the n items at each layer of A.
        states_b: [layer_b, n, d_b] the same items in B.
    """
    if states_a.shape[1] != states_b.shape[1]:
        raise ValueError("both models must represent the same items")
    if states_a.shape[1] < 2:
        raise ValueError("CKA needs at least two items")
    grams_b = [_centred_gram(layer) for layer in states_b]  # each [n, n]
    result = np.empty((len(states_a), len(states_b)), dtype=np.float32)
    for row, layer in enumerate(states_a):
        gram_a = _centred_gram(layer)
        for column, gram_b in enumerate(grams_b):
            result[row, column] = _cka_from_grams(gram_a, gram_b)
        if progress is not None:
            progress((row + 1) / len(states_a), f"CKA: layer {row} of model A")
    return result


def word_states(result: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each word's pieces at every layer.

    Returns:
        (spans int32 [word, 2] character spans, states float32 [layer + 1, word, hidden]).
    """
    content = np.flatnonzero(result.word_ids >= 0)
    words = result.word_ids[content]  # [content pos]
    count = len(result.word_spans)
    sums = np.zeros((result.hidden_states.shape[0], count, result.hidden_states.shape[2]), dtype=np.float64)
    np.add.at(sums, (slice(None), words), result.hidden_states[:, content].astype(np.float64))
    pieces = np.bincount(words, minlength=count).astype(np.float64)  # [word]
    present = pieces > 0
    states = (sums[:, present] / pieces[present][None, :, None]).astype(np.float32)
    return np.asarray(result.word_spans, dtype=np.int32)[present], states


def aligned_word_states(trace_a: Trace, trace_b: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words present in both traces (same character span), with each model's word vectors.

    Returns:
        (spans int32 [w, 2], states_a float32 [layer_a + 1, w, d_a], states_b float32 [layer_b + 1, w, d_b]).

    Raises:
        TargetError: the traces are of different texts.
    """
    if trace_a.text != trace_b.text:
        raise TargetError("The two models must be compared on the same note: trace both with the same text.")
    spans_a, states_a = word_states(trace_a)
    spans_b, states_b = word_states(trace_b)
    lookup = {(int(s), int(e)): index for index, (s, e) in enumerate(spans_b.tolist())}
    pairs = [(index, lookup[(int(s), int(e))]) for index, (s, e) in enumerate(spans_a.tolist())
             if (int(s), int(e)) in lookup]
    rows_a = np.asarray([a for a, _ in pairs], dtype=np.int64)
    rows_b = np.asarray([b for _, b in pairs], dtype=np.int64)
    return spans_a[rows_a].reshape(-1, 2), states_a[:, rows_a], states_b[:, rows_b]


@dataclass(frozen=True, kw_only=True)
class ModelComparison:
    """How two models read the same note."""

    model_a: str
    model_b: str
    tokenization: Comparison  # words whose pieces differ (A's words, B's pieces over the same characters)
    cka: np.ndarray  # float32 [layer_a + 1, layer_b + 1]: linear CKA over shared words
    word_spans: np.ndarray  # int32 [w, 2]: the shared words CKA was computed on (after sampling)
    words_a: int  # words in A's tokenization
    words_b: int
    shared_words: int  # words with the same span in both (before sampling)
    sampled: bool  # True when shared_words > max_words and a seeded sample was used

    def __post_init__(self) -> None:
        if self.cka.ndim != 2:
            raise ValueError("ModelComparison.cka must be [layer_a + 1, layer_b + 1]")
        for array in (self.cka, self.word_spans):
            array.flags.writeable = False

    @property
    def best_match(self) -> np.ndarray:
        """int64 [layer_a + 1]: for each layer of A, the layer of B with the highest CKA."""
        return np.nanargmax(np.nan_to_num(self.cka, nan=-1.0), axis=1)


def compare_traces(trace_a: Trace, trace_b: Trace, *, tokenizer_a: object, tokenizer_b: object,
                   max_words: int = DEFAULT_MAX_WORDS, seed: int = 0,
                   progress: Progress | None = None) -> ModelComparison:
    """Compare two traces of the same note (each with the tokenizer its trace used).

    Raises:
        TargetError: different texts, or fewer than two words in common.
    """
    spans, states_a, states_b = aligned_word_states(trace_a, trace_b)
    shared = len(spans)
    if shared < 2:
        raise TargetError("The two tokenizations share fewer than two words, so their layers cannot be compared. "
                          "Use a longer note.")
    sampled = shared > max_words
    if sampled:
        chosen = np.sort(np.random.default_rng(seed).choice(shared, size=max_words, replace=False))
        spans, states_a, states_b = spans[chosen], states_a[:, chosen], states_b[:, chosen]
    tokenization = compare(trace_a.text, tokenizer_a, tokenizer_b)
    return ModelComparison(
        model_a=trace_a.model_name, model_b=trace_b.model_name, tokenization=tokenization,
        cka=cka_matrix(states_a, states_b, progress=progress), word_spans=spans,
        words_a=len(trace_a.word_spans), words_b=len(trace_b.word_spans), shared_words=shared, sampled=sampled,
    )


def compare_models(loaded_a: LoadedModel, loaded_b: LoadedModel, text: str, *, lowercase_a: bool | None = None,
                   lowercase_b: bool | None = None, trace_a: Trace | None = None, trace_b: Trace | None = None,
                   max_words: int = DEFAULT_MAX_WORDS, seed: int = 0,
                   progress: Progress | None = None) -> ModelComparison:
    """Trace ``text`` with both models (or reuse given traces) and compare them.

    Args:
        loaded_a, loaded_b: the two shared models (only called).
        text: the note.
        lowercase_a, lowercase_b: casing per model (None: each checkpoint's default); ignored for a given trace.
        trace_a, trace_b: traces of ``text`` already made (e.g. cached by the UI).
        max_words: shared words beyond this are sampled (seeded by ``seed``).
        progress: (fraction, message); raising from it stops the work.
    """
    def stage(low: float, high: float) -> Progress | None:
        if progress is None:
            return None
        return lambda fraction, message: progress(low + (high - low) * fraction, message)

    if trace_a is None:
        trace_a = trace(loaded_a, text, lowercase=lowercase_a, progress=stage(0.0, 0.4))
    if trace_b is None:
        trace_b = trace(loaded_b, text, lowercase=lowercase_b, progress=stage(0.4, 0.8))
    return compare_traces(trace_a, trace_b, tokenizer_a=loaded_a.tokenizer(trace_a.lowercase),
                          tokenizer_b=loaded_b.tokenizer(trace_b.lowercase), max_words=max_words, seed=seed,
                          progress=stage(0.8, 1.0))
