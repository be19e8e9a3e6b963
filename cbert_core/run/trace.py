"""Run a note through the model once, with hooks, into an immutable :class:`Trace`.

The Trace holds numpy arrays only (no torch objects, no model reference), so it
pickles for caching and can be shared read-only between views. Positions are
global: 0 is [CLS], 1..n are the note's word pieces, n + 1 is [SEP]. A note
longer than the model's positions is run in overlapping windows; per-token
values are stitched from the window where each token is most central, while
pairwise values (attention, queries/keys) stay per window.

What it holds, and in which precision (half of what storing every attention weight took):

* per window, the per-head queries (float16; float32 with ``capture_qk``) and keys (float32), from
  which :class:`~cbert_core.run.lazy_attention.WindowAttention` computes any head's weights exactly as
  the model did when a view reads ``Trace.attentions[window]``; and each head's statistics
  (:mod:`cbert_core.run.head_stats`), reduced from the model's own weights while it ran;
* hidden states in float16 (every view that computes with them converts to float32 first; the
  re-derivation on "Inside the model" has its own float32 capture, :mod:`cbert_core.run.inside_capture`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from cbert_core.errors import ResourceLimitError
from cbert_core.model.heads import HeadOutput, head_adapter
from cbert_core.model.hooks import HeadSet, Recording, capture, knockout, observe_attention
from cbert_core.model.loading import LoadedModel, ModelInfo
from cbert_core.model.precision import Precision, autocast
from cbert_core.progress import Progress
from cbert_core.records import frozen_array
from cbert_core.run.head_stats import HeadStatistics, StatisticsCollector
from cbert_core.run.lazy_attention import WindowAttention
from cbert_core.run.plan import Budget, NotePlan
from cbert_core.text.segment import Segmentation
from cbert_core.text.tokens import mask_positions
from cbert_core.text.windows import Window

DEFAULT_TOP_K = 10
DEFAULT_MAX_TRACE_BYTES = 2 * 2**30  # what one trace may hold in memory
HEAD_SPLIT_SITES = frozenset({"query", "key", "value", "context"})  # kept per head: [layer, head, pos, head_dim]


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One note run through one model: every array a view needs, read-only."""

    model_key: str
    model_name: str
    text: str
    lowercase: bool
    precision: Precision
    knocked_out: HeadSet
    mask_id: int | None
    tokens: tuple[str, ...]  # [pos]
    input_ids: np.ndarray  # int64 [pos]
    offsets: np.ndarray  # int32 [pos, 2]; (-1, -1) for [CLS]/[SEP]
    word_ids: np.ndarray  # int32 [pos]; -1 for [CLS]/[SEP]
    word_spans: np.ndarray  # int32 [word, 2]
    special: np.ndarray  # bool [pos]
    sentence_ids: np.ndarray  # int32 [pos]; -1 for specials and text outside sentences
    section_ids: np.ndarray  # int32 [pos]; -1 for specials and text before any section
    segmentation: Segmentation
    windows: tuple[Window, ...]
    owner: np.ndarray  # int32 [pos]: window that per-token values come from
    hidden_states: np.ndarray  # float16 [layer + 1, pos, hidden]
    head: HeadOutput
    queries: tuple[np.ndarray, ...]  # per window: float16 [layer, head, q, head_dim] (float32 with capture_qk)
    keys: tuple[np.ndarray, ...]  # per window: float32 [layer, head, k, head_dim]
    head_stats: tuple[HeadStatistics, ...]  # per window: statistics of every head's weights
    # per window [layer, head, q, k] float16 (window positions): by default computed from the queries and
    # keys when read (WindowAttention); arrays given here are used as they are.
    attentions: tuple[WindowAttention | np.ndarray, ...] = ()
    ffn_activations: np.ndarray | None = None  # float16 [layer, pos, d_ff]
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # other captured sites, stitched

    def __post_init__(self) -> None:
        positions = len(self.tokens)
        for name in ("input_ids", "word_ids", "special", "sentence_ids", "section_ids", "owner"):
            if getattr(self, name).shape != (positions,):
                raise ValueError(f"Trace.{name} must have shape [{positions}]")
        if self.offsets.shape != (positions, 2):
            raise ValueError("Trace.offsets must be [pos, 2]")
        if self.hidden_states.ndim != 3 or self.hidden_states.shape[1] != positions:
            raise ValueError("Trace.hidden_states must be [layer + 1, pos, hidden]")
        if len(self.queries) != len(self.windows) or len(self.keys) != len(self.windows):
            raise ValueError("one query and one key array per window")
        if len(self.head_stats) != len(self.windows):
            raise ValueError("one set of head statistics per window")
        if not self.attentions:
            object.__setattr__(self, "attentions", tuple(
                WindowAttention(queries, keys, self.precision) for queries, keys in zip(self.queries, self.keys)))
        if len(self.attentions) != len(self.windows):
            raise ValueError("one attention array per window")
        for window, attention in zip(self.windows, self.attentions):
            size = window.size + 2
            if attention.ndim != 4 or attention.shape[2:] != (size, size):
                raise ValueError(f"window {window.index} attention must be [layer, head, {size}, {size}]")
        for value in (self.input_ids, self.offsets, self.word_ids, self.word_spans, self.special,
                      self.sentence_ids, self.section_ids, self.owner, self.hidden_states,
                      *self._stored_attentions, *self.queries, *self.keys, *self.extras.values()):
            frozen_array(value)
        if self.ffn_activations is not None:
            frozen_array(self.ffn_activations)

    @property
    def key(self) -> str:
        """A digest naming what this trace holds (model, note, casing, windows, precision, heads out,
        captured sites): analyses derived from a trace are cached under it."""
        payload = repr((self.model_key, self.text, self.lowercase, self.precision, sorted(self.knocked_out),
                        [(w.start, w.stop) for w in self.windows], self.exact_queries,
                        self.ffn_activations is not None, sorted(self.extras)))
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def num_layers(self) -> int:
        return int(self.hidden_states.shape[0] - 1)

    @property
    def num_heads(self) -> int:
        return int(self.queries[0].shape[1])

    @property
    def exact_queries(self) -> bool:
        """Whether the queries are kept in float32, as the model computed them (``capture_qk``)."""
        return self.queries[0].dtype == np.float32

    @property
    def _stored_attentions(self) -> list[np.ndarray]:
        """Attention arrays given as arrays (not computed on demand)."""
        return [attention for attention in self.attentions if isinstance(attention, np.ndarray)]

    @property
    def num_positions(self) -> int:
        return len(self.tokens)

    @property
    def mask_positions(self) -> np.ndarray:
        """int64 [m]: positions holding the mask token."""
        return mask_positions(self.input_ids, self.mask_id)

    def window_positions(self, window: int) -> np.ndarray:
        """int64 [window size + 2]: global position of each of a window's positions."""
        chosen = self.windows[window]
        last = self.num_positions - 1
        return np.concatenate([[0], np.arange(chosen.start + 1, chosen.stop + 1), [last]]).astype(np.int64)

    def window_tokens(self, window: int) -> tuple[str, ...]:
        return tuple(self.tokens[position] for position in self.window_positions(window))

    @property
    def nbytes(self) -> int:
        """Memory held by the trace's arrays, in bytes."""
        arrays = [self.input_ids, self.offsets, self.word_ids, self.word_spans, self.special, self.sentence_ids,
                  self.section_ids, self.owner, self.hidden_states, *self._stored_attentions, *self.queries,
                  *self.keys, *self.extras.values()]
        head = self.head
        arrays += [a for a in (head.top_ids, head.top_logprobs, head.token_logits, head.sequence_logits,
                               head.cls_vectors, self.ffn_activations) if a is not None]
        return int(sum(array.nbytes for array in arrays) + sum(stats.nbytes for stats in self.head_stats))


