"""2-D projections of token and note embeddings (pure numpy + scikit-learn/umap).

PCA is the default (fast, deterministic, comparable across layers when fitted
jointly); UMAP and t-SNE run on request and report progress by stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from cbert_core.progress import Progress
from cbert_core.run.head_stats import is_punctuation
from cbert_core.run.trace import Trace

Method = Literal["pca", "umap", "tsne"]
METHOD_NAMES: dict[str, str] = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}


@dataclass(frozen=True, kw_only=True)
class Projection:
    """2-D coordinates of chosen positions at one layer."""

    method: Method
    layer: int
    positions: np.ndarray  # int64 [n]: trace positions projected
    coords: np.ndarray  # float32 [n, 2]
    explained: tuple[float, ...] = ()  # PCA: variance share of the two axes


def principal_plane(data: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """``data`` [n, features] on its first two principal axes: float32 [n, 2], and each axis's share of the variance.

    With at least as many rows as features (a long note's positions, every layer's of them, a collection's
    notes) the axes come from the features' covariance matrix (scikit-learn's ``covariance_eigh``) instead of
    a full SVD of the data: the same axes and signs (to about 1e-11 of the coordinates) for 3-5x less CPU on
    a 512-piece window's layers (``bench/convoy.py``), CPU that a shared server's other sessions need.
    """
    components = min(2, data.shape[0], data.shape[1])
    solver = "covariance_eigh" if data.shape[0] >= data.shape[1] else "full"
    model = PCA(n_components=components, svd_solver=solver, random_state=0)
    coords = model.fit_transform(data.astype(np.float64))
    if components < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - components)))
    return coords.astype(np.float32), tuple(float(v) for v in model.explained_variance_ratio_)


def project(result: Trace, layer: int, method: Method = "pca", positions: np.ndarray | None = None,
            seed: int = 0, progress: Progress | None = None) -> Projection:
    """Project the hidden states of ``positions`` at ``layer`` (0 = embeddings) to 2-D.

    Args:
        positions: int [n] trace positions; default every position.
        progress: called with (fraction, stage) for UMAP and t-SNE.
    """
    chosen = np.arange(result.num_positions) if positions is None else np.asarray(positions, dtype=np.int64)
    data = result.hidden_states[layer, chosen].astype(np.float32)  # [n, hidden]
    if len(chosen) < 3 or method == "pca":
        coords, explained = principal_plane(data)
        return Projection(method="pca" if len(chosen) < 3 else method, layer=layer, positions=chosen,
                          coords=coords, explained=explained)
    if progress is not None:
        progress(0.05, f"{METHOD_NAMES[method]}: reducing to 50 dimensions with PCA")

    reduced = PCA(n_components=min(50, *data.shape), random_state=seed).fit_transform(data)
    if progress is not None:
        progress(0.2, f"{METHOD_NAMES[method]}: arranging {len(chosen)} tokens")
    if method == "umap":
        import umap  # heavy (numba): imported only when a UMAP is asked for

        neighbours = int(min(15, len(chosen) - 1))
        coords = umap.UMAP(n_neighbors=max(neighbours, 2), random_state=seed, n_jobs=1,
                           init="random" if len(chosen) < 10 else "spectral").fit_transform(reduced)
    elif method == "tsne":
        perplexity = float(min(30.0, max(2.0, (len(chosen) - 1) / 3)))
        coords = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(reduced)
    else:
        raise ValueError(f"unknown projection method {method!r}")
    if progress is not None:
        progress(1.0, f"{METHOD_NAMES[method]} done")
    return Projection(method=method, layer=layer, positions=chosen, coords=np.asarray(coords, dtype=np.float32))


@dataclass(frozen=True, kw_only=True)
class Trajectories:
    """Chosen tokens' paths through the layers in one shared PCA plane."""

    positions: np.ndarray  # int64 [n]
    coords: np.ndarray  # float32 [layer + 1, n, 2]
    explained: tuple[float, ...]


