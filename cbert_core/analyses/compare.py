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

The reference: a CKA value means little on its own. Two networks that learned
nothing still represent the same words alike, because each word's vector is
built from that word's token embeddings: an untrained, Bio_ClinicalBERT-shaped
model scores 0.2-0.5 against the trained MiniLM on a 5,000-word note. So every
comparison also computes the CKA of model A against a *random-weight copy of
model B* (B's architecture and config, weights drawn from B's initializer
distribution with a fixed seed, never trained), run on the same windows of the
same note and pooled over the same words. What the words alone make alike shows
up in that reference; only CKA above it reflects what B learned.

Why not the cheaper permutation baseline (B's rows shuffled)? It measures only
the chance level of finite samples (0.06-0.10 in the example above) and would
call the untrained model "far above chance". It answers "are these words
matched at all?", not "did training make these layers alike?".

Cost: the copy is run only over the windows of B that hold the compared words.
On a long note the words are therefore sampled window by window (B's windows in
a seeded random order, until they hold ``max_words`` shared words, then a seeded
sample of those): the copy runs 3-4 windows instead of all of them, and the
CKA and its reference are computed on exactly the same words.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cbert_core.errors import TargetError
from cbert_core.model.architecture import anatomy_of
from cbert_core.model.device import device_of
from cbert_core.model.loading import LoadedModel, ModelInfo
from cbert_core.model.precision import autocast
from cbert_core.progress import Progress, part
from cbert_core.run.plan import NotePlan
from cbert_core.run.trace import Trace, trace
from cbert_core.text.tokenization import Comparison, compare

DEFAULT_MAX_WORDS = 1000  # words beyond this are sampled (seeded): [n, n] Gram matrices per layer
REFERENCE_SEED = 12345  # the random-weight copy's weights (any fixed number; not 0, which tools often use)


def casing_for_second_model(first: ModelInfo, second: ModelInfo, first_lowercase: bool | None) -> bool | None:
    """The casing the second model reads the note with.

    The sidebar's casing switch is made for the model in force. It carries over to
    the second model only when both tokenizers are of the same kind (same vocabulary
    casing and same default), e.g. Bio_ClinicalBERT and a model fine-tuned from it.
    Otherwise the second model keeps its own setting: an uncased vocabulary fed
    cased text reads every capitalised word as [UNK].

    Returns:
        None when the second model's casing cannot be switched, else lower-case or not.
    """
    if not second.casing_switchable:
        return None
    same_kind = (first.vocab_cased == second.vocab_cased
                 and first.tokenizer_lowercases == second.tokenizer_lowercases)
    if same_kind and first_lowercase is not None:
        return bool(first_lowercase)
    return second.tokenizer_lowercases


def _centred_gram(features: np.ndarray) -> np.ndarray:
    """float64 [n, n]: Gram matrix of column-centred features [n, d]."""
    centred = features.astype(np.float64)
    centred -= centred.mean(axis=0, keepdims=True)
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


def _unit_grams(states: np.ndarray) -> np.ndarray:
    """float64 [layer, n * n]: each layer's centred Gram matrix, flattened, of unit norm (NaN if constant).

    Args:
        states: [layer, n, d] features of n items at each layer.
    """
    count = states.shape[1]
    grams = np.empty((len(states), count * count), dtype=np.float64)
    for index, layer in enumerate(states):
        grams[index] = _centred_gram(layer).ravel()
    norms = np.linalg.norm(grams, axis=1, keepdims=True)
    return np.divide(grams, norms, out=np.full_like(grams, np.nan), where=norms > 1e-300)


def _cka_columns(grams_a: np.ndarray, states_b: np.ndarray, progress: Progress | None) -> np.ndarray:
    """float32 [layer_a, layer_b]: CKA of A's unit Gram matrices [layer_a, n * n] against each layer of B."""
    result = np.empty((len(grams_a), len(states_b)), dtype=np.float32)
    for column, layer in enumerate(states_b):
        result[:, column] = np.clip(grams_a @ _unit_grams(layer[None])[0], 0.0, 1.0)  # NaN stays NaN
        if progress is not None:
            progress((column + 1) / len(states_b), f"layer {column} of {len(states_b) - 1}")
    return result


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
    return _cka_columns(_unit_grams(states_a), states_b, progress)


def _present_words(result: Trace) -> np.ndarray:
    """int64 [w]: indices of the words (into ``word_spans``) that have at least one piece."""
    pieces = np.bincount(result.word_ids[result.word_ids >= 0], minlength=len(result.word_spans))
    return np.flatnonzero(pieces > 0)


def _word_pieces(result: Trace, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the pieces of ``words`` and the row (index into ``words``) of each, grouped by row.

    Returns:
        (positions int64 [p], rows int64 [p]); rows are non-decreasing.
    """
    lookup = np.full(len(result.word_spans), -1, dtype=np.int64)
    lookup[words] = np.arange(len(words))
    rows = np.where(result.word_ids >= 0, lookup[np.maximum(result.word_ids, 0)], -1)  # [pos]
    positions = np.flatnonzero(rows >= 0)
    order = np.argsort(rows[positions], kind="stable")
    return positions[order], rows[positions][order]


def _pool(piece_states: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 [layer, w, d]: mean of each row's pieces; piece_states [layer, p, d], rows [p] non-decreasing 0..w-1."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    counts = np.diff(np.r_[starts, len(rows)]).astype(np.float32)
    return np.add.reduceat(piece_states.astype(np.float32), starts, axis=1) / counts[None, :, None]


def word_states(result: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each word's pieces at every layer.

    Returns:
        (spans int32 [word, 2] character spans, states float32 [layer + 1, word, hidden]).
    """
    words = _present_words(result)
    positions, rows = _word_pieces(result, words)
    states = _pool(result.hidden_states[:, positions], rows)
    return np.asarray(result.word_spans, dtype=np.int32)[words], states


def _shared_words(trace_a: Trace, trace_b: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Words with the same character span in both traces, in note order.

    Returns:
        (words_a int64 [s], words_b int64 [s]): indices into each trace's ``word_spans``.
    """
    if trace_a.text != trace_b.text:
        raise TargetError("The two models must be compared on the same note: trace both with the same text.")
    present_a, present_b = _present_words(trace_a), _present_words(trace_b)
    width = len(trace_a.text) + 1

    def span_keys(result: Trace, words: np.ndarray) -> np.ndarray:
        spans = np.asarray(result.word_spans, dtype=np.int64)[words]
        return spans[:, 0] * width + spans[:, 1]

    _keys, index_a, index_b = np.intersect1d(span_keys(trace_a, present_a), span_keys(trace_b, present_b),
                                             assume_unique=True, return_indices=True)
    return present_a[index_a], present_b[index_b]


def aligned_word_states(trace_a: Trace, trace_b: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words present in both traces (same character span), with each model's word vectors.

    Returns:
        (spans int32 [w, 2], states_a float32 [layer_a + 1, w, d_a], states_b float32 [layer_b + 1, w, d_b]).

    Raises:
        TargetError: the traces are of different texts.
    """
    words_a, words_b = _shared_words(trace_a, trace_b)
    positions_a, rows_a = _word_pieces(trace_a, words_a)
    positions_b, rows_b = _word_pieces(trace_b, words_b)
    return (np.asarray(trace_a.word_spans, dtype=np.int32)[words_a].reshape(-1, 2),
            _pool(trace_a.hidden_states[:, positions_a], rows_a),
            _pool(trace_b.hidden_states[:, positions_b], rows_b))


def _sample_by_window(trace_b: Trace, words_b: np.ndarray, max_words: int,
                      rng: np.random.Generator) -> np.ndarray:
    """int64 [<= max_words] sorted indices into ``words_b``: all of them, or a sample from a few of B's windows.

    B's windows are taken in a random order until the shared words lying wholly in
    them (every piece owned by a taken window) number ``max_words``; the sample is
    drawn from those words, so only those windows need running again.
    """
    if len(words_b) <= max_words:
        return np.arange(len(words_b))
    positions, rows = _word_pieces(trace_b, words_b)
    owners = trace_b.owner[positions]  # [p]
    taken: list[int] = []
    for window in rng.permutation(len(trace_b.windows)).tolist():
        taken.append(window)
        outside = rows[~np.isin(owners, taken)]
        eligible = np.setdiff1d(np.arange(len(words_b)), outside)
        if len(eligible) >= max_words:
            break
    return np.sort(rng.choice(eligible, size=max_words, replace=False))


def random_weight_copy(loaded: LoadedModel, seed: int = REFERENCE_SEED) -> LoadedModel:
    """``loaded``'s encoder with fresh random weights: same architecture and config, never trained.

    Weights follow BERT's initializer (the one every supported family uses):
    linear and embedding weights ~ N(0, ``initializer_range``), biases 0,
    LayerNorm at identity, padding embeddings 0. They are drawn from a private
    generator seeded with ``seed``, so the copy is the same on every run and
    does not disturb torch's global random state. Buffers (position ids) come
    from the original. No head: the copy is a bare encoder.
    """
    encoder = loaded.model.base_model
    config = copy.deepcopy(encoder.config)
    with torch.device("meta"):  # no memory and no initialization yet
        fresh = type(encoder)(config)
    fresh.to_empty(device=device_of(encoder))
    std = float(getattr(config, "initializer_range", 0.02))
    generator = torch.Generator(device=device_of(encoder)).manual_seed(int(seed))
    done: set[int] = set()
    with torch.no_grad():
        for module in fresh.modules():
            if isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            else:
                continue
            done.update(id(parameter) for parameter in module.parameters(recurse=False))
        for parameter in fresh.parameters():
            if id(parameter) not in done:  # a family-specific parameter: same distribution as the weights
                parameter.normal_(0.0, std, generator=generator)
        for name, buffer in encoder.named_buffers():
            fresh.get_buffer(name).copy_(buffer)
    fresh.eval()
    fresh.requires_grad_(False)
    info = dataclasses.replace(loaded.info, name=f"{loaded.info.name} (random weights)",
                               folder=f"{loaded.info.folder}#random-weights-{seed}", head_kind="encoder", labels=())
    return LoadedModel(model=fresh, anatomy=anatomy_of(fresh), info=info, tokenizers=loaded.tokenizers,
                       device=device_of(fresh))


def window_hidden_states(encoder: nn.Module, result: Trace, positions: np.ndarray,
                         progress: Progress | None = None) -> np.ndarray:
    """float32 [layer + 1, p, hidden]: ``encoder``'s hidden states at ``positions`` of ``result``'s note.

    Each position is taken from the window that owns it in ``result``, with the
    same window input the trace used, so an encoder with the trace's own weights
    gives back ``result.hidden_states[:, positions]``. Only the owning windows run.

    Args:
        encoder: a bare encoder of the trace's architecture (e.g. :func:`random_weight_copy`'s).
        positions: int64 [p] content positions (no [CLS]/[SEP]).
    """
    owners = result.owner[positions]
    windows = np.unique(owners).tolist()
    states: np.ndarray | None = None
    device = device_of(encoder)
    with torch.inference_mode(), autocast(result.precision, device):
        for step, index in enumerate(windows):
            ids = torch.from_numpy(result.input_ids[result.window_positions(index)].copy())[None].to(device)  # [1, t]
            hidden = encoder(input_ids=ids, output_hidden_states=True).hidden_states  # (layer + 1) x [1, t, d]
            mine = np.flatnonzero(owners == index)
            local = torch.from_numpy(positions[mine] - result.windows[index].start).to(device)  # window-local
            chosen = torch.stack([layer[0, local] for layer in hidden]).float().cpu().numpy()  # [layer + 1, m, d]
            if states is None:
                states = np.empty((chosen.shape[0], len(positions), chosen.shape[2]), dtype=np.float32)
            states[:, mine] = chosen
            if progress is not None:
                progress((step + 1) / len(windows), f"window {step + 1} of {len(windows)}")
    if states is None:
        raise ValueError("window_hidden_states needs at least one position")
    return states


@dataclass(frozen=True, kw_only=True)
class ModelComparison:
    """How two models read the same note."""

    model_a: str
    model_b: str
    tokenization: Comparison  # words whose pieces differ (A's words, B's pieces over the same characters)
    cka: np.ndarray  # float32 [layer_a + 1, layer_b + 1]: linear CKA over shared words
    reference: np.ndarray  # float32 [layer_a + 1, layer_b + 1]: CKA of A against a random-weight copy of B
    reference_seed: int  # the copy's weights (see :func:`random_weight_copy`)
    word_spans: np.ndarray  # int32 [w, 2]: the shared words both CKAs were computed on (after sampling)
    words_a: int  # words in A's tokenization
    words_b: int
    shared_words: int  # words with the same span in both (before sampling)
    sampled: bool  # True when shared_words > max_words and a seeded sample was used
    windows_b: int  # B's windows over the note
    reference_windows: int  # of those, the ones the random-weight copy ran (they hold the compared words)

    def __post_init__(self) -> None:
        if self.cka.ndim != 2:
            raise ValueError("ModelComparison.cka must be [layer_a + 1, layer_b + 1]")
        if self.reference.shape != self.cka.shape:
            raise ValueError("ModelComparison.reference must have the shape of cka")
        for array in (self.cka, self.reference, self.word_spans):
            array.flags.writeable = False

    @property
    def best_match(self) -> np.ndarray:
        """int64 [layer_a + 1]: for each layer of A, the layer of B with the highest CKA."""
        return np.nanargmax(np.nan_to_num(self.cka, nan=-1.0), axis=1)

    @property
    def above_reference(self) -> np.ndarray:
        """float32 [layer_a + 1, layer_b + 1]: CKA minus the random-weight reference (what training adds)."""
        return self.cka - self.reference


def compare_traces(trace_a: Trace, trace_b: Trace, *, loaded_a: LoadedModel, loaded_b: LoadedModel,
                   max_words: int = DEFAULT_MAX_WORDS, seed: int = 0, reference_seed: int = REFERENCE_SEED,
                   progress: Progress | None = None) -> ModelComparison:
    """Compare two traces of the same note, each made by the model given beside it.

    Args:
        trace_a, trace_b: the note through ``loaded_a`` and ``loaded_b``.
        loaded_a, loaded_b: the shared models (only their tokenizers and B's architecture are used).
        max_words: shared words beyond this are sampled, window by window (seeded by ``seed``).
        reference_seed: the random-weight copy of B (see the module notes).
        progress: (fraction, message); raising from it stops the work.

    Raises:
        TargetError: different texts, or fewer than two words in common.
    """
    if trace_b.model_key != loaded_b.info.key or trace_a.model_key != loaded_a.info.key:
        raise ValueError("each trace must come from the model given beside it")

    def report(low: float, high: float, what: str) -> Progress | None:
        step = part(progress, low, high)
        return None if step is None else (lambda fraction, message: step(fraction, f"{what}: {message}"))

    words_a, words_b = _shared_words(trace_a, trace_b)
    shared = len(words_a)
    if shared < 2:
        raise TargetError("The two tokenizations share fewer than two words, so their layers cannot be compared. "
                          "Use a longer note.")
    chosen = _sample_by_window(trace_b, words_b, max_words, np.random.default_rng(seed))
    words_a, words_b = words_a[chosen], words_b[chosen]
    positions_a, rows_a = _word_pieces(trace_a, words_a)
    positions_b, rows_b = _word_pieces(trace_b, words_b)
    states_a = _pool(trace_a.hidden_states[:, positions_a], rows_a)  # [layer_a + 1, w, d_a]
    states_b = _pool(trace_b.hidden_states[:, positions_b], rows_b)  # [layer_b + 1, w, d_b]

    if progress is not None:
        progress(0.02, f"drawing random weights for a copy of {loaded_b.info.name}")
    copy_b = random_weight_copy(loaded_b, reference_seed)
    random_states = window_hidden_states(copy_b.model, trace_b, positions_b,
                                         progress=report(0.1, 0.7, "the random-weight copy"))
    states_random = _pool(random_states, rows_b)  # [layer_b + 1, w, d_b]
    reference_windows = len(np.unique(trace_b.owner[positions_b]))
    del copy_b, random_states

    grams_a = _unit_grams(states_a)  # [layer_a + 1, w * w], shared by both CKAs
    tokenization = compare(trace_a.text, loaded_a.tokenizer(trace_a.lowercase), loaded_b.tokenizer(trace_b.lowercase))
    return ModelComparison(
        model_a=trace_a.model_name, model_b=trace_b.model_name, tokenization=tokenization,
        cka=_cka_columns(grams_a, states_b, report(0.7, 0.85, "CKA")),
        reference=_cka_columns(grams_a, states_random, report(0.85, 1.0, "CKA of the reference")),
        reference_seed=int(reference_seed), word_spans=np.asarray(trace_a.word_spans, dtype=np.int32)[words_a],
        words_a=len(trace_a.word_spans), words_b=len(trace_b.word_spans), shared_words=shared,
        sampled=shared > max_words, windows_b=len(trace_b.windows), reference_windows=reference_windows,
    )


def compare_models(loaded_a: LoadedModel, plan_a: NotePlan, loaded_b: LoadedModel, plan_b: NotePlan, *,
                   max_words: int = DEFAULT_MAX_WORDS, seed: int = 0, reference_seed: int = REFERENCE_SEED,
                   progress: Progress | None = None) -> ModelComparison:
    """Trace one note with both models and compare them.

    Args:
        loaded_a, loaded_b: the two shared models (only called).
        plan_a, plan_b: the same note planned for each model (each with its own casing, see
            :func:`casing_for_second_model`).
        max_words: shared words beyond this are sampled (seeded by ``seed``).
        reference_seed: weights of the random-weight copy of B the CKA is set against.
        progress: (fraction, message); raising from it stops the work.
    """
    if plan_a.text != plan_b.text:
        raise ValueError("both plans must hold the same note")
    trace_a = trace(loaded_a, plan_a, progress=part(progress, 0.0, 0.4))
    trace_b = trace(loaded_b, plan_b, progress=part(progress, 0.4, 0.8))
    return compare_traces(trace_a, trace_b, loaded_a=loaded_a, loaded_b=loaded_b, max_words=max_words, seed=seed,
                          reference_seed=reference_seed, progress=part(progress, 0.8, 1.0))
