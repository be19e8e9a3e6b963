"""Zero-shot embedding similarity: a note (and its sentences) against label descriptions.

Works with any encoder and is meant for sentence encoders such as all-MiniLM-L6-v2:
the note and each description are mean-pooled over the last layer of the lean
forward pass (:func:`cbert_core.run.forward.run_encoder`) and compared by cosine
similarity. :func:`description_embedding` also gives the reference vector of a
similarity target (:func:`cbert_core.analyses.targets.similarity_target`).

A cosine means little on its own: a bare encoder gives a clinical note a cosine of
0.1-0.2 with text about office furniture, and two descriptions of one finding
("pneumonia present", "no evidence of pneumonia") differ by a few hundredths whatever
the note says. :func:`embedding_similarity` therefore also scores the note against
:data:`REFERENCE_DESCRIPTIONS`, everyday phrases unrelated to medicine, and says
whether any description stands out from them and from the other descriptions
(:func:`standing_out`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from cbert_core.errors import TargetError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import embed, run_encoder, word_vectors
from cbert_core.run.plan import NotePlan
from cbert_core.text.tokens import tokenize_note
from cbert_core.text.windows import DEFAULT_OVERLAP, Window, plan_windows

DEFAULT_TEMPERATURE = 0.05
# Everyday phrases with no medical content (and none of a note's section words such as
# "history", "report", "pain"): how close the note comes to text about something else.
REFERENCE_DESCRIPTIONS: tuple[str, ...] = (
    "the weather is sunny today",
    "a recipe for chocolate cake",
    "the football match ended in a draw",
    "a train timetable",
    "an invoice for office furniture",
    "ancient roman architecture",
    "a song about the sea",
    "a new smartphone model",
)
Verdict = Literal["stands out", "too close to call", "no closer than unrelated text"]
STANDS_OUT, TOO_CLOSE, UNRELATED = get_args(Verdict)


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
    pieces = [(index, ids[window.start:window.stop]) for index, ids in enumerate(sequences)
              for window in plan_windows(max(len(ids), 1), limit, DEFAULT_OVERLAP)]
    return pooled_windows(loaded, pieces, len(sequences), cls_id=cls_id, sep_id=sep_id, batch_size=batch_size)


def pooled_windows(loaded: LoadedModel, pieces: Sequence[tuple[int, np.ndarray]], count: int, *, cls_id: int,
                   sep_id: int, batch_size: int = 16) -> torch.Tensor:
    """Mean-pooled embeddings of ``count`` texts given as windows: (text index, content ids of one window).

    A text's embedding is the mean of its windows' embeddings weighted by their lengths.
    Must run inside the caller's no-grad / knockout context.

    Returns:
        float32 [count, hidden].
    """
    hidden = loaded.info.hidden_size
    device = loaded.device
    sums = torch.zeros(count, hidden, device=device)
    weights = torch.zeros(count, device=device)
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
        ids, keep = ids.to(device), keep.to(device)
        states = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)),
                             key_mask=None if bool(keep.all()) else keep)  # [b, t, d]
        mean = (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)  # [b, d]
        for row, (index, content) in enumerate(chunk):
            sums[index] += mean[row].float() * len(content)
            weights[index] += len(content)
    return sums / weights.clamp_min(1)[:, None]


def description_embedding(loaded: LoadedModel, description: str, *, lowercase: bool | None = None) -> np.ndarray:
    """float32 [hidden]: the unit-length mean-pooled embedding of a label description."""
    return description_matrix(loaded, [description], lowercase=lowercase, knocked_out=())[0]


def _cleaned(descriptions: Sequence[str]) -> list[str]:
    cleaned = [str(d).strip() for d in descriptions]
    if not cleaned or any(not d for d in cleaned):
        raise TargetError("Give at least one label description, each with some text "
                          "(for example 'pneumonia present' and 'no evidence of pneumonia').")
    return cleaned


def description_matrix(loaded: LoadedModel, descriptions: Sequence[str], *, lowercase: bool | None,
                       knocked_out: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """float32 [description, hidden]: unit-length mean-pooled embeddings of descriptions (empty ones refused).

    The batch engine computes this once for a whole collection (descriptions and references together).
    """
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(lowercase))
    cleaned = _cleaned(descriptions)
    sequences = [tokenize_note(tokenizer, d).ids for d in cleaned]
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out):
        vectors = pooled_embeddings(loaded, sequences, cls_id=int(tokenizer.cls_token_id),
                                    sep_id=int(tokenizer.sep_token_id))
    return F.normalize(vectors, dim=-1).cpu().numpy().astype(np.float32)


def standing_out(similarity: np.ndarray, reference_similarity: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, tuple[Verdict, ...]]:
    """Whether the closest description stands out, row by row (the note, or each sentence).

    Two numbers come from the text's cosines to :data:`REFERENCE_DESCRIPTIONS`, computed
    exactly as its cosines to the descriptions (same pooling, same knocked-out heads):

    * the **reference** ("none of these") is the highest of them: a description no closer
      to the text than that is no closer than talk of cake or the weather;
    * the **margin** is their standard deviation: how much the cosine moves between
      descriptions that are all equally irrelevant to the text, i.e. the size of
      difference that wording alone produces.

    The closest description stands out when its cosine beats both the runner-up and the
    reference by more than the margin. Both numbers are in the encoder's own cosine scale,
    so the rule holds for an encoder whose cosines spread around 0 (all-MiniLM-L6-v2) and
    for one that gives every pair of texts 0.8-0.9 (mean-pooled BERTs). A fixed margin
    would not; nor would a threshold from the descriptions' cosine to each other, which
    says how alike the descriptions are, not how far the text is from any of them.

    Args:
        similarity: float [row, label] cosines to the descriptions.
        reference_similarity: float [row, reference] cosines to the reference descriptions
            (at least two references).

    Returns:
        (reference float32 [row], margin float32 [row], verdict per row).
    """
    if similarity.ndim != 2 or reference_similarity.ndim != 2 or similarity.shape[0] != reference_similarity.shape[0]:
        raise ValueError("similarity must be [row, label] and reference_similarity [row, reference]")
    if reference_similarity.shape[1] < 2 or similarity.shape[1] < 1:
        raise ValueError("need at least one description and two reference descriptions")
    reference = reference_similarity.max(-1).astype(np.float32)  # [row]
    margin = reference_similarity.std(-1).astype(np.float32)  # [row]
    ordered = -np.sort(-similarity, axis=-1)  # [row, label], highest first
    top = ordered[:, 0]
    second = ordered[:, 1] if similarity.shape[1] > 1 else np.full_like(top, -np.inf)
    verdicts: list[Verdict] = []
    for best, runner_up, floor, spread in zip(top.tolist(), second.tolist(), reference.tolist(), margin.tolist()):
        if best - floor <= spread:
            verdicts.append(UNRELATED)
        elif best - runner_up <= spread:
            verdicts.append(TOO_CLOSE)
        else:
            verdicts.append(STANDS_OUT)
    return reference, margin, tuple(verdicts)


@dataclass(frozen=True, kw_only=True)
class SimilarityResult:
    """Zero-shot embedding similarity between a note (and its sentences) and label descriptions.

    The cosines are the result; ``*_probs`` turn them into a softmax over the descriptions
    with a temperature, which always sums to 1 however far the note is from every
    description: a ranking aid, not a calibrated probability, never to be shown without
    the cosines. ``*_reference``, ``*_margin`` and ``*_verdict(s)`` say whether any
    description stands out (:func:`standing_out`).
    """

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    windows: tuple[Window, ...]  # the note's windows, as planned: the note vector is their length-weighted mean
    descriptions: tuple[str, ...]  # [label]
    temperature: float
    note_similarity: np.ndarray  # float32 [label]: cosine
    note_probs: np.ndarray  # float32 [label]: softmax(cosine / temperature)
    sentence_spans: np.ndarray  # int32 [sentence, 2]
    sentence_similarity: np.ndarray  # float32 [sentence, label]
    sentence_probs: np.ndarray  # float32 [sentence, label]
    reference_descriptions: tuple[str, ...]  # [ref]: unrelated everyday phrases
    note_reference_similarity: np.ndarray  # float32 [ref]: cosine of the note to each reference
    note_reference: float  # the highest of them: the "none of these" line
    note_margin: float  # their standard deviation
    note_verdict: Verdict
    sentence_reference_similarity: np.ndarray  # float32 [sentence, ref]
    sentence_reference: np.ndarray  # float32 [sentence]
    sentence_margin: np.ndarray  # float32 [sentence]
    sentence_verdicts: tuple[Verdict, ...]  # [sentence]

    def __post_init__(self) -> None:
        labels, sentences = len(self.descriptions), len(self.sentence_spans)
        references = len(self.reference_descriptions)
        if self.note_similarity.shape != (labels,) or self.note_probs.shape != (labels,):
            raise ValueError("note arrays must be [label]")
        if self.sentence_similarity.shape != (sentences, labels) or self.sentence_probs.shape != (sentences, labels):
            raise ValueError("sentence arrays must be [sentence, label]")
        if self.note_reference_similarity.shape != (references,) or \
                self.sentence_reference_similarity.shape != (sentences, references):
            raise ValueError("reference similarities must be [ref] and [sentence, ref]")
        if self.sentence_reference.shape != (sentences,) or self.sentence_margin.shape != (sentences,) or \
                len(self.sentence_verdicts) != sentences:
            raise ValueError("sentence references, margins and verdicts must be [sentence]")
        for array in (self.note_similarity, self.note_probs, self.sentence_spans, self.sentence_similarity,
                      self.sentence_probs, self.note_reference_similarity, self.sentence_reference_similarity,
                      self.sentence_reference, self.sentence_margin):
            frozen_array(array)

    @property
    def stands_out(self) -> bool:
        """Whether one description is clearly closest to the whole note (see :func:`standing_out`)."""
        return self.note_verdict == STANDS_OUT


def embedding_similarity(loaded: LoadedModel, plan: NotePlan, descriptions: Sequence[str], *,
                         temperature: float = DEFAULT_TEMPERATURE, per_sentence: bool = True,
                         references: Sequence[str] = REFERENCE_DESCRIPTIONS,
                         progress: Progress | None = None) -> SimilarityResult:
    """Zero-shot labelling by embedding similarity (works with any encoder, best with sentence encoders).

    The note (its windows as planned, weighted by length) and, with ``per_sentence``, each of its
    sentences is mean-pooled over the last layer and compared by cosine similarity with each
    description's embedding; ``softmax(cosine / temperature)`` ranks the descriptions.
    The same text is compared with ``references`` (unrelated phrases) the same way, giving
    the reference, margin and verdict of :func:`standing_out`. The plan's options give the
    knocked-out heads.

    Raises:
        TargetError: no description, or an empty one; ValueError: temperature <= 0, or
        fewer than two references.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    reference_texts = [str(r).strip() for r in references]
    if len(reference_texts) < 2 or not all(reference_texts):
        raise ValueError("give at least two non-empty reference descriptions")
    cleaned = _cleaned(descriptions)
    lowercase, knocked_out = plan.lowercase, plan.options.knocked_out
    targets = description_matrix(loaded, cleaned + reference_texts, lowercase=lowercase,
                                 knocked_out=knocked_out)  # [label + ref, d]
    note = plan.tokens
    spans: list[tuple[int, int]] = []
    pieces = [(0, note.ids[window.start:window.stop]) for window in plan.windows]  # the note, as the model reads it
    if per_sentence:
        limit = loaded.info.max_tokens - 2
        for sentence in plan.segmentation.sentences:
            inside = np.flatnonzero((note.offsets[:, 0] >= sentence.start) & (note.offsets[:, 0] < sentence.end))
            if inside.size:
                spans.append((sentence.start, sentence.end))
                pieces += [(len(spans), note.ids[inside][w.start:w.stop])
                           for w in plan_windows(inside.size, limit, DEFAULT_OVERLAP)]
    report(progress, 0.1, "Embedding the note")
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads:
        vectors = pooled_windows(loaded, pieces, 1 + len(spans), cls_id=plan.cls_id, sep_id=plan.sep_id).cpu().numpy()
    report(progress, 1.0, "Done")
    return similarity_result(loaded, plan, vectors, targets, descriptions=cleaned, references=reference_texts,
                             sentence_spans=spans, temperature=temperature, knocked_out=heads)


