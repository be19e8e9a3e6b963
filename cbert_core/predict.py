"""What the checkpoint's head predicts: fill-mask, pseudo-likelihood, labels, zero-shot.

Every function here is a pure function of (LoadedModel, text, settings) and
returns a frozen record of numpy arrays. They share one lean forward pass
(:func:`run_encoder`) built from the model's own modules (so the thread-filtered
knockout hooks of :mod:`cbert_core.hooks` still apply), which

* computes the last layer only at the rows a result needs (the masked position,
  the [CLS] row) instead of at every position,
* computes the head only there (the masked-LM vocabulary projection is a
  [hidden x 28,996] matrix: at every position of a 512-token window that is
  most of a head's cost),
* uses ``scaled_dot_product_attention`` (no [head, t, t] weights kept), and
* can gate heads per batch row (head importance) without any hook.

Positions follow :class:`cbert_core.trace.Trace`: 0 is [CLS], 1..n are the
note's word pieces, n + 1 is [SEP]. Long notes are cut into the same windows
as a trace; a per-token value comes from the window where the token is most
central.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .architecture import OFFSET_POSITION_FAMILIES
from .errors import ResourceLimitError, TargetError, UnsupportedModelError
from .hooks import HeadSet, knockout
from .loading import LoadedModel
from .text import (
    DEFAULT_MAX_CHARS,
    DEFAULT_OVERLAP,
    NoteTokens,
    Window,
    check_note,
    owner_windows,
    plan_windows,
    segment,
    sentence_start_tokens,
    tokenize_note,
)

Progress = Callable[[float, str], None]
DEFAULT_TOP_K = 10
DEFAULT_TEMPERATURE = 0.05
# Inference activations allowed per forward batch (bytes); see estimate_bytes().
DEFAULT_INFERENCE_MEMORY = 1 << 30


class WrongHeadError(TargetError):
    """A method that does not fit the checkpoint's head (e.g. fill-mask on a bare encoder)."""


_HEAD_NAMES = {
    "masked-lm": "a masked-language-model (fill-mask) head",
    "token-classification": "a token-classification (entity) head",
    "sequence-classification": "a sequence-classification head",
    "encoder": "no task head (a bare encoder)",
}
_ADVICE = {
    "masked-lm": "Use fill-mask and the surprise map, or embedding similarity.",
    "token-classification": "Use the entity view, or embedding similarity.",
    "sequence-classification": "Use the class probabilities view, or embedding similarity.",
    "encoder": "Use embedding similarity against label descriptions instead.",
}


def require_head(loaded: LoadedModel, wanted: str, method: str) -> None:
    """Raise :class:`WrongHeadError` unless the checkpoint carries the ``wanted`` head."""
    kind = loaded.info.head_kind
    if kind != wanted:
        raise WrongHeadError(
            f"{method} needs {_HEAD_NAMES[wanted]}, but {loaded.info.name} has {_HEAD_NAMES[kind]}. "
            f"{_ADVICE[kind]}"
        )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


# ---------------------------------------------------------------------------------------------
# The lean forward pass
# ---------------------------------------------------------------------------------------------

