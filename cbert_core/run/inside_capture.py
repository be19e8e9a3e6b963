"""One exact, full-precision pass through the model for the "Inside the model" page.

:func:`inside_trace` runs a note that fits in one window through the model once,
in float32 without autocast, and records every intermediate the page walks
through (embedding parts, queries/keys/values, head outputs, both sublayer
updates, every layer's residual stream) plus what the checkpoint's head
computed. It is separate from :func:`cbert_core.run.trace.trace`, whose default stays
as fast as before: none of these sites is captured unless this page asks.

The result, :class:`InsideTrace`, holds numpy arrays only (no torch objects, no
model reference). Positions: 0 is [CLS], 1..n the note's word pieces, n + 1 [SEP].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.errors import ResourceLimitError, TargetError
from cbert_core.model.architecture import LayerAnatomy
from cbert_core.model.heads import OutputLayer, head_adapter
from cbert_core.model.hooks import capture
from cbert_core.model.loading import LoadedModel
from cbert_core.records import frozen_array
from cbert_core.run.plan import NotePlan
from cbert_core.text.tokens import mask_positions

INSIDE_SITES = frozenset({
    "embeddings.word", "embeddings.position", "embeddings.token_type", "embeddings.sum",
    "hidden", "query", "key", "value", "context", "attention_update", "attention_out", "ffn_update",
})
EMBEDDING_PART_SITES = (("word", "embeddings.word"), ("position", "embeddings.position"),
                        ("segment", "embeddings.token_type"))
DEFAULT_INSIDE_TOP_K = 10


@dataclass(frozen=True, kw_only=True)
class InsideTrace:
    """One note's single pass through one model: every intermediate, float32, read-only."""

    model_key: str
    model_name: str
    family: str
    text: str
    lowercase: bool
    mask_id: int | None
    tokens: tuple[str, ...]  # [pos]
    input_ids: np.ndarray  # int64 [pos]
    offsets: np.ndarray  # int32 [pos, 2]; (-1, -1) for [CLS]/[SEP]
    special: np.ndarray  # bool [pos]
    note_positions: np.ndarray  # int64 [pos]: each input's position in the whole note (as in a Trace)
    window: int  # which window of the note this pass is (0 for a note that fits in one)
    window_count: int  # how many windows the note has
    embedding_part_names: tuple[str, ...]  # e.g. ("word", "position", "segment"); DistilBERT has no segment
    embedding_parts: np.ndarray  # float32 [part, pos, d_emb]
    embedding_sum: np.ndarray  # float32 [pos, d_emb]: the model's input of the embedding LayerNorm
    embedding_output: np.ndarray  # float32 [pos, d_emb]: after the embedding LayerNorm (no dropout in eval)
    embedding_projected: bool  # ELECTRA: a linear layer maps embedding_output (d_emb) to hidden_states[0] (d)
    hidden_states: np.ndarray  # float32 [layer + 1, pos, d]: input of each layer and the last output
    queries: np.ndarray  # float32 [layer, head, pos, head_dim]
    keys: np.ndarray  # float32 [layer, head, pos, head_dim]
    values: np.ndarray  # float32 [layer, head, pos, head_dim]
    contexts: np.ndarray  # float32 [layer, head, pos, head_dim]: each head's weighted sum of values
    attention_scale: float  # the factor q.k is multiplied by before the softmax (1 / sqrt(head_dim))
    attention_updates: np.ndarray  # float32 [layer, pos, d]: output projection, before residual + norm
    attention_outputs: np.ndarray  # float32 [layer, pos, d]: after residual + LayerNorm
    ffn_updates: np.ndarray  # float32 [layer, pos, d]: feed-forward output, before residual + norm
    head_contribution_norms: np.ndarray  # float32 [layer, pos, head]: |W_O[:, head] @ context_head|
    output: OutputLayer

    def __post_init__(self) -> None:
        positions = len(self.tokens)
        layers = self.hidden_states.shape[0] - 1
        for name in ("input_ids", "special", "note_positions"):
            if getattr(self, name).shape != (positions,):
                raise ValueError(f"InsideTrace.{name} must have shape [{positions}]")
        if self.embedding_parts.shape[:2] != (len(self.embedding_part_names), positions):
            raise ValueError("InsideTrace.embedding_parts must be [part, pos, d_emb]")
        if not self.embedding_sum.shape == self.embedding_output.shape == self.embedding_parts.shape[1:]:
            raise ValueError("embedding_sum and embedding_output must be [pos, d_emb]")
        for name in ("queries", "keys", "values", "contexts"):
            array = getattr(self, name)
            if array.ndim != 4 or array.shape[0] != layers or array.shape[2] != positions:
                raise ValueError(f"InsideTrace.{name} must be [layer, head, pos, head_dim]")
        for name in ("attention_updates", "attention_outputs", "ffn_updates"):
            if getattr(self, name).shape != (layers, *self.hidden_states.shape[1:]):
                raise ValueError(f"InsideTrace.{name} must be [layer, pos, hidden]")
        if self.head_contribution_norms.shape != (layers, positions, self.queries.shape[1]):
            raise ValueError("InsideTrace.head_contribution_norms must be [layer, pos, head]")
        for array in self._arrays():
            frozen_array(array)

    def _arrays(self) -> list[np.ndarray]:
        return [self.input_ids, self.offsets, self.special, self.note_positions, self.embedding_parts, self.embedding_sum,
                self.embedding_output, self.hidden_states, self.queries, self.keys, self.values, self.contexts,
                self.attention_updates, self.attention_outputs, self.ffn_updates, self.head_contribution_norms]

    @property
    def num_layers(self) -> int:
        return int(self.hidden_states.shape[0] - 1)

    @property
    def num_heads(self) -> int:
        return int(self.queries.shape[1])

    @property
    def head_dim(self) -> int:
        return int(self.queries.shape[3])

    @property
    def num_positions(self) -> int:
        return len(self.tokens)

    @property
    def mask_positions(self) -> np.ndarray:
        """int64 [m]: positions holding the mask token."""
        return mask_positions(self.input_ids, self.mask_id)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays, in bytes (about 0.3 MB per token for a BERT-base model)."""
        return int(sum(array.nbytes for array in self._arrays()))


def inside_trace(loaded: LoadedModel, plan: NotePlan, *, window: int | None = None,
                 max_positions: int | None = None, top_k: int = DEFAULT_INSIDE_TOP_K) -> InsideTrace:
    """Run one window of the planned note through ``loaded`` once, in float32, recording every intermediate.

    Args:
        loaded: the model (shared; only thread-filtered hooks touch it, nothing is changed).
        plan: the note as :func:`cbert_core.run.plan.plan_note` prepared it (the trace's windows).
            This walk is exact: it always runs in float32 with every head, whatever the options say.
        window: which window of a note longer than one pass to run; None: the note must fit in one.
        max_positions: a lower limit on positions than the model's own (e.g. to bound memory).
        top_k: masked-LM candidates kept per position.

    Returns:
        An :class:`InsideTrace`: every intermediate as float32 numpy arrays (hidden states
        [layer + 1, pos, d], queries/keys/values/head outputs [layer, head, pos, head_dim], ...).

    Raises:
        ResourceLimitError: the note does not fit in one pass and no window was chosen, or a window
            is longer than ``max_positions``.
        TargetError: the window does not exist.
    """
    info = loaded.info
    lowercase = plan.lowercase
    tokenizer = loaded.tokenizer(lowercase)
    windows = plan.windows
    limit = info.max_tokens if max_positions is None else min(info.max_tokens, int(max_positions))
    if window is None and len(windows) > 1:
        raise ResourceLimitError(
            f"This page follows one pass through the model, which takes at most {limit} positions "
            f"(the note's word pieces plus the two markers the model adds); this note has "
            f"{plan.positions:,}. Choose a part of the note (a window, a section or a sentence) to walk through."
        )
    if window is None:
        window = 0
    if not 0 <= window < len(windows):
        raise TargetError(f"Window {window + 1} does not exist; the note has {len(windows)} windows.")
    chosen = windows[window]
    if chosen.size + 2 > limit:
        raise ResourceLimitError(f"This walk is limited to {limit} positions; window {window + 1} has {chosen.size + 2}.")
    note = plan.tokens
    positions = chosen.size + 2
    note_positions = np.concatenate([[0], np.arange(chosen.start + 1, chosen.stop + 1),
                                     [plan.positions - 1]]).astype(np.int64)
    anatomy = loaded.anatomy
    device = loaded.device
    input_ids = torch.from_numpy(plan.window_ids(chosen))[None].to(device)  # [1, t]
    with torch.inference_mode():
        with capture(anatomy, INSIDE_SITES) as recording:
            outputs = loaded.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        taken = {site: recording.take(site) for site in INSIDE_SITES}
        recording.clear()
        embedding_sum = taken["embeddings.sum"][0][0]  # [t, d_emb]
        # the model's own LayerNorm, no dropout in eval (where the model is; captures come back to the CPU)
        embedding_output = anatomy.embeddings.norm(embedding_sum.to(device)).cpu()
        per_layer = {site: torch.stack(taken[site])[:, 0] for site in INSIDE_SITES if not site.startswith("emb")}
        heads = {site: _by_head(per_layer[site], anatomy.num_heads) for site in ("query", "key", "value", "context")}
        contribution_norms = torch.stack([
            _head_contribution_norms(layer, heads["context"][index]) for index, layer in enumerate(anatomy.layers)])
        output = head_adapter(info.head_kind).output_layer(loaded, outputs, per_layer["hidden"][-1].float(),
                                                          lowercase, top_k)

    parts = [(name, taken[site][0][0]) for name, site in EMBEDDING_PART_SITES if taken[site]]
    base = getattr(loaded.model, "base_model", loaded.model)
    special = np.zeros(positions, dtype=bool)
    special[[0, -1]] = True
    return InsideTrace(
        model_key=info.key,
        model_name=info.name,
        family=info.family,
        text=plan.text,
        lowercase=lowercase,
        mask_id=note.mask_id,
        tokens=(str(tokenizer.cls_token), *note.tokens[chosen.start:chosen.stop], str(tokenizer.sep_token)),
        input_ids=input_ids[0].cpu().numpy().copy(),
        offsets=np.concatenate([[[-1, -1]], note.offsets[chosen.start:chosen.stop], [[-1, -1]]]).astype(np.int32),
        special=special,
        note_positions=note_positions,
        window=chosen.index,
        window_count=len(windows),
        embedding_part_names=tuple(name for name, _ in parts),
        embedding_parts=torch.stack([part for _, part in parts]).cpu().numpy(),
        embedding_sum=embedding_sum.cpu().numpy(),
        embedding_output=embedding_output.cpu().numpy(),
        embedding_projected=getattr(base, "embeddings_project", None) is not None,
        hidden_states=per_layer["hidden"].cpu().numpy(),
        queries=heads["query"].cpu().numpy(),
        keys=heads["key"].cpu().numpy(),
        values=heads["value"].cpu().numpy(),
        contexts=heads["context"].cpu().numpy(),
        attention_scale=attention_scale(anatomy.layers[0], anatomy.head_dim),
        attention_updates=per_layer["attention_update"].cpu().numpy(),
        attention_outputs=per_layer["attention_out"].cpu().numpy(),
        ffn_updates=per_layer["ffn_update"].cpu().numpy(),
        head_contribution_norms=contribution_norms.cpu().numpy(),
        output=output,
    )


def _by_head(stacked: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[layer, t, h * dh] -> [layer, h, t, dh] (heads are contiguous slices of the last axis)."""
    return stacked.unflatten(-1, (num_heads, -1)).transpose(1, 2).contiguous()


def _head_contribution_norms(layer: LayerAnatomy, context: torch.Tensor) -> torch.Tensor:
    """[t, h]: norm of W_O[:, head slice] @ context_head for each position and head.

    Args:
        context: [h, t, dh] one layer's head outputs.
    """
    heads, _, head_dim = context.shape
    weight = layer.attention_out_proj.weight.float().cpu().unflatten(1, (heads, head_dim))  # [d, h, dh]
    return torch.einsum("htk,dhk->thd", context, weight).norm(dim=-1)


def attention_scale(layer: LayerAnatomy, head_dim: int) -> float:
    """The factor the layer multiplies q.k by before the softmax (1 / sqrt(head_dim) in all supported families)."""
    return float(getattr(layer.self_attention, "scaling", head_dim ** -0.5))


def ffn_activation(layer: LayerAnatomy) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feed-forward activation (GELU in all supported checkpoints) of one layer."""
    module = layer.layer
    intermediate = getattr(module, "intermediate", None)
    if intermediate is not None:
        return intermediate.intermediate_act_fn  # BERT, RoBERTa, ELECTRA
    return module.ffn.activation  # DistilBERT
