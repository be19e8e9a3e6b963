"""A collection of notes as vectors: one vector per note at every layer, and their 2-D projection.

The notes come planned (:func:`cbert_core.run.plan.plan_notes`): a note longer than the model's
positions is read in the same overlapping windows a trace uses. With ``long_notes="mean"`` (the
default) every window is encoded and the note vector is the mean over windows (mean pooling
weights each window by its number of pieces; [CLS] pooling averages the windows' [CLS] vectors).
With ``long_notes="first"`` only the first window is encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA

from cbert_core.analyses.projection import principal_plane
from cbert_core.errors import ResourceLimitError
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.run import encode
from cbert_core.run.encode import DEFAULT_BATCH_SIZE, run_sequences
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.text.windows import Window

Pooling = Literal["mean", "cls"]
LongNotes = Literal["mean", "first"]
DEFAULT_EMBEDDING_BYTES = 1024**3  # 1 GiB of note vectors


def note_embeddings(loaded: LoadedModel, plans: Sequence[NotePlan], *, pooling: Pooling = "mean",
                    batch_size: int = DEFAULT_BATCH_SIZE, long_notes: LongNotes = "mean",
                    dtype: type[np.floating] | str = np.float32, max_bytes: int = DEFAULT_EMBEDDING_BYTES,
                    progress: Progress | None = None) -> np.ndarray:
    """One vector per note at every layer.

    Args:
        loaded: the shared model (only called).
        plans: the notes, planned for ``loaded`` (their casing and windows).
        pooling: "mean" over the note's word pieces ([CLS]/[SEP] excluded) or the "cls" position.
        batch_size: windows per forward pass (padded to the batch's longest).
        long_notes: "mean" over all windows or the "first" window only (see the module notes).
        dtype: float32 (default) or float16 to halve the memory of a large corpus.
        max_bytes: refuse a result larger than this.
        progress: (fraction, message) after each batch; raising from it stops the work.

    Returns:
        [note, layer + 1, hidden] array of ``dtype`` (layer 0 is the embedding output).

    Raises:
        ResourceLimitError: the result would exceed ``max_bytes``.
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    if long_notes not in ("mean", "first"):
        raise ValueError(f"long_notes must be 'mean' or 'first', not {long_notes!r}")
    info = loaded.info
    out_dtype = np.dtype(dtype)
    shape = (len(plans), info.num_layers + 1, info.hidden_size)
    needed = int(np.prod(shape)) * out_dtype.itemsize
    if needed > max_bytes:
        raise ResourceLimitError(
            f"Embeddings of {len(plans):,} notes at {shape[1]} layers would take {needed / 1e6:,.0f} MB; the limit "
            f"is {max_bytes / 1e6:,.0f} MB. Use fewer notes, float16 storage, or raise the limit."
        )
    sequences, owners, weights = [], [], []
    for note_index, plan in enumerate(plans):
        for window in _windows(plan, long_notes):
            sequences.append(plan.window_ids(window))
            owners.append(note_index)
            weights.append(window.size if pooling == "mean" else 1)
    sums = np.zeros(shape, dtype=np.float64)
    totals = np.zeros(len(plans), dtype=np.float64)
    for index, hidden in run_sequences(loaded, sequences, batch_size=batch_size, progress=progress, what="windows"):
        # hidden: [layer + 1, t, hidden]
        vector = hidden[:, 1:-1].mean(axis=1) if pooling == "mean" else hidden[:, 0]  # [layer + 1, hidden]
        note_index = owners[index]
        sums[note_index] += weights[index] * vector
        totals[note_index] += weights[index]
    return (sums / np.maximum(totals, 1e-12)[:, None, None]).astype(out_dtype)


def _windows(plan: NotePlan, long_notes: LongNotes) -> tuple[Window, ...]:
    return plan.windows[:1] if long_notes == "first" else plan.windows


def planned_passes(plans: Sequence[NotePlan], *, batch_size: int = DEFAULT_BATCH_SIZE,
                   long_notes: LongNotes = "mean") -> Passes:
    """The forward passes :func:`note_embeddings` runs on ``plans`` (for time estimates).

    One forward row per note window, batched and padded as the embedding runs them.
    :func:`cbert_core.corpus.token_search.build_token_index` runs the same passes (every window of
    every note, the same batches) and keeps one layer of them.
    """
    return encode.planned_passes([window.size + 2 for plan in plans for window in _windows(plan, long_notes)],
                                 batch_size=batch_size)


@dataclass(frozen=True, kw_only=True)
class NoteProjection:
    """Notes at one layer in 2-D; colouring by label is the caller's job."""

    method: Literal["pca", "umap"]
    layer: int
    coords: np.ndarray  # float32 [note, 2]
    explained: tuple[float, ...] = ()  # PCA: variance share of the two axes

    def __post_init__(self) -> None:
        if self.coords.ndim != 2 or self.coords.shape[1] != 2:
            raise ValueError("NoteProjection.coords must be [note, 2]")
        self.coords.flags.writeable = False


def project_notes(embeddings: np.ndarray, layer: int, *, method: Literal["pca", "umap"] = "pca", seed: int = 0,
                  progress: Progress | None = None) -> NoteProjection:
    """Project note vectors at ``layer`` (from :func:`note_embeddings`) to 2-D.

    Args:
        embeddings: [note, layer + 1, hidden].
        layer: hidden-state index (0 = embeddings, -1 = last).
        method: "pca" (deterministic, fast) or "umap" (PCA to 50 dimensions first).
    """
    data = np.asarray(embeddings[:, layer], dtype=np.float64)  # [note, hidden]
    layer = layer % embeddings.shape[1]

    if len(data) < 3 or method == "pca":
        coords, explained = principal_plane(data)
        return NoteProjection(method="pca", layer=layer, coords=coords, explained=explained)
    if method != "umap":
        raise ValueError(f"unknown projection method {method!r}")
    if progress is not None:
        progress(0.1, "UMAP: reducing to 50 dimensions with PCA")
    reduced = PCA(n_components=min(50, *data.shape), random_state=seed).fit_transform(data)
    if progress is not None:
        progress(0.3, f"UMAP: arranging {len(data):,} notes")
    import umap  # heavy (numba): imported only when a UMAP is asked for

    neighbours = max(2, int(min(15, len(data) - 1)))
    coords = umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1,
                       init="random" if len(data) < 10 else "spectral").fit_transform(reduced)
    if progress is not None:
        progress(1.0, "UMAP done")
    return NoteProjection(method="umap", layer=layer, coords=np.asarray(coords, dtype=np.float32))
