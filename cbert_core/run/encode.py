"""Run many notes through the shared encoder in padded batches (no hooks).

Used by note embeddings, the corpus token index and the batch engine, on notes planned by
:func:`cbert_core.run.plan.plan_notes` (the same windows a trace reads). Windows of similar
length are batched together, padded to the longest one in the batch, with an attention mask.

* :func:`run_sequences` keeps hidden states of every (or some) layers, from the model's own
  ``output_hidden_states``; no head runs (a masked-LM head's [token, vocabulary] logits are never
  computed) and attention weights are never requested.
* :func:`run_windows` is the batch engine's one pass: the lean forward pass of
  :mod:`cbert_core.run.forward` (scaled-dot-product attention, no [head, t, t] weights), keeping
  only what the analyses asked for: the hidden states of chosen layers, the last layer averaged
  over every position (what zero-shot similarity compares), and a classification head's output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.model.heads import head_adapter, head_logits
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.records import frozen
from cbert_core.run.forward import embed, run_encoder, word_vectors
from cbert_core.serving.speed import Passes

DEFAULT_BATCH_SIZE = 16
DEFAULT_BATCH_TOKENS = 8192  # rows x padded length per forward pass, bounds activation memory


def pad_id(loaded: LoadedModel) -> int:
    """The id padding positions hold (RoBERTa derives position ids from it)."""
    configured = getattr(loaded.model.config, "pad_token_id", None)
    if configured is not None:
        return int(configured)
    tokenizer = loaded.tokenizer()
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def _batches(lengths: np.ndarray, batch_size: int, batch_tokens: int) -> list[np.ndarray]:
    """Indices of sequences per batch: longest first, at most ``batch_size`` rows and ``batch_tokens`` cells."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = max(1, min(batch_size, batch_tokens // max(longest, 1)))
        batches.append(order[start:start + rows])
        start += rows
    return batches


def planned_passes(lengths: Sequence[int], *, batch_size: int = DEFAULT_BATCH_SIZE,
                   batch_tokens: int = DEFAULT_BATCH_TOKENS) -> Passes:
    """The forward passes :func:`run_sequences` runs on sequences of ``lengths`` (for time estimates).

    One (padded length, rows) per batch: a batch runs every row at its longest sequence's length.
    """
    sizes = np.asarray(lengths, dtype=np.int64)
    batches = _batches(sizes, max(1, int(batch_size)), max(1, int(batch_tokens))) if sizes.size else []
    return Passes(forward=tuple((int(sizes[batch].max()), len(batch)) for batch in batches))


def run_sequences(loaded: LoadedModel, sequences: Sequence[np.ndarray], *, layers: Sequence[int] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                  progress: Progress | None = None, what: str = "windows") -> Iterator[tuple[int, np.ndarray]]:
    """Encode id sequences (specials included) in padded batches.

    Args:
        loaded: the shared model; it is only called, never changed.
        sequences: int64 [t_i] input ids per sequence, each within the model's positions.
        layers: hidden-state indices to keep (0 = embeddings); None keeps all.
        batch_size: most sequences per forward pass.
        batch_tokens: most rows x padded length per forward pass.
        progress: called with (fraction, message) after each batch; an exception
            it raises stops the work and propagates.

    Yields:
        (sequence index, float32 [kept layer, t_i, hidden]) in batch order, not input order.
    """
    if not sequences:
        return
    lengths = np.asarray([len(ids) for ids in sequences], dtype=np.int64)
    padding = pad_id(loaded)
    base = loaded.model.base_model
    device = loaded.device
    done = 0
    total = len(sequences)
    for batch in _batches(lengths, max(1, int(batch_size)), max(1, int(batch_tokens))):
        width = int(lengths[batch].max())
        ids = np.full((len(batch), width), padding, dtype=np.int64)  # [b, t]
        mask = np.zeros((len(batch), width), dtype=np.int64)  # [b, t]
        for row, index in enumerate(batch):
            ids[row, :lengths[index]] = sequences[index]
            mask[row, :lengths[index]] = 1
        with torch.inference_mode():
            outputs = base(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
                           output_hidden_states=True)
            states = outputs.hidden_states  # (layer + 1) x [b, t, hidden]
            chosen = range(len(states)) if layers is None else layers
            stacked = torch.stack([states[layer] for layer in chosen]).float().cpu().numpy()  # [kept, b, t, hidden]
        for row, index in enumerate(batch):
            yield int(index), stacked[:, row, :lengths[index]]
        done += len(batch)
        if progress is not None:
            progress(done / total, f"Encoded {done:,} of {total:,} {what}")


