"""The batch engine's one pass: every window of every note through the model once, for all analyses.

Note embeddings, zero-shot similarity and a classification head's predictions all read the same
forward pass over a note's windows (:func:`cbert_core.run.encode.run_windows`); running the note
once per analysis cost the batch command line several passes per note. :func:`pass_notes` runs the
pass once for what is asked and gives each note a :class:`NotePass`; the analyses' own records are
then built from it (:func:`cbert_core.analyses.labelling.probabilities_from_windows`,
:func:`cbert_core.analyses.labelling.labels_from_windows`,
:func:`cbert_core.analyses.similarity.similarity_result`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.records import frozen
from cbert_core.run.encode import DEFAULT_BATCH_SIZE, run_windows
from cbert_core.run.plan import NotePlan

Pooling = Literal["mean", "cls"]


@dataclass(frozen=True, kw_only=True)
class NotePass:
    """What one pass over a note's windows gave, reduced to what the asked analyses read."""

    embedding: np.ndarray | None  # float32 [hidden]: the note vector at the asked layer (see pass_notes)
    text_vector: np.ndarray | None  # float32 [hidden]: last layer, mean over each window's positions, windows
    #                                 weighted by their content pieces (zero-shot similarity's note vector)
    window_logits: tuple[np.ndarray, ...]  # per window: sequence classifier [label], token classifier [t, label]

    def __post_init__(self) -> None:
        frozen(self.embedding, self.text_vector, *self.window_logits)


def pass_notes(loaded: LoadedModel, plans: Sequence[NotePlan], *, embedding_layer: int | None = None,
               pooling: Pooling = "mean", text_vectors: bool = False, head: bool = False,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None) -> list[NotePass]:
    """Run every window of ``plans`` through the model once and keep what the analyses asked for.

    Args:
        embedding_layer: hidden-state index of the note embedding (0 = embeddings, -1 = last), or None
            for no embedding. Pooled as :func:`cbert_core.corpus.embeddings.note_embeddings` pools:
            "mean" over the note's pieces ([CLS]/[SEP] excluded, windows weighted by their size) or
            the "cls" position (windows averaged).
        text_vectors: keep the note vector zero-shot similarity compares with label descriptions.
        head: keep a sequence- or token-classification head's logits per window.

    Returns:
        One :class:`NotePass` per plan, in order.
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    sequences, owners = [], []
    for note_index, plan in enumerate(plans):
        for window in plan.windows:
            sequences.append(plan.window_ids(window))
            owners.append((note_index, window))
    hidden = loaded.info.hidden_size
    embedding_sums = np.zeros((len(plans), hidden), np.float64)
    embedding_weights = np.zeros(len(plans), np.float64)
    vector_sums = np.zeros((len(plans), hidden), np.float64)
    vector_weights = np.zeros(len(plans), np.float64)
    logits: list[dict[int, np.ndarray]] = [{} for _ in plans]
    layers = () if embedding_layer is None else (embedding_layer,)
    for index, output in run_windows(loaded, sequences, layers=layers, pooled=text_vectors, head=head,
                                     batch_size=batch_size, progress=progress, what="note windows"):
        note_index, window = owners[index]
        if output.states is not None:
            states = output.states[0]  # [t, hidden]
            weight = window.size if pooling == "mean" else 1
            vector = states[1:-1].mean(0) if pooling == "mean" else states[0]
            embedding_sums[note_index] += weight * vector
            embedding_weights[note_index] += weight
        if output.pooled is not None:
            vector_sums[note_index] += window.size * output.pooled
            vector_weights[note_index] += window.size
        if output.head is not None:
            logits[note_index][window.index] = output.head
    passes = []
    for note_index, plan in enumerate(plans):
        embedding = (embedding_sums[note_index] / max(embedding_weights[note_index], 1e-12)).astype(np.float32) \
            if embedding_layer is not None else None
        vector = (vector_sums[note_index] / max(vector_weights[note_index], 1e-12)).astype(np.float32) \
            if text_vectors else None
        windows = tuple(logits[note_index][window.index] for window in plan.windows) if logits[note_index] else ()
        passes.append(NotePass(embedding=embedding, text_vector=vector, window_logits=windows))
    return passes