def _per_token_ids(offsets: np.ndarray, spans: Iterable[tuple[int, int]]) -> np.ndarray:
    """int32 [n]: index of the span holding each token's first character, or -1."""
    result = np.full(len(offsets), -1, dtype=np.int32)
    for index, (start, end) in enumerate(spans):
        inside = (offsets[:, 0] >= start) & (offsets[:, 0] < end)
        result[inside] = index
    return result


def trace(
    loaded: LoadedModel,
    plan: NotePlan,
    *,
    capture_qk: bool = False,
    capture_ffn: bool = False,
    extra_sites: Iterable[str] = (),
    top_k: int = DEFAULT_TOP_K,
    progress: Progress | None = None,
    max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES,
) -> Trace:
    """Run the planned note through ``loaded`` and capture what the views need.

    Args:
        loaded: the model (shared; only thread-filtered hooks touch it).
        plan: the note as :func:`cbert_core.run.plan.plan_note` prepared it for ``loaded``; its
            options give the precision ("bf16": bfloat16 autocast, fast with AVX512-BF16/AMX) and
            the knocked-out heads.
        capture_qk: keep the queries in float32, exactly as the model computed them (the neuron view shows
            them); otherwise they are kept in float16, which recomputes the weights within 2e-3.
        capture_ffn: also keep feed-forward activations [layer, pos, d_ff].
        extra_sites: other capture sites (see :mod:`cbert_core.model.hooks`), stitched per token.
        top_k: masked-LM candidates kept per position.
        progress: called with (fraction, message) after each window.
        max_trace_bytes: refuse notes whose trace would need more memory than this.

    Raises:
        ResourceLimitError: the trace would exceed ``max_trace_bytes``.
        ValueError: the plan was made for another model.
    """
    if plan.model_key != loaded.info.key:
        raise ValueError("the plan was made for another model")
    info = loaded.info
    adapter = head_adapter(info.head_kind)
    precision, knocked_out, lowercase = plan.options.precision, plan.options.knocked_out, plan.lowercase
    note, windows, text = plan.tokens, plan.windows, plan.text
    _check_memory(info, windows, len(note) + 2, capture_qk, capture_ffn, max_trace_bytes)
    owner_content = plan.owner

    extra = frozenset(extra_sites) - {"hidden", "attention", "query", "key", "ffn_activation"}
    sites = {"hidden", "query", "key", *extra}
    if capture_ffn:
        sites.add("ffn_activation")

    per_window: list[dict[str, np.ndarray]] = []
    head_parts: list[dict[str, np.ndarray]] = []
    head_stats: list[HeadStatistics] = []
    global_tokens = plan.global_tokens()
    query_dtype = torch.float32 if capture_qk else torch.float16
    n = len(note)
    positions = n + 2
    owner = np.concatenate([[0], owner_content, [len(windows) - 1]]).astype(np.int32)
    local = _local_index(windows, owner)
    layers, heads = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    # Several windows: each window's hidden states land in one reused scratch buffer and its owned
    # positions are copied straight into the note-wide array (fresh memory is slow to touch).
    streamed: np.ndarray | None = None
    scratch: torch.Tensor | None = None
    if len(windows) > 1:
        streamed = np.empty((layers + 1, positions, info.hidden_size), dtype=np.float16)
        widest = max(w.size for w in windows) + 2
        scratch = torch.empty((layers + 1, 1, widest, info.hidden_size), dtype=torch.float16)
    device = loaded.device
    statistics = StatisticsCollector()  # each layer's weights are reduced to per-head statistics, then dropped
    with torch.inference_mode(), autocast(precision, device), knockout(loaded.anatomy, knocked_out) as heads_out, \
            capture(loaded.anatomy, sites) as recording, observe_attention(statistics):
        for window in windows:
            input_ids = torch.from_numpy(plan.window_ids(window))[None].to(device)  # [1, t]
            size = int(input_ids.shape[1])
            statistics.start_window([global_tokens[p] for p in plan.window_positions(window)])
            head_dim = info.hidden_size // heads
            recording.reserve("query", (layers, 1, heads, size, head_dim), query_dtype, heads=heads)
            recording.reserve("key", (layers, 1, heads, size, head_dim), torch.float32, heads=heads)
            recording.reserve("hidden", (layers + 1, 1, size, info.hidden_size), torch.float16,
                              out=None if scratch is None else scratch[:, :, :size])
            outputs = loaded.model(input_ids=input_ids)  # one unpadded sequence: no mask to build or add
            head_stats.append(statistics.finish_window(window.index, layers))
            collected = _collect_window(recording, sites, heads)
            if streamed is not None:
                _stitch_into(streamed, collected.pop("hidden"), window.index, owner, local, axis=1)
            per_window.append(collected)
            recording.clear()
            head_parts.append(adapter.trace_part(outputs, top_k))
            if progress is not None:
                progress((window.index + 1) / len(windows), f"Window {window.index + 1} of {len(windows)}")

    segmentation = plan.segmentation  # found while the model ran

    def stitch(name: str, axis: int, parts: list[dict[str, np.ndarray]] = per_window) -> np.ndarray:
        """Per-token arrays [..., window pos, ...] per window -> [..., global pos, ...]."""
        return _stitch_parts([part[name] for part in parts], owner, local, positions, axis)

    offsets = plan.global_offsets()
    word_ids = plan.global_word_ids()
    sentence_spans = [(s.start, s.end) for s in segmentation.sentences]
    section_spans = [(s.start, s.end) for s in segmentation.sections]
    sentence_ids = np.concatenate([[-1], _per_token_ids(note.offsets, sentence_spans), [-1]]).astype(np.int32)
    section_ids = np.concatenate([[-1], _per_token_ids(note.offsets, section_spans), [-1]]).astype(np.int32)
    special = np.zeros(positions, dtype=bool)
    special[[0, -1]] = True

    head = adapter.stitched(info.labels, head_parts, lambda name, axis: stitch(name, axis, head_parts))
    return Trace(
        model_key=info.key,
        model_name=info.name,
        text=text,
        lowercase=lowercase,
        precision=precision,
        knocked_out=heads_out,
        mask_id=note.mask_id,
        tokens=global_tokens,
        input_ids=np.concatenate([[plan.cls_id], note.ids, [plan.sep_id]]).astype(np.int64),
        offsets=offsets,
        word_ids=word_ids,
        word_spans=np.array(note.word_spans),
        special=special,
        sentence_ids=sentence_ids,
        section_ids=section_ids,
        segmentation=segmentation,
        windows=windows,
        owner=owner,
        hidden_states=stitch("hidden", axis=1) if streamed is None else streamed,
        head=head,
        queries=tuple(part["query"] for part in per_window),
        keys=tuple(part["key"] for part in per_window),
        head_stats=tuple(head_stats),
        ffn_activations=stitch("ffn_activation", axis=1).astype(np.float16) if capture_ffn else None,
        # [layer, head, pos, head_dim] for per-head sites, else [layer, pos, ...]
        extras={name: stitch(name, axis=2 if name in HEAD_SPLIT_SITES else 1) for name in sorted(extra)},
    )


