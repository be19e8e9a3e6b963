"""The "Inside the model" page's analyses: one note walked through embeddings, layers and head.

Data flow: ``inside_trace(loaded, text)`` (one exact float32 pass, see
:mod:`cbert_core.run.inside_capture`) -> the panel functions below -> views.

* :func:`embedding_walk`: word / position / segment parts per token, their norms and shares.
* :func:`attention_step`: one layer, head and query token: q, k, q.k / sqrt(d_k), softmax,
  weighted values, and the head's share of the attention output. Pure numpy.
* :func:`encoder_stack`: per layer and token, the size of each sublayer's update relative
  to the residual stream it is added to. Pure numpy.
* :func:`logit_lens`: the masked-LM head applied to every layer's hidden state at one position.
  Runs the head only (not the model).
* :func:`verify_layer`: re-derives one layer from the captured pieces with the model's weights.

The output panel reads :attr:`InsideTrace.output` (an :class:`OutputLayer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.errors import TargetError
from cbert_core.model.heads import mlm_head
from cbert_core.model.loading import LoadedModel
from cbert_core.records import frozen
from cbert_core.run.inside_capture import (
    DEFAULT_INSIDE_TOP_K,
    InsideTrace,
    ffn_activation,
)


def _norms(vectors: np.ndarray) -> np.ndarray:
    """float32 [...]: Euclidean norm over the last axis, accumulated in float64."""
    return np.linalg.norm(vectors.astype(np.float64), axis=-1).astype(np.float32)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return (numerator / np.where(denominator == 0, 1, denominator)).astype(np.float32)


def _check_index(value: int, count: int, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < count:
        raise TargetError(f"There is no {what} {value}: choose one from 0 to {count - 1}.")
    return int(value)


def _content_mask(special: np.ndarray) -> np.ndarray:
    """bool [pos]: the note's own pieces, or every position for a note with none."""
    return ~special if (~special).any() else np.ones_like(special)


@dataclass(frozen=True, kw_only=True)
class EmbeddingWalk:
    """The embedding layer, token by token: parts, their sizes and shares, sum and normalized output."""

    tokens: tuple[str, ...]  # [pos]
    part_names: tuple[str, ...]  # [part]: "word", "position", and "segment" where the model has one
    parts: np.ndarray  # float32 [part, pos, d_emb]: the learned vectors that are added up
    part_norms: np.ndarray  # float32 [part, pos]
    norm_shares: np.ndarray  # float32 [pos, part]: each part's norm over the sum of the parts' norms (rows add to 1)
    projection_shares: np.ndarray  # float32 [pos, part]: <part, sum> / |sum|^2 (rows add to 1, may be negative)
    note_norm_shares: np.ndarray  # float32 [part]: norm shares averaged over the note's pieces (specials excluded)
    sum: np.ndarray  # float32 [pos, d_emb]: the model's pre-LayerNorm sum
    sum_norms: np.ndarray  # float32 [pos]
    sum_error: float  # max |sum of the parts - the model's sum| (float rounding only)
    output: np.ndarray  # float32 [pos, d_emb]: after the LayerNorm
    output_norms: np.ndarray  # float32 [pos]
    projected: bool  # True: a projection maps ``output`` to the first layer's input (ELECTRA)
    layer_input_norms: np.ndarray  # float32 [pos]: norm of what enters layer 1

    def __post_init__(self) -> None:
        frozen(self.part_norms, self.norm_shares, self.projection_shares, self.note_norm_shares, self.sum_norms,
                self.output_norms, self.layer_input_norms)


def embedding_walk(inside: InsideTrace) -> EmbeddingWalk:
    """The embedding panel's numbers for every token of ``inside``."""
    parts = inside.embedding_parts  # [part, pos, d_emb]
    part_norms = _norms(parts)  # [part, pos]
    norm_shares = _safe_divide(part_norms.T, part_norms.sum(axis=0)[:, None])  # [pos, part]
    total = inside.embedding_sum.astype(np.float64)  # [pos, d_emb]
    dots = np.einsum("ptd,td->tp", parts.astype(np.float64), total)  # [pos, part]
    projection_shares = _safe_divide(dots, (total ** 2).sum(-1)[:, None])
    content = _content_mask(inside.special)
    sum_error = float(np.abs(parts.astype(np.float64).sum(0) - total).max())
    return EmbeddingWalk(
        tokens=inside.tokens, part_names=inside.embedding_part_names, parts=parts, part_norms=part_norms,
        norm_shares=norm_shares, projection_shares=projection_shares,
        note_norm_shares=norm_shares[content].mean(axis=0).astype(np.float32),
        sum=inside.embedding_sum, sum_norms=_norms(total), sum_error=sum_error, output=inside.embedding_output,
        output_norms=_norms(inside.embedding_output), projected=inside.embedding_projected,
        layer_input_norms=_norms(inside.hidden_states[0]),
    )