def trajectories(result: Trace, positions: np.ndarray) -> Trajectories:
    """Fit one PCA on the chosen tokens at every layer, so paths are comparable across layers."""
    chosen = np.asarray(positions, dtype=np.int64)
    states = result.hidden_states[:, chosen].astype(np.float32)  # [layer + 1, n, hidden]
    # Each layer is centred on its own mean over the note, removing the drift of the
    # whole residual stream so the plot shows how tokens move relative to each other.
    centred = states - result.hidden_states.mean(axis=1, keepdims=True, dtype=np.float32)
    layers, n, hidden = centred.shape
    flat, explained = principal_plane(centred.reshape(layers * n, hidden))
    return Trajectories(positions=chosen, coords=flat.reshape(layers, n, 2), explained=explained)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """float32 [n, n] cosine similarities of the rows of ``vectors`` [n, d]."""
    data = vectors.astype(np.float32)
    norms = np.linalg.norm(data, axis=-1, keepdims=True)
    unit = data / np.maximum(norms, 1e-12)
    return unit @ unit.T


@dataclass(frozen=True, kw_only=True)
class NoteEmbeddings:
    """The note as one vector per layer, two ways."""

    cls: np.ndarray  # float32 [layer + 1, hidden]: the [CLS] position
    mean: np.ndarray  # float32 [layer + 1, hidden]: mean over the note's word pieces
    cls_to_final: np.ndarray  # float32 [layer + 1]: cosine to the last layer's [CLS] vector
    mean_to_final: np.ndarray  # float32 [layer + 1]
    cls_to_mean: np.ndarray  # float32 [layer + 1]: how close the two summaries are
    coords: np.ndarray  # float32 [2, layer + 1, 2]: both paths in one PCA plane (cls, mean)


def note_embeddings(result: Trace) -> NoteEmbeddings:
    """[CLS] and mean-pooled note embeddings at every layer, with their similarities."""
    content = ~result.special
    cls = result.hidden_states[:, 0].astype(np.float32)
    mean = result.hidden_states[:, content].astype(np.float32).mean(axis=1)

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)

    coords, _ = principal_plane(np.concatenate([cls, mean]))
    layers = cls.shape[0]
    return NoteEmbeddings(
        cls=cls, mean=mean,
        cls_to_final=cosine(cls, cls[-1:]).astype(np.float32),
        mean_to_final=cosine(mean, mean[-1:]).astype(np.float32),
        cls_to_mean=cosine(cls, mean).astype(np.float32),
        coords=coords.reshape(2, layers, 2),
    )


ColourBy = Literal["section", "sentence", "piece kind"]


def point_groups(result: Trace, positions: np.ndarray, colour_by: ColourBy) -> list[str]:
    """The group each projected position is coloured by: its section's title, its sentence, or its kind of piece."""
    if colour_by == "section":
        sections = result.segmentation.sections
        return ["[CLS]/[SEP]" if result.special[p] else (sections[s].title if s >= 0 and sections[s].title
                                                          else "(no section)")
                for p, s in zip(positions, result.section_ids[positions])]
    if colour_by == "sentence":
        return ["[CLS]/[SEP]" if result.special[p] else (f"sentence {s + 1}" if s >= 0 else "(between)")
                for p, s in zip(positions, result.sentence_ids[positions])]
    kinds = piece_kinds(result)
    return [kinds[p] for p in positions]


def piece_kinds(result: Trace) -> list[str]:
    """A label per position: special, [UNK], [MASK], punctuation, continuation piece, word start."""
    kinds = []
    for index, token in enumerate(result.tokens):
        if result.special[index]:
            kinds.append("special ([CLS]/[SEP])")
        elif token in {"[UNK]", "<unk>"}:
            kinds.append("unknown ([UNK])")
        elif result.mask_id is not None and result.input_ids[index] == result.mask_id:
            kinds.append("[MASK]")
        elif is_punctuation(token):
            kinds.append("punctuation")
        elif index > 0 and result.word_ids[index] == result.word_ids[index - 1]:
            kinds.append("continuation piece (##)")
        else:
            kinds.append("word start")
    return kinds