def estimated_bytes(info: ModelInfo, windows: tuple[Window, ...], positions: int, capture_qk: bool = False,
                    capture_ffn: bool = False) -> int:
    """Memory a trace will hold: queries (float16, or float32 with ``capture_qk``) and keys (float32) per
    window, hidden states (float16), optional captures."""
    layers = info.num_layers
    query_bytes = 4 if capture_qk else 2
    qk = sum(layers * (w.size + 2) * info.hidden_size * (query_bytes + 4) for w in windows)
    hidden = (layers + 1) * positions * info.hidden_size * 2
    ffn = layers * positions * info.intermediate_size * 2 if capture_ffn else 0
    return qk + hidden + ffn


def trace_budget(loaded: LoadedModel, *, capture_qk: bool = False, capture_ffn: bool = False,
                 max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES) -> Budget:
    """A planning budget that refuses, before the slow sentence segmentation, a note whose trace
    would need more than ``max_trace_bytes`` (pass it to :func:`cbert_core.run.plan.plan_note`)."""
    info = loaded.info

    def check(pieces: int, windows: tuple[Window, ...]) -> None:
        _check_memory(info, windows, pieces + 2, capture_qk, capture_ffn, max_trace_bytes)

    return check


def _check_memory(info: ModelInfo, windows: tuple[Window, ...], positions: int, capture_qk: bool,
                  capture_ffn: bool, limit: int) -> None:
    needed = estimated_bytes(info, windows, positions, capture_qk, capture_ffn)
    if needed > limit:
        raise ResourceLimitError(
            f"This note ({positions - 2:,} word pieces in {len(windows)} windows) would need about "
            f"{needed / 2**30:.1f} GB to analyse; the limit is {limit / 2**30:.1f} GB. Analyse a shorter excerpt "
            f"(for example one section)."
        )