def _activation(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    intermediate = getattr(layer, "intermediate", None)
    if intermediate is not None:  # BERT, RoBERTa, ELECTRA
        return intermediate.intermediate_act_fn
    ffn = getattr(layer, "ffn", None)
    if ffn is not None:  # DistilBERT
        return ffn.activation
    raise UnsupportedModelError("This checkpoint's feed-forward layout is not one the explorer knows.")


def word_vectors(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """Word-embedding rows for ``ids`` [b, t] -> [b, t, embedding size] (the attribution input)."""
    return loaded.anatomy.embeddings.word(ids)


def embed(loaded: LoadedModel, words: torch.Tensor) -> torch.Tensor:
    """Add position and segment-0 embeddings to word vectors and normalize.

    Args:
        words: [b, t, embedding size] word-embedding vectors (possibly interpolated).

    Returns:
        [b, t, hidden]: the first layer's input, as the model's embedding layer computes it
        for a sequence without padding.
    """
    parts = loaded.anatomy.embeddings
    length = words.shape[1]
    summed = words
    if parts.token_type is not None:
        summed = summed + parts.token_type.weight[0]
    if parts.position is not None:
        offset = int(loaded.model.config.pad_token_id) + 1 if loaded.anatomy.family in OFFSET_POSITION_FAMILIES else 0
        summed = summed + parts.position.weight[offset:offset + length]
    hidden = parts.norm(summed)
    project = getattr(loaded.model.base_model, "embeddings_project", None)  # ELECTRA
    return project(hidden) if project is not None else hidden


def attention_context(loaded: LoadedModel, index: int, hidden: torch.Tensor, queries: torch.Tensor,
                      key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenated head outputs of layer ``index`` before the output projection.

    Args:
        hidden: [b, t, d] layer input (keys and values).
        queries: [b, q, d] the rows of ``hidden`` whose output is wanted.
        key_mask: bool [b, t], True where a key may be attended (None: all).

    Returns:
        [b, q, heads * head_dim].
    """
    layer = loaded.anatomy.layers[index]
    heads, head_dim = loaded.anatomy.num_heads, loaded.anatomy.head_dim

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (heads, head_dim)).transpose(1, 2)  # [b, h, t, dh]

    mask = key_mask[:, None, None, :] if key_mask is not None else None
    context = F.scaled_dot_product_attention(split(layer.query(queries)), split(layer.key(hidden)),
                                             split(layer.value(hidden)), attn_mask=mask)  # [b, h, q, dh]
    return context.transpose(1, 2).flatten(-2)


def finish_layer(loaded: LoadedModel, index: int, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Output projection (knockout hooks act here), residual, norm and feed-forward of one layer.

    Args:
        context: [b, q, heads * head_dim]; residual: [b, q, d] the layer input at the same rows.

    Returns:
        [b, q, d] the layer output.
    """
    layer = loaded.anatomy.layers[index]
    attended = layer.attention_norm(layer.attention_out_proj(context) + residual)
    update = layer.ffn_out(_activation(layer.layer)(layer.ffn_in(attended)))
    return layer.output_norm(update + attended)


def gate_heads(loaded: LoadedModel, context: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Multiply each head's slice of ``context`` [b, q, h * dh] by ``gate`` [b, h] (0 knocks it out)."""
    shaped = context.unflatten(-1, (loaded.anatomy.num_heads, loaded.anatomy.head_dim))  # [b, q, h, dh]
    return (shaped * gate[:, None, :, None].to(context.dtype)).flatten(-2)


def run_encoder(loaded: LoadedModel, hidden: torch.Tensor, *, start: int = 0, rows: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, head_gate: torch.Tensor | None = None,
                layer_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Run the encoder layers from ``start`` on.

    Args:
        hidden: [b, t, d] input of layer ``start`` (from :func:`embed` when ``start`` is 0).
        rows: int64 [b, m]: only these positions are needed from the last layer
            (None: all positions).
        key_mask: bool [b, t] for padded batches (None: no padding).
        head_gate: [b, layer, head] multipliers of each head's output (None: all 1).
        layer_inputs: if given, the input of every layer run is appended to it.

    Returns:
        [b, t, d] last-layer states, or [b, m, d] at ``rows``.
    """
    layers = len(loaded.anatomy.layers)
    for index in range(start, layers):
        if layer_inputs is not None:
            layer_inputs.append(hidden)
        queries = hidden
        if rows is not None and index == layers - 1:
            queries = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))  # [b, m, d]
        context = attention_context(loaded, index, hidden, queries, key_mask)
        if head_gate is not None:
            context = gate_heads(loaded, context, head_gate[:, index])
        hidden = finish_layer(loaded, index, context, queries)
    if rows is not None and start >= layers:
        hidden = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))
    return hidden


def head_logits(loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The checkpoint's head on last-layer states.

    Args:
        hidden: [b, m, d]. For a sequence-classification head, row 0 must be [CLS].

    Returns:
        masked-lm [b, m, vocab]; token-classification [b, m, labels];
        sequence-classification [b, labels]; a bare encoder returns ``hidden``.
    """
    model, kind = loaded.model, loaded.info.head_kind
    if kind == "masked-lm":
        if hasattr(model, "cls"):
            return model.cls(hidden)
        if hasattr(model, "lm_head"):
            return model.lm_head(hidden)
        if hasattr(model, "vocab_projector"):
            return model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(hidden))))
        if hasattr(model, "generator_lm_head"):
            return model.generator_lm_head(model.generator_predictions(hidden))
    elif kind == "token-classification":
        return model.classifier(hidden)
    elif kind == "sequence-classification":
        if hasattr(model, "pre_classifier"):  # DistilBERT
            return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is not None and isinstance(model.classifier, nn.Linear):  # BERT
            return model.classifier(pooler(hidden))
        return model.classifier(hidden)  # RoBERTa/ELECTRA heads read row 0 themselves
    else:
        return hidden
    raise UnsupportedModelError(f"The {loaded.info.family} masked-LM head has a layout the explorer does not know.")


def forward_ids(loaded: LoadedModel, ids: torch.Tensor, *, rows: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Head output for token ids [b, t] (see :func:`head_logits`), last layer only at ``rows``."""
    return head_logits(loaded, run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)), rows=rows,
                                           key_mask=key_mask))


def estimate_bytes(loaded: LoadedModel, tokens: int, rows: int, *, backward: bool) -> int:
    """Estimated activation memory of a batch of ``rows`` sequences of ``tokens`` positions.

    Forward-only passes keep about one layer's temporaries; a backward pass keeps what
    every layer saved for it (about ten [t, hidden] and two [t, d_ff] arrays per layer,
    with scaled-dot-product attention, which stores no [t, t] weights). Calibrated on
    BERT-base: 128 tokens x 12 rows measured 1.37 GB of extra resident memory.
    """
    info = loaded.info
    per_layer = tokens * (10 * info.hidden_size + 2 * info.intermediate_size) * 4
    if backward:
        return int(rows * (per_layer * info.num_layers * 1.35 + tokens * info.hidden_size * 8))
    return int(rows * (per_layer + tokens * info.num_heads * 4 * 2))


def check_memory(loaded: LoadedModel, tokens: int, rows: int, bound: int, *, backward: bool, what: str) -> None:
    """Raise :class:`ResourceLimitError` when a batch would exceed ``bound`` bytes."""
    need = estimate_bytes(loaded, tokens, rows, backward=backward)
    if need > bound:
        raise ResourceLimitError(
            f"{what} on {tokens} tokens with a batch of {rows} would need about {need / 2**20:,.0f} MB of working "
            f"memory; the limit is {bound / 2**20:,.0f} MB. Use a smaller batch size, a shorter section of the "
            f"note, or raise the memory limit in the settings."
        )


def fit_batch(loaded: LoadedModel, tokens: int, wanted: int, bound: int, *, backward: bool, what: str) -> int:
    """The largest batch up to ``wanted`` that stays within ``bound`` (at least 1, else an error)."""
    check_memory(loaded, tokens, 1, bound, backward=backward, what=what)
    per_row = max(estimate_bytes(loaded, tokens, 1, backward=backward), 1)
    return int(max(1, min(wanted, bound // per_row)))


# ---------------------------------------------------------------------------------------------
# Notes, windows and vocabulary
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A tokenized note cut into windows (no model run yet)."""

    text: str
    lowercase: bool
    note: NoteTokens
    windows: tuple[Window, ...]
    owner: np.ndarray  # int32 [n]: window owning each content token
    cls_id: int
    sep_id: int
    mask_id: int | None
    pad_id: int | None
    cls_token: str
    sep_token: str

    def window_ids(self, window: Window) -> np.ndarray:
        """int64 [window.size + 2]: [CLS] + the window's pieces + [SEP]."""
        return np.concatenate([[self.cls_id], self.note.ids[window.start:window.stop], [self.sep_id]]).astype(np.int64)

    @property
    def positions(self) -> int:
        return len(self.note) + 2

    def global_tokens(self) -> tuple[str, ...]:
        return (self.cls_token, *self.note.tokens, self.sep_token)

    def global_offsets(self) -> np.ndarray:
        return np.concatenate([[[-1, -1]], self.note.offsets, [[-1, -1]]]).astype(np.int32)

    def global_word_ids(self) -> np.ndarray:
        return np.concatenate([[-1], self.note.word_ids, [-1]]).astype(np.int32)


def prepare(loaded: LoadedModel, text: str, *, lowercase: bool | None = None, overlap: int = DEFAULT_OVERLAP,
            max_chars: int = DEFAULT_MAX_CHARS, max_content: int | None = None) -> Prepared:
    """Tokenize ``text`` and plan its windows as :func:`cbert_core.trace.trace` does.

    Args:
        max_content: content tokens per window (None: the model's positions minus 2).

    Raises:
        EmptyNoteError, NoteTooLongError.
    """
    check_note(text, max_chars)
    lowercase = loaded.resolve_lowercase(lowercase)
    tokenizer = loaded.tokenizer(lowercase)
    note = tokenize_note(tokenizer, text)
    limit = loaded.info.max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
    max_content = limit if max_content is None else int(max(8, min(max_content, limit)))
    boundaries: list[int] = []
    if len(note) > max_content:
        boundaries = sentence_start_tokens(note.offsets, [s.start for s in segment(text).sentences])
    windows = plan_windows(len(note), max_content, overlap, boundaries)
    return Prepared(text=text, lowercase=lowercase, note=note, windows=windows,
                    owner=owner_windows(windows, len(note)), cls_id=int(tokenizer.cls_token_id),
                    sep_id=int(tokenizer.sep_token_id), mask_id=tokenizer.mask_token_id,
                    pad_id=tokenizer.pad_token_id, cls_token=str(tokenizer.cls_token),
                    sep_token=str(tokenizer.sep_token))


def vocabulary_id(loaded: LoadedModel, word: str, *, lowercase: bool | None = None) -> int:
    """The vocabulary id of ``word``: an exact vocabulary entry, else the one piece the tokenizer makes of it.

    An exact entry wins so that a token the model shows as a prediction (for example
    "Patient" or "##d" from a cased vocabulary read through a lower-casing tokenizer,
    as with Bio_ClinicalBERT) scores as itself; other text goes through the tokenizer
    ("PAIN" -> "pain").

    Raises:
        TargetError: empty, split into several pieces, or unknown to the vocabulary.
    """
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(lowercase))
    shown = (word or "").strip()
    if not shown:
        raise TargetError("Type the word whose probability you want to see.")
    unk = tokenizer.unk_token_id
    exact = tokenizer.get_vocab().get(shown)
    if exact is not None and (exact != unk or shown == tokenizer.unk_token):
        return int(exact)
    pieces = tokenize_note(tokenizer, shown)
    if len(pieces) != 1 or (unk is not None and int(pieces.ids[0]) == unk):
        split = " ".join(pieces.tokens)
        reason = "is not in the model's vocabulary" if len(pieces) == 1 else f"splits into {len(pieces)} pieces ({split})"
        raise TargetError(
            f"'{shown}' {reason}. The model predicts one word piece per [MASK], so it can only score words its "
            f"vocabulary holds whole. Choose another word, or one of the pieces shown."
        )
    return int(pieces.ids[0])


# ---------------------------------------------------------------------------------------------
# Fill-mask
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FillMaskResult:
    """The masked-LM's candidates at every masked position of a note."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    tokens: tuple[str, ...]  # [pos] the input as run (masks included)
    offsets: np.ndarray  # int32 [pos, 2]; (-1, -1) for [CLS]/[SEP]
    positions: np.ndarray  # int64 [m]: masked positions
    char_spans: np.ndarray  # int32 [m, 2]: text each masked piece stands for
    top_ids: np.ndarray  # int64 [m, k]
    top_tokens: tuple[tuple[str, ...], ...]  # [m][k]
    top_probs: np.ndarray  # float32 [m, k]
    original_ids: np.ndarray  # int64 [m]: the piece that was masked; -1 where the user typed [MASK]
    original_tokens: tuple[str, ...]  # [m]; "" where the user typed [MASK]
    original_probs: np.ndarray  # float32 [m]; NaN where the user typed [MASK]
    candidates: tuple[str, ...] = ()  # [c] words asked about
    candidate_probs: np.ndarray | None = None  # float32 [m, c]
    masked_span: tuple[int, int] | None = None  # characters of the word mask_word() masked

    def __post_init__(self) -> None:
        m = len(self.positions)
        k = self.top_ids.shape[1] if self.top_ids.ndim == 2 else 0
        if self.top_ids.shape != (m, k) or self.top_probs.shape != (m, k) or len(self.top_tokens) != m:
            raise ValueError("FillMaskResult candidates must be [m, k]")
        if self.original_ids.shape != (m,) or self.original_probs.shape != (m,) or self.char_spans.shape != (m, 2):
            raise ValueError("FillMaskResult originals must be [m]")
        if self.candidate_probs is not None and self.candidate_probs.shape != (m, len(self.candidates)):
            raise ValueError("candidate_probs must be [m, candidates]")
        for array in (self.offsets, self.positions, self.char_spans, self.top_ids, self.top_probs,
                      self.original_ids, self.original_probs, self.candidate_probs):
            if array is not None:
                _frozen(array)

    @property
    def original_logprob(self) -> float:
        """Sum of the originals' log-probabilities (each piece scored with all masks in place)."""
        known = self.original_probs[np.isfinite(self.original_probs)]
        return float(np.log(np.maximum(known, 1e-45)).sum()) if known.size else float("nan")


def fill_mask(loaded: LoadedModel, text: str, *, top_k: int = DEFAULT_TOP_K, lowercase: bool | None = None,
              candidates: Sequence[str] = (), knocked_out: Iterable[tuple[int, int]] = (),
              overlap: int = DEFAULT_OVERLAP, max_chars: int = DEFAULT_MAX_CHARS) -> FillMaskResult:
    """Top-k tokens, with probabilities, at every [MASK] the user typed.

    All masks are filled at once (each sees the others as [MASK]). A note longer than
    the model's window predicts each mask in the window where it is most central.

    Args:
        top_k: candidates per mask.
        candidates: words whose probability at each mask is also reported (single pieces).
        knocked_out: (layer, head) pairs zeroed for this run.

    Raises:
        WrongHeadError: the checkpoint has no masked-LM head.
        TargetError: the note has no mask token, or a candidate is not a single piece.
    """
    require_head(loaded, "masked-lm", "Fill-mask")
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    mask = loaded.info.mask_token or "[MASK]"
    masked = np.flatnonzero(prepared.note.ids == prepared.mask_id)
    if masked.size == 0:
        raise TargetError(f"The note has no {mask}. Type {mask} where you want the model to suggest a word, "
                          f"or select a word to mask.")
    return _predict_masks(loaded, prepared, prepared.note.ids, masked, np.full(masked.size, -1, np.int64),
                          top_k=top_k, candidates=candidates, knocked_out=knocked_out, masked_span=None)


def mask_word(loaded: LoadedModel, text: str, char_start: int, char_end: int, *, top_k: int = DEFAULT_TOP_K,
              lowercase: bool | None = None, candidates: Sequence[str] = (),
              knocked_out: Iterable[tuple[int, int]] = (), overlap: int = DEFAULT_OVERLAP,
              max_chars: int = DEFAULT_MAX_CHARS) -> FillMaskResult:
    """Mask every piece of the word(s) overlapping text[char_start:char_end] and fill them in.

    Every piece of the chosen word becomes the mask id (multi-mask); the result gives the
    top-k per piece and the probability of each original piece. Other masks the user
    typed stay masked and are reported too (``original_ids`` -1).

    Raises:
        WrongHeadError, TargetError: the span covers no word piece.
    """
    require_head(loaded, "masked-lm", "Masking a word")
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    note = prepared.note
    hit = np.flatnonzero((note.offsets[:, 0] < char_end) & (note.offsets[:, 1] > char_start))
    if char_end <= char_start or hit.size == 0:
        raise TargetError("The selection holds no word. Select (part of) a word in the note to mask it.")
    chosen = np.flatnonzero(np.isin(note.word_ids, np.unique(note.word_ids[hit])))
    ids = note.ids.copy()
    originals = np.where(ids[chosen] == prepared.mask_id, -1, ids[chosen]).astype(np.int64)
    ids[chosen] = prepared.mask_id
    typed = np.setdiff1d(np.flatnonzero(note.ids == prepared.mask_id), chosen)
    masked = np.concatenate([chosen, typed])
    original_ids = np.concatenate([originals, np.full(typed.size, -1, np.int64)])
    order = np.argsort(masked, kind="stable")
    span = (int(note.offsets[chosen, 0].min()), int(note.offsets[chosen, 1].max()))
    return _predict_masks(loaded, prepared, ids, masked[order], original_ids[order], top_k=top_k,
                          candidates=candidates, knocked_out=knocked_out, masked_span=span)


def _predict_masks(loaded: LoadedModel, prepared: Prepared, ids: np.ndarray, masked: np.ndarray,
                   original_ids: np.ndarray, *, top_k: int, candidates: Sequence[str],
                   knocked_out: Iterable[tuple[int, int]], masked_span: tuple[int, int] | None) -> FillMaskResult:
    """Run the windows owning ``masked`` (content indices) with ``ids`` [n] as input."""
    candidate_ids = [vocabulary_id(loaded, word, lowercase=prepared.lowercase) for word in candidates]
    tokenizer = loaded.tokenizer(prepared.lowercase)
    k = int(max(1, min(top_k, loaded.info.vocab_size)))
    m = masked.size
    top_ids = np.zeros((m, k), np.int64)
    top_probs = np.zeros((m, k), np.float32)
    original_probs = np.full(m, np.nan, np.float32)
    candidate_probs = np.zeros((m, len(candidate_ids)), np.float32)
    owners = prepared.owner[masked]
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        for window_index in np.unique(owners):
            window = prepared.windows[int(window_index)]
            mine = np.flatnonzero(owners == window_index)
            window_ids = np.concatenate([[prepared.cls_id], ids[window.start:window.stop], [prepared.sep_id]])
            rows = torch.from_numpy(masked[mine] - window.start + 1)[None]  # [1, r]
            logits = forward_ids(loaded, torch.from_numpy(window_ids.astype(np.int64))[None], rows=rows)[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # [r, vocab]
            values, indices = torch.topk(logprobs, k, dim=-1)
            top_ids[mine] = indices.numpy()
            top_probs[mine] = values.exp().numpy()
            known = original_ids[mine] >= 0
            if known.any():
                picked = logprobs[torch.from_numpy(np.flatnonzero(known)), torch.from_numpy(original_ids[mine][known])]
                original_probs[mine[known]] = picked.exp().numpy()
            if candidate_ids:
                candidate_probs[mine] = logprobs[:, candidate_ids].exp().numpy()
    note = prepared.note
    return FillMaskResult(
        model_key=loaded.info.key, text=prepared.text, lowercase=prepared.lowercase, knocked_out=heads,
        tokens=(prepared.cls_token, *tokenizer.convert_ids_to_tokens(ids.tolist()), prepared.sep_token),
        offsets=prepared.global_offsets(), positions=(masked + 1).astype(np.int64),
        char_spans=note.offsets[masked].astype(np.int32).reshape(-1, 2), top_ids=top_ids,
        top_tokens=tuple(tuple(tokenizer.convert_ids_to_tokens(row.tolist())) for row in top_ids),
        top_probs=top_probs, original_ids=original_ids.astype(np.int64),
        original_tokens=tuple(tokenizer.convert_ids_to_tokens(int(i)) if i >= 0 else "" for i in original_ids),
        original_probs=original_probs, candidates=tuple(candidates),
        candidate_probs=candidate_probs if candidate_ids else None, masked_span=masked_span,
    )


# ---------------------------------------------------------------------------------------------
# Pseudo-log-likelihood (surprise map)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PseudoLikelihood:
    """Per-token and per-word pseudo-log-likelihood: how expected each piece is in its context."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    tokens: tuple[str, ...]  # [pos]
    offsets: np.ndarray  # int32 [pos, 2]
    word_ids: np.ndarray  # int32 [pos]; -1 for [CLS]/[SEP]
    token_logprobs: np.ndarray  # float32 [pos]: log p(original | rest); NaN for specials and typed masks
    expected_ids: np.ndarray  # int64 [pos]: the model's first choice at each masked position (-1 specials)
    expected_tokens: tuple[str, ...]  # [pos]
    word_spans: np.ndarray  # int32 [word, 2]
    word_logprobs: np.ndarray  # float32 [word]: sum over the word's pieces (NaN if any piece is NaN)
    windows: tuple[Window, ...]
    stride: int  # 0: exact (one mask per copy); s: tokens masked together are s apart
    forward_rows: int  # masked copies run
    seconds: float

    def __post_init__(self) -> None:
        positions = len(self.tokens)
        for name in ("word_ids", "token_logprobs", "expected_ids"):
            if getattr(self, name).shape != (positions,):
                raise ValueError(f"PseudoLikelihood.{name} must be [pos]")
        if self.word_logprobs.shape != (len(self.word_spans),):
            raise ValueError("word_logprobs must be [word]")
        for array in (self.offsets, self.word_ids, self.token_logprobs, self.expected_ids, self.word_spans,
                      self.word_logprobs):
            _frozen(array)

    @property
    def total(self) -> float:
        """The note's pseudo-log-likelihood (sum over scored pieces)."""
        return float(np.nansum(self.token_logprobs))


def pseudo_log_likelihood(loaded: LoadedModel, text: str, *, batch_size: int = 8, stride: int = 0,
                          window_tokens: int | None = None, lowercase: bool | None = None,
                          knocked_out: Iterable[tuple[int, int]] = (), overlap: int = DEFAULT_OVERLAP,
                          max_chars: int = DEFAULT_MAX_CHARS, memory_limit: int = DEFAULT_INFERENCE_MEMORY,
                          progress: Progress | None = None) -> PseudoLikelihood:
    """Mask each piece in turn and score the original piece (Salazar et al. 2020).

    Many masked copies run in one batch; each copy needs the last layer and the
    vocabulary projection only at its masked position. Each piece is scored in the
    window where it is most central.

    The exact score costs one forward pass of the window per piece (n^2 work): about
    45 TFLOP for 512 pieces of a BERT-base, i.e. several minutes on two CPU cores
    (the benchmark measured 5-15 minutes on a shared machine). ``stride`` trades
    exactness for speed: with stride s, one copy masks every s-th piece at once, so a
    window needs s copies instead of n. Each piece is then scored with the pieces s,
    2s, ... away from it masked too (1/s of the context, like MLM pretraining's 15 %
    masking when s is 7). ``stride`` >= the window size is exact.

    Args:
        batch_size: masked copies per forward pass.
        stride: 0 (exact) or the spacing of pieces masked together.
        window_tokens: content pieces per window (None: the model's maximum); smaller
            windows are faster and see less context.
        memory_limit: bytes a batch may use; larger batches are refused.
        progress: called with (fraction, message) after each batch.

    Raises:
        WrongHeadError, ResourceLimitError, EmptyNoteError, NoteTooLongError.
    """
    require_head(loaded, "masked-lm", "The surprise map (pseudo-likelihood)")
    started = time.perf_counter()
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars,
                       max_content=window_tokens)
    note = prepared.note
    n = len(note)
    batch_size = int(max(1, batch_size))
    longest = max(w.size for w in prepared.windows) + 2
    check_memory(loaded, longest, batch_size, memory_limit, backward=False, what="The surprise map")
    scorable = note.ids != prepared.mask_id
    # One job per masked copy: (window, content indices masked together).
    jobs: list[tuple[int, np.ndarray]] = []
    for window in prepared.windows:
        owned = np.flatnonzero((prepared.owner == window.index) & scorable)
        if owned.size == 0:
            continue
        groups = [owned[i:i + 1] for i in range(owned.size)] if stride <= 0 or stride >= owned.size else \
            [owned[j::stride] for j in range(stride)]
        jobs += [(window.index, group) for group in groups]
    logprobs = np.full(n, np.nan, np.float32)
    expected = np.full(n, -1, np.int64)
    done = 0
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        for window in prepared.windows:
            mine = [group for index, group in jobs if index == window.index]
            base = torch.from_numpy(prepared.window_ids(window))
            for first in range(0, len(mine), batch_size):
                batch = mine[first:first + batch_size]
                width = max(group.size for group in batch)
                rows = np.stack([np.resize(group, width) for group in batch]) - window.start + 1  # [b, m] local
                ids = base.repeat(len(batch), 1)
                row_index = torch.from_numpy(rows)
                ids.scatter_(1, row_index, int(prepared.mask_id))
                logits = forward_ids(loaded, ids, rows=row_index).float()  # [b, m, vocab]
                originals = base[row_index]  # [b, m]
                lse = torch.logsumexp(logits, dim=-1)
                picked = logits.gather(-1, originals[..., None])[..., 0] - lse  # [b, m]
                best = logits.argmax(-1)
                for row, group in enumerate(batch):
                    logprobs[group] = picked[row, :group.size].numpy()
                    expected[group] = best[row, :group.size].numpy()
                done += len(batch)
                _report(progress, done / max(len(jobs), 1), f"Scored {done} of {len(jobs)} masked copies")
    tokenizer = loaded.tokenizer(prepared.lowercase)
    token_logprobs = np.concatenate([[np.nan], logprobs, [np.nan]]).astype(np.float32)
    expected_ids = np.concatenate([[-1], expected, [-1]]).astype(np.int64)
    words = len(note.word_spans)
    word_logprobs = np.zeros(words, np.float64)
    np.add.at(word_logprobs, note.word_ids, logprobs.astype(np.float64))  # NaN propagates
    return PseudoLikelihood(
        model_key=loaded.info.key, text=text, lowercase=prepared.lowercase, knocked_out=heads,
        tokens=prepared.global_tokens(), offsets=prepared.global_offsets(), word_ids=prepared.global_word_ids(),
        token_logprobs=token_logprobs, expected_ids=expected_ids,
        expected_tokens=tuple(tokenizer.convert_ids_to_tokens(int(i)) if i >= 0 else "" for i in expected_ids),
        word_spans=np.array(note.word_spans, dtype=np.int32), word_logprobs=word_logprobs.astype(np.float32),
        windows=prepared.windows, stride=int(max(stride, 0)), forward_rows=len(jobs),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Classification heads
# ---------------------------------------------------------------------------------------------

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
            _frozen(array)


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


def _run_windows(loaded: LoadedModel, prepared: Prepared, *, rows_for: Callable[[Window], np.ndarray | None],
                 knocked_out: Iterable[tuple[int, int]], progress: Progress | None,
                 message: str) -> tuple[list[np.ndarray], HeadSet]:
    """Head output per window (float32 numpy), last layer only at ``rows_for(window)``."""
    outputs: list[np.ndarray] = []
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        for window in prepared.windows:
            rows = rows_for(window)
            row_tensor = None if rows is None else torch.from_numpy(rows.astype(np.int64))[None]
            logits = forward_ids(loaded, torch.from_numpy(prepared.window_ids(window))[None], rows=row_tensor)
            outputs.append(logits[0].float().numpy())
            _report(progress, (window.index + 1) / len(prepared.windows),
                    f"{message}: window {window.index + 1} of {len(prepared.windows)}")
    return outputs, heads


def token_labels(loaded: LoadedModel, text: str, *, lowercase: bool | None = None,
                 knocked_out: Iterable[tuple[int, int]] = (), overlap: int = DEFAULT_OVERLAP,
                 max_chars: int = DEFAULT_MAX_CHARS, progress: Progress | None = None) -> TokenLabels:
    """Label probabilities per piece and entity spans (words labelled by their first piece).

    Raises:
        WrongHeadError: the checkpoint has no token-classification head.
    """
    require_head(loaded, "token-classification", "Entity labelling")
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    outputs, heads = _run_windows(loaded, prepared, rows_for=lambda window: None, knocked_out=knocked_out,
                                  progress=progress, message="Labelling")
    labels = loaded.info.labels or tuple(f"LABEL_{i}" for i in range(outputs[0].shape[-1]))
    n = len(prepared.note)
    probs = np.zeros((n + 2, len(labels)), np.float32)
    for window, logits in zip(prepared.windows, outputs):
        window_probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()  # [t, label]
        owned = np.flatnonzero(prepared.owner == window.index)
        probs[owned + 1] = window_probs[owned - window.start + 1]
        if window.index == 0:
            probs[0] = window_probs[0]
        if window.index == len(prepared.windows) - 1:
            probs[-1] = window_probs[-1]
    note = prepared.note
    first_piece = np.unique(note.word_ids, return_index=True)[1]  # [word] content index of each word's first piece
    word_probs = probs[first_piece + 1]
    word_labels = word_probs.argmax(-1).astype(np.int32)
    word_scores = word_probs[np.arange(len(word_labels)), word_labels].astype(np.float32)
    spans = np.array(note.word_spans, dtype=np.int32)
    return TokenLabels(model_key=loaded.info.key, text=text, lowercase=prepared.lowercase, knocked_out=heads,
                       labels=labels, tokens=prepared.global_tokens(), offsets=prepared.global_offsets(), probs=probs,
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
        _frozen(self.window_probs)
        _frozen(self.probs)


def classify(loaded: LoadedModel, text: str, *, lowercase: bool | None = None,
             knocked_out: Iterable[tuple[int, int]] = (), overlap: int = DEFAULT_OVERLAP,
             max_chars: int = DEFAULT_MAX_CHARS, progress: Progress | None = None) -> ClassProbabilities:
    """Label probabilities of a sequence classifier; a long note averages its windows' probabilities.

    Raises:
        WrongHeadError: the checkpoint has no sequence-classification head.
    """
    require_head(loaded, "sequence-classification", "Note classification")
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    outputs, heads = _run_windows(loaded, prepared, rows_for=lambda window: np.array([0]), knocked_out=knocked_out,
                                  progress=progress, message="Classifying")
    window_probs = torch.softmax(torch.from_numpy(np.stack(outputs)), dim=-1).numpy().astype(np.float32)
    labels = loaded.info.labels or tuple(f"LABEL_{i}" for i in range(window_probs.shape[-1]))
    return ClassProbabilities(model_key=loaded.info.key, text=text, lowercase=prepared.lowercase, knocked_out=heads,
                              labels=labels, windows=prepared.windows, window_probs=window_probs,
                              probs=window_probs.mean(0).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Zero-shot embedding similarity (any encoder; meant for sentence encoders such as MiniLM)
# ---------------------------------------------------------------------------------------------

def pooled_embeddings(loaded: LoadedModel, sequences: Sequence[np.ndarray], *, cls_id: int, sep_id: int,
                      batch_size: int = 16) -> torch.Tensor:
    """Mean-pooled last-layer embeddings of content-id sequences (specials added), unnormalized.

    Mean pooling runs over every position of the input, [CLS] and [SEP] included, as
    sentence-transformers pools all-MiniLM-L6-v2. A sequence longer than the model's
    window is cut into windows whose embeddings are averaged, weighted by length.
    Must run inside the caller's no-grad / knockout context.

    Returns:
        float32 [sequences, hidden].
    """
    limit = loaded.info.max_tokens - 2
    pieces: list[tuple[int, np.ndarray]] = []  # (sequence index, window content ids)
    for index, ids in enumerate(sequences):
        for window in plan_windows(max(len(ids), 1), limit, DEFAULT_OVERLAP):
            pieces.append((index, ids[window.start:window.stop]))
    hidden = loaded.info.hidden_size
    sums = torch.zeros(len(sequences), hidden)
    weights = torch.zeros(len(sequences))
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))
    for first in range(0, len(order), batch_size):
        chunk = [pieces[i] for i in order[first:first + batch_size]]
        width = max(len(ids) for _, ids in chunk) + 2
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        keep = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, (_, content) in enumerate(chunk):
            full = np.concatenate([[cls_id], content, [sep_id]]).astype(np.int64)
            ids[row, :full.size] = torch.from_numpy(full)
            keep[row, :full.size] = True
        states = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)),
                             key_mask=None if bool(keep.all()) else keep)  # [b, t, d]
        mean = (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)  # [b, d]
        for row, (index, content) in enumerate(chunk):
            sums[index] += mean[row].float() * len(content)
            weights[index] += len(content)
    return sums / weights.clamp_min(1)[:, None]