@dataclass(frozen=True, kw_only=True)
class WindowOutput:
    """What one pass of :func:`run_windows` keeps of one window (t: its positions, specials included)."""

    states: np.ndarray | None  # float32 [kept layer, t, hidden]: the hidden states asked for (0 = embeddings)
    pooled: np.ndarray | None  # float32 [hidden]: the last layer averaged over all t positions
    head: np.ndarray | None  # float32 classification head: sequence [label], token [t, label]

    def __post_init__(self) -> None:
        frozen(self.states, self.pooled, self.head)


def run_windows(loaded: LoadedModel, sequences: Sequence[np.ndarray], *, layers: Sequence[int] = (),
                pooled: bool = False, head: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                batch_tokens: int = DEFAULT_BATCH_TOKENS, progress: Progress | None = None,
                what: str = "windows") -> Iterator[tuple[int, WindowOutput]]:
    """One lean pass over id sequences in padded batches, keeping only what is asked for.

    The batch engine asks for everything its analyses need at once, so a note runs through the
    model once whatever the mix of embeddings, zero-shot similarity and class predictions.

    Args:
        loaded: the shared model; it is only called, never changed.
        sequences: int64 [t_i] input ids per sequence ([CLS] ... [SEP]), each within the model's positions.
        layers: hidden-state indices to keep (0 = embeddings, -1 = last).
        pooled: keep the last layer's mean over every position, [CLS] and [SEP] included (the
            pooling of :func:`cbert_core.analyses.similarity.pooled_windows`).
        head: keep the output of a sequence- or token-classification head (other heads give none:
            a masked-LM's predictions need masked copies, a bare encoder has no head).
        batch_size, batch_tokens, progress, what: as for :func:`run_sequences`.

    Yields:
        (sequence index, :class:`WindowOutput`) in batch order, not input order.
    """
    if not sequences:
        return
    count = loaded.info.num_layers + 1
    kept = [int(layer) % count for layer in layers]
    with_head = head and head_adapter(loaded.info.head_kind).one_pass_predictions
    lengths = np.asarray([len(ids) for ids in sequences], dtype=np.int64)
    padding = pad_id(loaded)
    done = 0
    for batch in _batches(lengths, max(1, int(batch_size)), max(1, int(batch_tokens))):
        width = int(lengths[batch].max())
        ids = np.full((len(batch), width), padding, dtype=np.int64)  # [b, t]
        keep = np.zeros((len(batch), width), dtype=bool)  # [b, t]
        for row, index in enumerate(batch):
            ids[row, :lengths[index]] = sequences[index]
            keep[row, :lengths[index]] = True
        with torch.inference_mode():
            mask = torch.from_numpy(keep).to(loaded.device)
            inputs: list[torch.Tensor] = []
            last = run_encoder(loaded, embed(loaded, word_vectors(loaded, torch.from_numpy(ids).to(loaded.device))),
                               key_mask=None if keep.all() else mask,
                               layer_inputs=inputs if any(layer < count - 1 for layer in kept) else None)  # [b, t, d]
            states = (torch.stack([inputs[layer] if layer < count - 1 else last for layer in kept]).float().cpu().numpy()
                      if kept else None)  # [kept, b, t, hidden]
            means = ((last.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).cpu().numpy() \
                if pooled else None  # [b, hidden]
            logits = head_logits(loaded, last).float().cpu().numpy() if with_head else None  # [b, label] or [b, t, label]
        for row, index in enumerate(batch):
            size = int(lengths[index])
            yield int(index), WindowOutput(
                states=None if states is None else states[:, row, :size].copy(),
                pooled=None if means is None else means[row].copy(),
                head=None if logits is None else (logits[row, :size] if logits.ndim == 3 else logits[row]).copy())
        done += len(batch)
        if progress is not None:
            progress(done / len(sequences), f"Encoded {done:,} of {len(sequences):,} {what}")