def _local_index(windows: tuple[Window, ...], owner: np.ndarray) -> np.ndarray:
    """int64 [pos]: each global position's index inside its owner window."""
    positions = len(owner)
    local = np.zeros(positions, dtype=np.int64)
    content = np.arange(1, positions - 1)
    starts = np.asarray([w.start for w in windows], dtype=np.int64)
    local[1:-1] = content - starts[owner[1:-1]]  # global p = start + local (local 1 is the first content)
    local[0] = 0
    local[-1] = windows[-1].size + 1
    return local


def _stitch_parts(parts: list[np.ndarray], owner: np.ndarray, local: np.ndarray, positions: int,
                  axis: int) -> np.ndarray:
    if len(parts) == 1 and parts[0].shape[axis] == positions:
        return parts[0]  # one window holds every position in order: nothing to gather
    shape = list(parts[0].shape)
    shape[axis] = positions
    out = np.empty(shape, dtype=parts[0].dtype)
    for index, part in enumerate(parts):
        _stitch_into(out, part, index, owner, local, axis)
    return out


def _stitch_into(out: np.ndarray, part: np.ndarray, index: int, owner: np.ndarray, local: np.ndarray,
                 axis: int) -> None:
    """Copy the positions window ``index`` owns from its ``part`` into the note-wide ``out``."""
    chosen = np.flatnonzero(owner == index)
    if chosen.size == 0:
        return
    out_index: list[object] = [slice(None)] * out.ndim
    in_index: list[object] = [slice(None)] * out.ndim
    sources = local[chosen]
    contiguous = chosen[-1] - chosen[0] + 1 == chosen.size and sources[-1] - sources[0] + 1 == chosen.size
    if contiguous:  # the usual case: a window owns one run of positions; slices copy without gathering
        out_index[axis] = slice(int(chosen[0]), int(chosen[-1]) + 1)
        in_index[axis] = slice(int(sources[0]), int(sources[-1]) + 1)
    else:
        out_index[axis] = chosen
        in_index[axis] = sources
    out[tuple(out_index)] = part[tuple(in_index)]


def _collect_window(recording: Recording, sites: set[str], num_heads: int) -> dict[str, np.ndarray]:
    """Turn one window's recorded hook outputs into per-layer stacks without the batch axis."""
    collected: dict[str, np.ndarray] = {}
    for site in sites:
        stacked = recording.take_stacked(site)[:, 0]  # [layer(+1), ...] without the batch axis
        if site in HEAD_SPLIT_SITES and stacked.ndim == 3:  # not already split per head as it was recorded
            layers, tokens, width = stacked.shape
            stacked = stacked.reshape(layers, tokens, num_heads, width // num_heads).transpose(0, 2, 1, 3)
            stacked = np.ascontiguousarray(stacked)  # [layer, head, pos, head_dim]
        collected[site] = stacked
    return collected