@dataclass(frozen=True, kw_only=True)
class AttentionStep:
    """One head's attention for one query token, step by step, with the model's own numbers."""

    layer: int
    head: int
    query_position: int
    tokens: tuple[str, ...]  # [pos]
    query: np.ndarray  # float32 [head_dim]: the query vector of the chosen token
    keys: np.ndarray  # float32 [pos, head_dim]: every token's key vector
    values: np.ndarray  # float32 [pos, head_dim]: every token's value vector
    scale: float  # 1 / sqrt(head_dim)
    scores: np.ndarray  # float32 [pos]: q.k * scale for every key
    weights: np.ndarray  # float32 [pos]: softmax(scores), adds up to 1
    weighted_values: np.ndarray  # float32 [pos, head_dim]: weights[k] * values[k]
    context: np.ndarray  # float32 [head_dim]: sum of weighted_values, recomputed here
    model_context: np.ndarray  # float32 [head_dim]: the head's output as the model computed it
    head_contribution_norms: np.ndarray  # float32 [head]: |W_O[:, h] @ context_h| for every head of the layer
    head_shares: np.ndarray  # float32 [head]: those norms over their sum (add up to 1)

    def __post_init__(self) -> None:
        frozen(self.query, self.keys, self.values, self.scores, self.weights, self.weighted_values, self.context,
                self.model_context, self.head_contribution_norms, self.head_shares)

    @property
    def share(self) -> float:
        """This head's share of the layer's attention output at the query token."""
        return float(self.head_shares[self.head])

    def top_keys(self, count: int = 5) -> np.ndarray:
        """int64 [count]: positions with the largest weights, largest first."""
        return np.argsort(-self.weights, kind="stable")[:count].astype(np.int64)


def attention_step(inside: InsideTrace, layer: int, head: int, query_position: int) -> AttentionStep:
    """Walk through one head's attention for one query token.

    Args:
        inside: from :func:`inside_trace`.
        layer: 0-based layer index.
        head: 0-based head index.
        query_position: the token whose attention is followed (0 is [CLS]).

    Raises:
        TargetError: an index outside the model or the note.
    """
    layer = _check_index(layer, inside.num_layers, "layer")
    head = _check_index(head, inside.num_heads, "head")
    query_position = _check_index(query_position, inside.num_positions, "token position")
    query = inside.queries[layer, head, query_position]  # [dh]
    keys = inside.keys[layer, head]  # [pos, dh]
    values = inside.values[layer, head]  # [pos, dh]
    scores = (keys.astype(np.float64) @ query.astype(np.float64)) * inside.attention_scale  # [pos]
    exponentials = np.exp(scores - scores.max())
    weights = exponentials / exponentials.sum()
    weighted = weights[:, None] * values.astype(np.float64)  # [pos, dh]
    norms = inside.head_contribution_norms[layer, query_position]  # [head]
    return AttentionStep(
        layer=layer, head=head, query_position=query_position, tokens=inside.tokens, query=query, keys=keys,
        values=values, scale=inside.attention_scale, scores=scores.astype(np.float32),
        weights=weights.astype(np.float32), weighted_values=weighted.astype(np.float32),
        context=weighted.sum(axis=0).astype(np.float32), model_context=inside.contexts[layer, head, query_position],
        head_contribution_norms=norms, head_shares=_safe_divide(norms, norms.sum(keepdims=True)),
    )


