"""The lean forward pass every analysis shares, and the note and memory plumbing around it.

* :func:`require_head` refuses a method the checkpoint's head does not fit.
* :func:`vocabulary_id` finds the one vocabulary piece a word stands for (the note itself is
  prepared once, by :func:`cbert_core.run.plan.plan_note`).
* :func:`run_encoder` (with :func:`embed`, :func:`attention_context`, :func:`gate_heads`,
  :func:`finish_layer`, :func:`cbert_core.model.heads.head_logits` and :func:`forward_ids`) is a lean forward
  pass built from the model's own modules (so the thread-filtered knockout hooks of
  :mod:`cbert_core.model.hooks` still apply), which

  * computes the last layer only at the rows a result needs (the masked position,
    the [CLS] row) instead of at every position,
  * computes the head only there (the masked-LM vocabulary projection is a
    [hidden x 28,996] matrix: at every position of a 512-token window that is
    most of a head's cost),
  * uses ``scaled_dot_product_attention`` (no [head, t, t] weights kept), and
  * can gate heads per batch row (head importance) without any hook.
* :func:`estimate_bytes`, :func:`check_memory` and :func:`fit_batch` bound the
  activation memory of a batch.

Positions follow :class:`cbert_core.run.trace.Trace`: 0 is [CLS], 1..n are the
note's word pieces, n + 1 is [SEP]. Long notes are cut into the same windows
as a trace; a per-token value comes from the window where the token is most
central.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cbert_core.errors import ResourceLimitError, TargetError, UnsupportedModelError, WrongHeadError
from cbert_core.model.architecture import OFFSET_POSITION_FAMILIES
from cbert_core.model.heads import head_logits
from cbert_core.model.loading import LoadedModel
from cbert_core.text.tokens import tokenize_note

# Inference activations allowed per forward batch (bytes); see estimate_bytes().
DEFAULT_INFERENCE_MEMORY = 1 << 30


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
    query, key, value = split(layer.query(queries)), split(layer.key(hidden)), split(layer.value(hidden))
    if query.dtype == torch.bfloat16 and query.requires_grad and hidden.shape[1] <= _SHORT_KEYS:
        context = explicit_attention(query, key, value, mask)
    else:
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)  # [b, h, q, dh]
    return context.transpose(1, 2).flatten(-2)


# Up to this many keys, explicit attention is faster than torch's CPU flash kernel for a bf16
# forward + backward (measured 2-3x at 128 keys on AVX512-BF16); beyond it flash wins.
_SHORT_KEYS = 256


def explicit_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(QK^T / sqrt(dh)) V with the softmax in float32; [b, h, q, dh] -> [b, h, q, dh].

    Not ``attention_kernel.explorer_attention``: that one returns the weights for hooks and
    keeps the softmax in the input dtype (CPU autocast leaves softmax in bf16); gradients
    through a bf16 softmax would widen IG's convergence delta.
    """
    scores = (query * query.shape[-1] ** -0.5) @ key.transpose(-1, -2)  # [b, h, q, t]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(value.dtype) @ value


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
                layer_inputs: list[torch.Tensor] | None = None,
                taps: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """Run the encoder layers from ``start`` on.

    Args:
        hidden: [b, t, d] input of layer ``start`` (from :func:`embed` when ``start`` is 0).
        rows: int64 [b, m]: only these positions are needed from the last layer
            (None: all positions).
        key_mask: bool [b, t] for padded batches (None: no padding).
        head_gate: [b, layer, head] multipliers of each head's output (None: all 1).
        layer_inputs: if given, the input of every layer run is appended to it.
        taps: one callable per layer, applied to that layer's output (the caller's own modules, e.g.
            ``nn.Identity`` that captum's layer methods hook; never modules of the shared model).

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
        if taps is not None:
            hidden = taps[index](hidden)
    if rows is not None and start >= layers:
        hidden = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))
    return hidden


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
# Vocabulary
# ---------------------------------------------------------------------------------------------

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
