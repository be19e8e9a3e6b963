"""Search a collection for tokens used like one token of the current note (exBERT-style).

Every content token of every note gets its contextual vector at one layer; the
vectors are L2-normalised into a faiss ``IndexFlatIP`` (inner product of unit
vectors = cosine similarity, exact search). A query is a token vector from a
:class:`~cbert_core.run.trace.Trace` at the same layer. Each hit comes with the
sentence it sits in (character span and text) so it can be shown in context.

Long notes are cut into overlapping windows like a trace's, but without
snapping window edges to sentence boundaries (segmenting thousands of notes is
slow); each token takes its vector from the window where it is most central.
A short note's own token found by the search therefore scores 1; in a note
longer than one window the scores can differ slightly from the trace's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from cbert_core.errors import ResourceLimitError, TargetError
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress
from cbert_core.run.encode import DEFAULT_BATCH_SIZE, run_sequences
from cbert_core.run.plan import NotePlan
from cbert_core.run.trace import Trace
from cbert_core.text.segment import segment

DEFAULT_INDEX_BYTES = 512 * 1024**2  # vectors held by the index
DEFAULT_CONTEXT_CHARS = 300  # longest context shown around a hit


@dataclass(frozen=True, kw_only=True)
class TokenIndex:
    """Unit-length token vectors of a collection at one layer, with compact per-token metadata."""

    model_key: str
    model_name: str
    layer: int  # hidden-state index (0 = embeddings)
    lowercase: bool
    texts: tuple[str, ...]  # [note] the collection's notes (held in memory only)
    note_ids: tuple[str, ...]  # [note]
    note_index: np.ndarray  # int32 [token]: which note
    positions: np.ndarray  # int32 [token]: trace position in that note (1 = first piece)
    char_spans: np.ndarray  # int32 [token, 2]: characters of the piece in the note
    piece_index: np.ndarray  # int32 [token]: index into piece_names
    piece_names: tuple[str, ...]  # distinct word pieces
    index: faiss.IndexFlatIP = field(repr=False, compare=False)  # [token, hidden] unit vectors

    def __post_init__(self) -> None:
        count = len(self.note_index)
        if self.positions.shape != (count,) or self.piece_index.shape != (count,):
            raise ValueError("TokenIndex per-token arrays must be [token]")
        if self.char_spans.shape != (count, 2):
            raise ValueError("TokenIndex.char_spans must be [token, 2]")
        if int(self.index.ntotal) != count:
            raise ValueError("the faiss index must hold one vector per token")
        for array in (self.note_index, self.positions, self.char_spans, self.piece_index):
            array.flags.writeable = False

    @property
    def size(self) -> int:
        """Number of tokens indexed."""
        return len(self.note_index)

    @property
    def nbytes(self) -> int:
        vectors = int(self.index.ntotal) * int(self.index.d) * 4
        return vectors + sum(a.nbytes for a in (self.note_index, self.positions, self.char_spans, self.piece_index))

    def vector(self, token: int) -> np.ndarray:
        """float32 [hidden]: the stored unit vector of one indexed token."""
        return self.index.reconstruct(int(token))


@dataclass(frozen=True, kw_only=True)
class TokenMatch:
    """One hit: a token of a note, its similarity and the sentence around it."""

    rank: int  # 0 = most similar
    score: float  # cosine similarity to the query
    note: int  # index into the collection
    note_id: str
    position: int  # trace position of the token in its note
    token: str  # the word piece
    char_start: int
    char_end: int
    context_start: int  # the sentence (clipped to the context limit) holding the token
    context_end: int
    context: str  # text[context_start:context_end]


def _check_layer(loaded: LoadedModel, layer: int) -> int:
    layers = loaded.info.num_layers + 1
    if not -layers <= layer < layers:
        raise ValueError(f"layer {layer} is outside 0..{layers - 1}")
    return layer % layers


def build_token_index(loaded: LoadedModel, plans: Sequence[NotePlan], *, layer: int,
                      note_ids: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                      max_bytes: int = DEFAULT_INDEX_BYTES, progress: Progress | None = None) -> TokenIndex:
    """Index the contextual vector of every content token of every note at ``layer``.

    Args:
        loaded: the shared model (only called).
        plans: the notes, planned for ``loaded``; queries must be read with the same casing.
        layer: hidden-state index (0 = embeddings, -1 = last layer).
        note_ids: a name per note (None: "note N").
        max_bytes: refuse when tokens x hidden x 4 bytes exceeds this.
        progress: (fraction, message); raising from it stops the work.

    Raises:
        ResourceLimitError: the vectors would exceed ``max_bytes`` (checked before the model runs).
    """
    layer = _check_layer(loaded, layer)
    notes = list(plans)
    lowercase = notes[0].lowercase if notes else loaded.resolve_lowercase(None)
    texts = tuple(plan.text for plan in notes)
    ids = tuple(note_ids) if note_ids is not None else tuple(f"note {number}" for number in range(1, len(notes) + 1))
    total = sum(len(note.tokens) for note in notes)
    hidden = loaded.info.hidden_size
    needed = total * hidden * 4
    if needed > max_bytes:
        raise ResourceLimitError(
            f"The collection has {total:,} word pieces; indexing them takes {needed / 1e6:,.0f} MB and the limit "
            f"is {max_bytes / 1e6:,.0f} MB. Use fewer or shorter notes, or raise the limit in the settings."
        )
    sequences, origin = [], []  # origin: (note, window)
    starts = np.zeros(len(notes) + 1, dtype=np.int64)
    owners = []
    for note_index, note in enumerate(notes):
        starts[note_index + 1] = starts[note_index] + len(note.tokens)
        owners.append(note.owner)
        for window in note.windows:
            sequences.append(note.window_ids(window))
            origin.append((note_index, window))
    vectors = np.empty((total, hidden), dtype=np.float32)  # [token, hidden]
    for index, states in run_sequences(loaded, sequences, layers=[layer], batch_size=batch_size,
                                       progress=progress, what="windows"):
        note_index, window = origin[index]
        owned = np.flatnonzero(owners[note_index][window.start:window.stop] == window.index)  # window-local
        vectors[starts[note_index] + window.start + owned] = states[0, 1 + owned]
    faiss.normalize_L2(vectors)
    index = faiss.IndexFlatIP(hidden)
    index.add(vectors)
    del vectors

    pieces: dict[str, int] = {}
    piece_index = np.empty(total, dtype=np.int32)
    cursor = 0
    for note in notes:
        for token in note.tokens.tokens:
            piece_index[cursor] = pieces.setdefault(token, len(pieces))
            cursor += 1
    return TokenIndex(
        model_key=loaded.info.key, model_name=loaded.info.name, layer=layer, lowercase=lowercase, texts=texts,
        note_ids=ids,
        note_index=np.repeat(np.arange(len(notes), dtype=np.int32), [len(n.tokens) for n in notes]),
        positions=np.concatenate([np.arange(1, len(n.tokens) + 1, dtype=np.int32) for n in notes]),
        char_spans=np.concatenate([n.tokens.offsets for n in notes]).astype(np.int32).reshape(-1, 2),
        piece_index=piece_index, piece_names=tuple(pieces), index=index,
    )


def _context(text: str, start: int, end: int, limit: int, cache: dict[int, object], note: int) -> tuple[int, int]:
    """Character span of the sentence holding [start, end), clipped to ``limit`` characters around it."""
    segmentation = cache.get(note)
    if segmentation is None:
        segmentation = cache[note] = segment(text)
    sentence_index = segmentation.sentence_at(start)
    if sentence_index >= 0 and segmentation.sentences[sentence_index].end > start:
        sentence = segmentation.sentences[sentence_index]
        low, high = sentence.start, max(sentence.end, end)
    else:
        low, high = 0, len(text)
    if high - low > limit:
        half = max(0, (limit - (end - start)) // 2)
        low, high = max(low, start - half), min(high, end + half)
        while low > 0 and low < start and not text[low - 1].isspace():
            low += 1  # do not start inside a word
        while high < len(text) and high > end and not text[high].isspace():
            high -= 1
    return low, high


def search_tokens(index: TokenIndex, query: np.ndarray, *, k: int = 10, skip: Callable[[int], bool] | None = None,
                  context_chars: int = DEFAULT_CONTEXT_CHARS) -> tuple[TokenMatch, ...]:
    """The ``k`` indexed tokens most similar (cosine) to ``query``.

    Args:
        index: from :func:`build_token_index`.
        query: float [hidden] vector at the index's layer.
        k: hits to return.
        skip: called with an indexed token number; True leaves that token out.
        context_chars: the longest context returned around a hit.
    """
    vector = np.asarray(query, dtype=np.float32).reshape(1, -1).copy()
    if vector.shape[1] != index.index.d:
        raise TargetError(f"The query vector has {vector.shape[1]} dimensions; the index holds {index.index.d}. "
                          f"Search with a note traced by the same model.")
    if not np.isfinite(vector).all() or not np.linalg.norm(vector):
        raise TargetError("The query vector is zero or not finite, so it has no direction to search for.")
    faiss.normalize_L2(vector)
    wanted = min(index.size, k + (16 if skip is not None else 0))
    hits: list[TokenMatch] = []
    cache: dict[int, object] = {}
    while wanted > 0:
        scores, found = index.index.search(vector, wanted)  # [1, wanted] each
        hits = []
        for score, token in zip(scores[0].tolist(), found[0].tolist()):
            if token < 0 or (skip is not None and skip(token)):
                continue
            note = int(index.note_index[token])
            start, end = (int(v) for v in index.char_spans[token])
            low, high = _context(index.texts[note], start, end, context_chars, cache, note)
            hits.append(TokenMatch(rank=len(hits), score=float(score), note=note, note_id=index.note_ids[note],
                                   position=int(index.positions[token]),
                                   token=index.piece_names[int(index.piece_index[token])], char_start=start,
                                   char_end=end, context_start=low, context_end=high,
                                   context=index.texts[note][low:high]))
            if len(hits) == k:
                return tuple(hits)
        if wanted >= index.size:
            break
        wanted = min(index.size, wanted * 4)
    return tuple(hits)


def search_trace_token(index: TokenIndex, result: Trace, position: int, *, k: int = 10, include_self: bool = False,
                       context_chars: int = DEFAULT_CONTEXT_CHARS) -> tuple[TokenMatch, ...]:
    """Search with the token at ``position`` of a trace (its vector at the index's layer).

    ``include_self=False`` leaves out the query token itself when the traced
    note is in the collection.

    Raises:
        TargetError: the trace comes from another model or casing, or the position is not a content token.
    """
    if result.model_key != index.model_key:
        raise TargetError(f"The token index was built with {index.model_name}, but this note was traced with "
                          f"{result.model_name}. Rebuild the index with the current model.")
    if result.lowercase != index.lowercase:
        raise TargetError("The token index was built with the other casing setting. Rebuild it, or switch the "
                          "casing back, so the vectors are comparable.")
    if not 0 <= position < result.num_positions or result.special[position]:
        raise TargetError("Choose a word piece of the note (not [CLS] or [SEP]) to search for.")
    query = result.hidden_states[index.layer, position].astype(np.float32)  # [hidden]
    skip = None
    if not include_self:
        start, end = (int(v) for v in result.offsets[position])
        same_notes = {number for number, text in enumerate(index.texts) if text == result.text}

        def skip(token: int) -> bool:
            return (int(index.note_index[token]) in same_notes and int(index.char_spans[token, 0]) == start
                    and int(index.char_spans[token, 1]) == end)
    return search_tokens(index, query, k=k, skip=skip, context_chars=context_chars)