def description_embedding(loaded: LoadedModel, description: str, *, lowercase: bool | None = None) -> np.ndarray:
    """float32 [hidden]: the unit-length mean-pooled embedding of a label description."""
    return _description_matrix(loaded, [description], lowercase=lowercase, knocked_out=())[0]


def _description_matrix(loaded: LoadedModel, descriptions: Sequence[str], *, lowercase: bool | None,
                        knocked_out: Iterable[tuple[int, int]]) -> np.ndarray:
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(lowercase))
    cleaned = [str(d).strip() for d in descriptions]
    if not cleaned or any(not d for d in cleaned):
        raise TargetError("Give at least one label description, each with some text "
                          "(for example 'pneumonia present' and 'no evidence of pneumonia').")
    sequences = [tokenize_note(tokenizer, d).ids for d in cleaned]
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out):
        vectors = pooled_embeddings(loaded, sequences, cls_id=int(tokenizer.cls_token_id),
                                    sep_id=int(tokenizer.sep_token_id))
    return F.normalize(vectors, dim=-1).numpy().astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class SimilarityResult:
    """Zero-shot embedding similarity between a note (and its sentences) and label descriptions.

    This is cosine similarity of mean-pooled embeddings, turned into a softmax over the
    descriptions with a temperature: a ranking aid, not a calibrated probability.
    """

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    descriptions: tuple[str, ...]  # [label]
    temperature: float
    note_similarity: np.ndarray  # float32 [label]: cosine
    note_probs: np.ndarray  # float32 [label]: softmax(cosine / temperature)
    sentence_spans: np.ndarray  # int32 [sentence, 2]
    sentence_similarity: np.ndarray  # float32 [sentence, label]
    sentence_probs: np.ndarray  # float32 [sentence, label]

    def __post_init__(self) -> None:
        labels, sentences = len(self.descriptions), len(self.sentence_spans)
        if self.note_similarity.shape != (labels,) or self.note_probs.shape != (labels,):
            raise ValueError("note arrays must be [label]")
        if self.sentence_similarity.shape != (sentences, labels) or self.sentence_probs.shape != (sentences, labels):
            raise ValueError("sentence arrays must be [sentence, label]")
        for array in (self.note_similarity, self.note_probs, self.sentence_spans, self.sentence_similarity,
                      self.sentence_probs):
            _frozen(array)


