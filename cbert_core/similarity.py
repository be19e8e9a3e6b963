"""Zero-shot embedding similarity: a note (and its sentences) against label descriptions.

Works with any encoder and is meant for sentence encoders such as all-MiniLM-L6-v2:
the note and each description are mean-pooled over the last layer of the lean
forward pass (:func:`cbert_core.forward.run_encoder`) and compared by cosine
similarity. :func:`description_embedding` also gives the reference vector of a
similarity target (:func:`cbert_core.targets.similarity_target`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TargetError
from .forward import embed, run_encoder, word_vectors
from .hooks import HeadSet, knockout
from .loading import LoadedModel
from .text import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, check_note, plan_windows, segment, tokenize_note

Progress = Callable[[float, str], None]
DEFAULT_TEMPERATURE = 0.05


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def pooled_embeddings(loaded: LoadedModel, sequences: Sequence[np.ndarray], *, cls_id: int, sep_id: int,
                      batch_size: int = 16) -> torch.Tensor:
    """Mean-pooled last-layer embeddings of content-id sequences (specials added), unnormalized.

    Mean pooling runs over every position of the input, [CLS] and [SEP] included, as
    sentence-transformers pools all-MiniLM-L6-v2. A sequence longer than the model's
    window is cut into windows whose embeddings are averaged, weighted by length.
    Must run inside the caller's no-grad / knockout context.

    Returns:
        float32 [sequences, hidden].
    """
    limit = loaded.info.max_tokens - 2
    pieces: list[tuple[int, np.ndarray]] = []  # (sequence index, window content ids)
    for index, ids in enumerate(sequences):
        for window in plan_windows(max(len(ids), 1), limit, DEFAULT_OVERLAP):
            pieces.append((index, ids[window.start:window.stop]))
    hidden = loaded.info.hidden_size
    sums = torch.zeros(len(sequences), hidden)
    weights = torch.zeros(len(sequences))
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))
    for first in range(0, len(order), batch_size):
        chunk = [pieces[i] for i in order[first:first + batch_size]]
        width = max(len(ids) for _, ids in chunk) + 2
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        keep = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, (_, content) in enumerate(chunk):
            full = np.concatenate([[cls_id], content, [sep_id]]).astype(np.int64)
            ids[row, :full.size] = torch.from_numpy(full)
            keep[row, :full.size] = True
        states = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)),
                             key_mask=None if bool(keep.all()) else keep)  # [b, t, d]
        mean = (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)  # [b, d]
        for row, (index, content) in enumerate(chunk):
            sums[index] += mean[row].float() * len(content)
            weights[index] += len(content)
    return sums / weights.clamp_min(1)[:, None]


def description_embedding(loaded: LoadedModel, description: str, *, lowercase: bool | None = None) -> np.ndarray:
    """float32 [hidden]: the unit-length mean-pooled embedding of a label description."""
    return _description_matrix(loaded, [description], lowercase=lowercase, knocked_out=())[0]


def _description_matrix(loaded: LoadedModel, descriptions: Sequence[str], *, lowercase: bool | None,
                        knocked_out: Iterable[tuple[int, int]]) -> np.ndarray:
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(lowercase))
    cleaned = [str(d).strip() for d in descriptions]
    if not cleaned or any(not d for d in cleaned):
        raise TargetError("Give at least one label description, each with some text "
                          "(for example 'pneumonia present' and 'no evidence of pneumonia').")
    sequences = [tokenize_note(tokenizer, d).ids for d in cleaned]
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out):
        vectors = pooled_embeddings(loaded, sequences, cls_id=int(tokenizer.cls_token_id),
                                    sep_id=int(tokenizer.sep_token_id))
    return F.normalize(vectors, dim=-1).numpy().astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class SimilarityResult:
    """Zero-shot embedding similarity between a note (and its sentences) and label descriptions.

    This is cosine similarity of mean-pooled embeddings, turned into a softmax over the
    descriptions with a temperature: a ranking aid, not a calibrated probability.
    """

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    descriptions: tuple[str, ...]  # [label]
    temperature: float
    note_similarity: np.ndarray  # float32 [label]: cosine
    note_probs: np.ndarray  # float32 [label]: softmax(cosine / temperature)
    sentence_spans: np.ndarray  # int32 [sentence, 2]
    sentence_similarity: np.ndarray  # float32 [sentence, label]
    sentence_probs: np.ndarray  # float32 [sentence, label]

    def __post_init__(self) -> None:
        labels, sentences = len(self.descriptions), len(self.sentence_spans)
        if self.note_similarity.shape != (labels,) or self.note_probs.shape != (labels,):
            raise ValueError("note arrays must be [label]")
        if self.sentence_similarity.shape != (sentences, labels) or self.sentence_probs.shape != (sentences, labels):
            raise ValueError("sentence arrays must be [sentence, label]")
        for array in (self.note_similarity, self.note_probs, self.sentence_spans, self.sentence_similarity,
                      self.sentence_probs):
            _frozen(array)


def embedding_similarity(loaded: LoadedModel, text: str, descriptions: Sequence[str], *,
                         temperature: float = DEFAULT_TEMPERATURE, per_sentence: bool = True,
                         lowercase: bool | None = None, knocked_out: Iterable[tuple[int, int]] = (),
                         max_chars: int = DEFAULT_MAX_CHARS, progress: Progress | None = None) -> SimilarityResult:
    """Zero-shot labelling by embedding similarity (works with any encoder, best with sentence encoders).

    The note (and, with ``per_sentence``, each sentence from :func:`cbert_core.text.segment`)
    is mean-pooled over the last layer and compared by cosine similarity with each
    description's embedding; ``softmax(cosine / temperature)`` ranks the descriptions.

    Raises:
        TargetError: no description, or an empty one; ValueError: temperature <= 0.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    check_note(text, max_chars)
    lowercase = loaded.resolve_lowercase(lowercase)
    tokenizer = loaded.tokenizer(lowercase)
    labels = _description_matrix(loaded, descriptions, lowercase=lowercase, knocked_out=knocked_out)  # [label, d]
    note = tokenize_note(tokenizer, text)
    spans: list[tuple[int, int]] = []
    sequences = [note.ids]
    if per_sentence:
        for sentence in segment(text).sentences:
            inside = np.flatnonzero((note.offsets[:, 0] >= sentence.start) & (note.offsets[:, 0] < sentence.end))
            if inside.size:
                spans.append((sentence.start, sentence.end))
                sequences.append(note.ids[inside])
    _report(progress, 0.1, "Embedding the note")
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        vectors = F.normalize(pooled_embeddings(loaded, sequences, cls_id=int(tokenizer.cls_token_id),
                                                sep_id=int(tokenizer.sep_token_id)), dim=-1)
    similarity = (vectors @ torch.from_numpy(labels).T).numpy().astype(np.float32)  # [1 + sentence, label]
    probs = torch.softmax(torch.from_numpy(similarity) / temperature, dim=-1).numpy().astype(np.float32)
    _report(progress, 1.0, "Done")
    return SimilarityResult(
        model_key=loaded.info.key, text=text, lowercase=lowercase, knocked_out=heads,
        descriptions=tuple(str(d).strip() for d in descriptions), temperature=float(temperature),
        note_similarity=similarity[0], note_probs=probs[0],
        sentence_spans=np.array(spans, dtype=np.int32).reshape(-1, 2),
        sentence_similarity=similarity[1:], sentence_probs=probs[1:],
    )