def similarity_result(loaded: LoadedModel, plan: NotePlan, vectors: np.ndarray, targets: np.ndarray, *,
                      descriptions: Sequence[str], references: Sequence[str] = REFERENCE_DESCRIPTIONS,
                      sentence_spans: Sequence[tuple[int, int]] = (), temperature: float = DEFAULT_TEMPERATURE,
                      knocked_out: HeadSet = frozenset()) -> SimilarityResult:
    """The :class:`SimilarityResult` of pooled text vectors against description vectors.

    Args:
        vectors: float [1 + sentence, hidden]: the note's (then each sentence's) mean-pooled vector, as
            :func:`pooled_windows` gives it (length-weighted over windows; normalized here).
        targets: float32 [label + ref, hidden]: :func:`description_matrix` of ``descriptions`` then ``references``.
        sentence_spans: characters of each sentence row of ``vectors`` after the first.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    unit = F.normalize(torch.from_numpy(np.array(vectors, dtype=np.float32)), dim=-1)  # a copy: may be read-only
    cosines = (unit @ torch.from_numpy(np.array(targets, dtype=np.float32)).T).numpy().astype(np.float32)
    labels = len(descriptions)
    similarity, reference_similarity = cosines[:, :labels], cosines[:, labels:]  # [1 + sentence, label], [.., ref]
    probs = torch.softmax(torch.from_numpy(similarity) / temperature, dim=-1).numpy().astype(np.float32)
    reference, margin, verdicts = standing_out(similarity, reference_similarity)
    return SimilarityResult(
        model_key=loaded.info.key, text=plan.text, lowercase=plan.lowercase, knocked_out=frozenset(knocked_out),
        windows=plan.windows, descriptions=tuple(descriptions), temperature=float(temperature),
        note_similarity=np.ascontiguousarray(similarity[0]), note_probs=probs[0],
        sentence_spans=np.array(list(sentence_spans), dtype=np.int32).reshape(-1, 2),
        sentence_similarity=np.ascontiguousarray(similarity[1:]), sentence_probs=probs[1:],
        reference_descriptions=tuple(references),
        note_reference_similarity=np.ascontiguousarray(reference_similarity[0]),
        note_reference=float(reference[0]), note_margin=float(margin[0]), note_verdict=verdicts[0],
        sentence_reference_similarity=np.ascontiguousarray(reference_similarity[1:]),
        sentence_reference=reference[1:].copy(), sentence_margin=margin[1:].copy(),
        sentence_verdicts=verdicts[1:],
    )