def embedding_similarity(loaded: LoadedModel, text: str, descriptions: Sequence[str], *,
                         temperature: float = DEFAULT_TEMPERATURE, per_sentence: bool = True,
                         lowercase: bool | None = None, knocked_out: Iterable[tuple[int, int]] = (),
                         max_chars: int = DEFAULT_MAX_CHARS, progress: Progress | None = None) -> SimilarityResult:
    """Zero-shot labelling by embedding similarity (works with any encoder, best with sentence encoders).

    The note (and, with ``per_sentence``, each sentence from :func:`cbert_core.text.segment`)
    is mean-pooled over the last layer and compared by cosine similarity with each
    description's embedding; ``softmax(cosine / temperature)`` ranks the descriptions.

    Raises:
        TargetError: no description, or an empty one; ValueError: temperature <= 0.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    check_note(text, max_chars)
    lowercase = loaded.resolve_lowercase(lowercase)
    tokenizer = loaded.tokenizer(lowercase)
    labels = _description_matrix(loaded, descriptions, lowercase=lowercase, knocked_out=knocked_out)  # [label, d]
    note = tokenize_note(tokenizer, text)
    spans: list[tuple[int, int]] = []
    sequences = [note.ids]
    if per_sentence:
        for sentence in segment(text).sentences:
            inside = np.flatnonzero((note.offsets[:, 0] >= sentence.start) & (note.offsets[:, 0] < sentence.end))
            if inside.size:
                spans.append((sentence.start, sentence.end))
                sequences.append(note.ids[inside])
    _report(progress, 0.1, "Embedding the note")
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        vectors = F.normalize(pooled_embeddings(loaded, sequences, cls_id=int(tokenizer.cls_token_id),
                                                sep_id=int(tokenizer.sep_token_id)), dim=-1)
    similarity = (vectors @ torch.from_numpy(labels).T).numpy().astype(np.float32)  # [1 + sentence, label]
    probs = torch.softmax(torch.from_numpy(similarity) / temperature, dim=-1).numpy().astype(np.float32)
    _report(progress, 1.0, "Done")
    return SimilarityResult(
        model_key=loaded.info.key, text=text, lowercase=lowercase, knocked_out=heads,
        descriptions=tuple(str(d).strip() for d in descriptions), temperature=float(temperature),
        note_similarity=similarity[0], note_probs=probs[0],
        sentence_spans=np.array(spans, dtype=np.int32).reshape(-1, 2),
        sentence_similarity=similarity[1:], sentence_probs=probs[1:],
    )
