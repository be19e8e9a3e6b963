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

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from cbert_core.model.architecture import anatomy_of
from cbert_core.model.device import device_of
from cbert_core.progress import Progress, report
from cbert_core.training.loop import Cancelled, StepReport, TrainingConfig, frozen_to_eval, train_steps


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


def train_top(model: PreTrainedModel, *, examples: Sequence[np.ndarray], lengths: np.ndarray, rows: np.ndarray,
              first_trained: int, padding: int, config: TrainingConfig, total: int, cache: bool, head: list,
              encoder: list, loss_of: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
              cancel: Callable[[], bool] | None = None, on_step: Callable[[StepReport], None] | None = None,
              progress: Progress | None = None) -> tuple[list[float], bool]:
    """Train ``model``'s head and layers ``first_trained:`` on fixed examples, the frozen bottom cached.

    Args:
        examples: int64 [t_i] word-piece ids of every example ([CLS] ... [SEP]); ``lengths`` their lengths.
        rows: the training examples; batched by similar length, reshuffled every epoch (``config.seed``).
        cache: run the frozen bottom once for ``rows`` and reuse its outputs every epoch (the first 20 % of
            the progress bar); otherwise the whole model runs at every step.
        loss_of: (logits of a batch, its rows) -> the loss.
        cancel: checked during the preparation and before every step; a cancelled run keeps what it did.

    Returns:
        As :func:`cbert_core.training.loop.train_steps`: (losses, cancelled).
    """
    prepare_share = 0.2 if cache else 0.0
    states = None
    if cache:
        done = [0]

        def prepared(count: int) -> None:
            done[0] += count
            if cancel is not None and cancel():
                raise Cancelled
            report(progress, prepare_share * done[0] / len(rows),
                   f"Preparing: frozen layers on {done[0]:,} of {len(rows):,} examples")

        try:
            states = trunk_states(model, examples, rows, first_trained, padding, config.eval_batch_size, prepared)
        except Cancelled:
            return [], True
    shuffler = np.random.default_rng(config.seed)
    device = device_of(model)
    frozen_to_eval(model, first_trained)
    with top_layers_only(model, first_trained) if states is not None else contextlib.nullcontext() as feeder:

        def batch_loss(batch: np.ndarray) -> torch.Tensor:
            ids, mask = padded(examples, batch, padding, device)
            if feeder is not None:
                feeder.current = padded_states(states, batch, device)
            return loss_of(model(input_ids=ids, attention_mask=mask).logits, batch)

        return train_steps(model, head=head, encoder=encoder, config=config, total=total,
                           batches=lambda epoch: length_batches(lengths, rows, config.batch_size, shuffler),
                           loss_of=batch_loss, cancel=cancel, on_step=on_step, progress=progress,
                           span=(prepare_share, 0.95))