@dataclass(frozen=True, kw_only=True)
class EncoderStack:
    """How much each layer's two sublayers change every token's representation."""

    tokens: tuple[str, ...]  # [pos]
    special: np.ndarray  # bool [pos]: [CLS]/[SEP]
    stream_norms: np.ndarray  # float32 [layer + 1, pos]: residual stream entering each layer, and the last output
    attention_update_norms: np.ndarray  # float32 [layer, pos]: |attention update|
    attention_relative: np.ndarray  # float32 [layer, pos]: |attention update| / |stream entering the layer|
    middle_norms: np.ndarray  # float32 [layer, pos]: stream after the attention sublayer (residual + LayerNorm)
    ffn_update_norms: np.ndarray  # float32 [layer, pos]: |feed-forward update|
    ffn_relative: np.ndarray  # float32 [layer, pos]: |feed-forward update| / |stream after attention|
    attention_turn: np.ndarray  # float32 [layer, pos]: 1 - cosine(stream before, after the attention sublayer)
    ffn_turn: np.ndarray  # float32 [layer, pos]: 1 - cosine(stream before, after the feed-forward sublayer)

    def __post_init__(self) -> None:
        frozen(self.stream_norms, self.attention_update_norms, self.attention_relative, self.middle_norms,
                self.ffn_update_norms, self.ffn_relative, self.attention_turn, self.ffn_turn)

    @property
    def layer_attention_relative(self) -> np.ndarray:
        """float32 [layer]: attention_relative averaged over the note's pieces."""
        return self.attention_relative[:, _content_mask(self.special)].mean(axis=1)

    @property
    def layer_ffn_relative(self) -> np.ndarray:
        """float32 [layer]: ffn_relative averaged over the note's pieces."""
        return self.ffn_relative[:, _content_mask(self.special)].mean(axis=1)


