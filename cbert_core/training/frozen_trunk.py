"""Train only the top of a private classification model without re-running its frozen bottom.

When the embeddings and the lower encoder layers are frozen (and run without
dropout), their output for a given example never changes, so it is computed
once and reused every epoch; only the trainable top layers and the head run
per step. :func:`top_layers_only` swaps, on the caller's *private* model copy,
the embedding module for a feeder of cached states and the layer list for its
top part, and puts both back on exit (also on error). It must never be used on
the shared :class:`~cbert_core.model.loading.LoadedModel`.

For every supported family (BERT, RoBERTa, DistilBERT, ELECTRA) training with
the cache gives the same losses as running the whole model (tests/test_finetune.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from cbert_core.model.architecture import anatomy_of
from cbert_core.model.device import device_of


class CachedEmbeddings(nn.Module):
    """Stands in for the embedding module: returns the states set in :attr:`current`."""

    def __init__(self) -> None:
        super().__init__()
        self.current: torch.Tensor | None = None  # [b, t, hidden]

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        if self.current is None:
            raise RuntimeError("no cached states were set for this batch")
        return self.current


def _slot(model: nn.Module, wanted: Callable[[nn.Module], bool]) -> tuple[nn.Module, str]:
    """(parent, attribute name) of the first submodule for which ``wanted`` holds."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if wanted(child):
                return parent, name
    raise ValueError("module not found in the model")


@contextmanager
def top_layers_only(model: PreTrainedModel, start: int) -> Iterator[CachedEmbeddings]:
    """Inside the block ``model(input_ids=..., attention_mask=...)`` runs layers ``start:`` on cached states.

    Yields:
        The feeder; set ``feeder.current`` to the batch's states at the input of layer ``start``
        ([b, t, hidden], padded like ``attention_mask``) before each call. ``input_ids`` then only
        give the shape.
    """
    anatomy = anatomy_of(model)
    layers = [part.layer for part in anatomy.layers]
    list_parent, list_name = _slot(model, lambda m: isinstance(m, nn.ModuleList) and len(m) == len(layers)
                                   and all(a is b for a, b in zip(m, layers)))
    embedding_parent, embedding_name = _slot(model, lambda m: m is anatomy.embeddings.module)
    original_layers = getattr(list_parent, list_name)
    original_embeddings = getattr(embedding_parent, embedding_name)
    # ELECTRA projects small embeddings up to the hidden size between the embeddings and layer 0;
    # the cached states are already past that projection.
    base = model.base_model
    projection = getattr(base, "embeddings_project", None)
    feeder = CachedEmbeddings()
    setattr(list_parent, list_name, nn.ModuleList(layers[start:]))
    setattr(embedding_parent, embedding_name, feeder)
    if projection is not None:
        base.embeddings_project = nn.Identity()
    try:
        yield feeder
    finally:
        setattr(list_parent, list_name, original_layers)
        setattr(embedding_parent, embedding_name, original_embeddings)
        if projection is not None:
            base.embeddings_project = projection


def padded(sequences: Sequence[np.ndarray], rows: np.ndarray, padding: int,
           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int64 [b, t], mask int64 [b, t]) for ``rows``, padded to the longest, on ``device``."""
    width = max(len(sequences[row]) for row in rows)
    ids = torch.full((len(rows), width), padding, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, :len(sequences[row])] = torch.from_numpy(sequences[row])
        mask[index, :len(sequences[row])] = 1
    return ids.to(device), mask.to(device)


def padded_states(states: Sequence[torch.Tensor], rows: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 [b, t, hidden] on ``device``: cached per-example states [t_i, hidden], zero-padded to the longest."""
    width = max(states[row].shape[0] for row in rows)
    out = torch.zeros((len(rows), width, states[rows[0]].shape[1]), dtype=torch.float32)
    for index, row in enumerate(rows):
        out[index, :states[row].shape[0]] = states[row]
    return out.to(device)


def trunk_states(model: PreTrainedModel, sequences: Sequence[np.ndarray], rows: np.ndarray, start: int,
                 padding: int, batch_size: int, step: Callable[[int], None] | None = None) -> list[torch.Tensor | None]:
    """Input states of layer ``start`` (eval mode, no gradients) for ``rows``.

    Returns:
        A list over all sequences: float32 [t_i, hidden] on the CPU (the cache is bounded by host
        memory) for each row asked for, None elsewhere.
    """
    device = device_of(model)
    states: list[torch.Tensor | None] = [None] * len(sequences)
    order = rows[np.argsort([-len(sequences[row]) for row in rows], kind="stable")]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: these tensors feed layers that are trained
            for begin in range(0, len(order), batch_size):
                chosen = order[begin:begin + batch_size]
                ids, mask = padded(sequences, chosen, padding, device)
                hidden = model.base_model(input_ids=ids, attention_mask=mask,
                                          output_hidden_states=True).hidden_states[start]  # [b, t, hidden]
                for index, row in enumerate(chosen):
                    states[row] = hidden[index, :len(sequences[row])].to("cpu", copy=True)
                if step is not None:
                    step(len(chosen))
    finally:
        model.train(was_training)
    return states


def length_batches(lengths: np.ndarray, rows: np.ndarray, batch_size: int, rng: np.random.Generator,
                   pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of ``rows`` whose members have similar lengths (less padding).

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside
    each pool and batched; the batch order is shuffled again.
    """
    shuffled = rows[rng.permutation(len(rows))]
    batches: list[np.ndarray] = []
    span = batch_size * pool
    for begin in range(0, len(shuffled), span):
        chunk = shuffled[begin:begin + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
