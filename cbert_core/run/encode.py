"""Run many notes through the shared encoder in padded batches (no hooks, no head).

Used by note embeddings, the corpus token index and the batch CLI, on notes planned by
:func:`cbert_core.run.plan.plan_notes` (the same windows a trace reads). Windows of similar
length are batched together, padded to the longest one in the batch, with an attention mask. Only the encoder runs: a masked-LM head's
[token, vocabulary] logits are never computed. Hidden states come from the
model's own ``output_hidden_states``; attention weights are never requested.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
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