def _turn(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """float32 [...]: 1 - cosine similarity over the last axis."""
    before, after = before.astype(np.float64), after.astype(np.float64)
    cosine = (before * after).sum(-1) / np.maximum(
        np.linalg.norm(before, axis=-1) * np.linalg.norm(after, axis=-1), 1e-30)
    return (1.0 - cosine).astype(np.float32)


def encoder_stack(inside: InsideTrace) -> EncoderStack:
    """The encoder-stack panel's [layer, token] arrays."""
    hidden = inside.hidden_states  # [layer + 1, pos, d]
    stream_norms = _norms(hidden)
    attention_norms = _norms(inside.attention_updates)
    middle_norms = _norms(inside.attention_outputs)
    ffn_norms = _norms(inside.ffn_updates)
    return EncoderStack(
        tokens=inside.tokens, special=inside.special, stream_norms=stream_norms,
        attention_update_norms=attention_norms, attention_relative=_safe_divide(attention_norms, stream_norms[:-1]),
        middle_norms=middle_norms, ffn_update_norms=ffn_norms, ffn_relative=_safe_divide(ffn_norms, middle_norms),
        attention_turn=_turn(hidden[:-1], inside.attention_outputs),
        ffn_turn=_turn(inside.attention_outputs, hidden[1:]),
    )


@dataclass(frozen=True, kw_only=True)
class LogitLens:
    """The masked-LM head read off every layer at one position."""

    position: int
    token: str  # the token at ``position`` (often [MASK])
    layer_names: tuple[str, ...]  # [layer + 1]: "embeddings", "layer 1", ...
    top_ids: np.ndarray  # int64 [layer + 1, k]
    top_tokens: tuple[tuple[str, ...], ...]  # [layer + 1][k]
    top_probs: np.ndarray  # float32 [layer + 1, k]
    final_id: int  # the last layer's most likely token
    final_token: str
    final_probs: np.ndarray  # float32 [layer + 1]: that token's probability after each layer
    final_ranks: np.ndarray  # int64 [layer + 1]: its rank after each layer (0 = most likely)
    input_token_probs: np.ndarray  # float32 [layer + 1]: probability of the token actually at ``position``

    def __post_init__(self) -> None:
        frozen(self.top_ids, self.top_probs, self.final_probs, self.final_ranks, self.input_token_probs)


def _check_same_model(loaded: LoadedModel, inside: InsideTrace) -> None:
    if inside.model_key != loaded.info.key:
        raise TargetError(f"These numbers come from {inside.model_name}, not {loaded.info.name}: "
                          f"run the note through the current model again.")


def logit_lens(loaded: LoadedModel, inside: InsideTrace, position: int, *,
               top_k: int = DEFAULT_INSIDE_TOP_K) -> LogitLens:
    """Apply the model's masked-LM head to every layer's hidden state at ``position``.

    At the last layer this equals the model's own masked-LM output. Only the head
    runs (on ``layer + 1`` vectors); the model is not re-run.

    Raises:
        TargetError: the checkpoint has no masked-LM head, the position is outside
            the note, or ``inside`` came from another model.
    """
    _check_same_model(loaded, inside)
    position = _check_index(position, inside.num_positions, "token position")
    if loaded.info.head_kind != "masked-lm":
        raise TargetError(
            f"{loaded.info.name} has no fill-mask head, so its layers cannot be read as word predictions. "
            "Load a masked-language model such as emilyalsentzer/Bio_ClinicalBERT for this panel.")
    head = mlm_head(loaded.model)
    hidden = torch.from_numpy(inside.hidden_states[:, position].copy()).to(loaded.device)  # [layer + 1, d]
    with torch.inference_mode():
        probs = torch.softmax(head(hidden).float(), dim=-1)  # [layer + 1, vocab]
        values, indices = torch.topk(probs, k=min(top_k, probs.shape[-1]), dim=-1)
        final_id = int(indices[-1, 0])
        final_probs = probs[:, final_id]  # [layer + 1]
        final_ranks = (probs > final_probs[:, None]).sum(dim=-1)  # [layer + 1]
        input_token_probs = probs[:, int(inside.input_ids[position])]  # [layer + 1]
    convert = loaded.tokenizer(inside.lowercase).convert_ids_to_tokens
    return LogitLens(
        position=position, token=inside.tokens[position],
        layer_names=("embeddings", *(f"layer {index + 1}" for index in range(inside.num_layers))),
        top_ids=indices.cpu().numpy().astype(np.int64),
        top_tokens=tuple(tuple(str(token) for token in convert(row)) for row in indices.tolist()),
        top_probs=values.cpu().numpy().copy(), final_id=final_id, final_token=str(convert(final_id)),
        final_probs=final_probs.cpu().numpy().copy(),
        final_ranks=final_ranks.cpu().numpy().astype(np.int64), input_token_probs=input_token_probs.cpu().numpy().copy(),
    )


@dataclass(frozen=True, kw_only=True)
class LayerCheck:
    """Largest differences between one layer re-derived from the captured pieces and the model's numbers.

    Each stage starts from the captured input of that stage, so errors do not compound.
    """

    layer: int
    context_error: float  # softmax(q k^T * scale) v vs the captured head outputs
    attention_update_error: float  # output projection of the captured head outputs vs the attention update
    attention_output_error: float  # LayerNorm(stream + attention update) vs the stream after attention
    ffn_update_error: float  # feed-forward of the stream after attention vs the feed-forward update
    layer_output_error: float  # LayerNorm(stream after attention + feed-forward update) vs the next layer's input

    @property
    def max_error(self) -> float:
        return max(self.context_error, self.attention_update_error, self.attention_output_error,
                   self.ffn_update_error, self.layer_output_error)


def verify_layer(loaded: LoadedModel, inside: InsideTrace, layer: int) -> LayerCheck:
    """Re-derive ``layer`` from the captured pieces with the model's own weights (for the page's check line).

    Raises:
        TargetError: the layer is outside the model or ``inside`` came from another model.
    """
    _check_same_model(loaded, inside)
    layer = _check_index(layer, inside.num_layers, "layer")
    parts = loaded.anatomy.layers[layer]

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.copy()).to(loaded.device)

    def error(computed: torch.Tensor, captured: np.ndarray) -> float:
        return float((computed.float() - tensor(captured)).abs().max())

    queries, keys, values = tensor(inside.queries[layer]), tensor(inside.keys[layer]), tensor(inside.values[layer])
    contexts = tensor(inside.contexts[layer])  # [h, t, dh]
    stream, update = tensor(inside.hidden_states[layer]), tensor(inside.attention_updates[layer])  # [t, d]
    middle, ffn_update = tensor(inside.attention_outputs[layer]), tensor(inside.ffn_updates[layer])
    with torch.inference_mode():
        weights = torch.softmax(queries @ keys.transpose(-1, -2) * inside.attention_scale, dim=-1)  # [h, t, t]
        return LayerCheck(
            layer=layer,
            context_error=error(weights @ values, inside.contexts[layer]),
            attention_update_error=error(parts.attention_out_proj(contexts.transpose(0, 1).flatten(1)),
                                         inside.attention_updates[layer]),
            attention_output_error=error(parts.attention_norm(stream + update), inside.attention_outputs[layer]),
            ffn_update_error=error(parts.ffn_out(ffn_activation(parts)(parts.ffn_in(middle))),
                                   inside.ffn_updates[layer]),
            layer_output_error=error(parts.output_norm(middle + ffn_update), inside.hidden_states[layer + 1]),
        )
