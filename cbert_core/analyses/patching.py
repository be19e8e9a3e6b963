"""Activation patching between a minimal pair: which layers, positions and heads carry the difference.

The pair (:mod:`cbert_core.analyses.minimal_pair`) is run twice, once as the note ("clean") and once as
the edited copy ("corrupted"), recording every layer's input (the residual stream), the attention
block's update, the feed-forward block's update and the heads' outputs (:class:`StoredRun`). A patched
run then repeats one of them (the *base*) with some activations taken from the other (the *source*):

* denoising: base = corrupted, source = clean. How much of the clean behaviour does this site bring back?
* noising: base = clean, source = corrupted. How much of the corrupted behaviour does this site carry over?

The metric is the share of the difference the patch moves, ``(patched - base) / (source - base)``: 0
changes nothing, 1 moves the target all the way (patching a layer's whole residual stream gives exactly
that). The raw target values come with it.

Scans (:data:`SCANS`): the residual stream at every (layer, position), the attention and feed-forward
updates at every (layer, position), each head's output at every layer (at all positions, or at one
chosen position). Positions are the clean window's; a position without a partner in the other run is
not patched (NaN).

Batched (:func:`patched_scores`): the patched runs are grouped in batches sized to a memory bound. A
run that patches layer L starts at layer L from the base run's stored input (the layers below are the
base run's, unchanged), and the runs of one batch are stacked layer by layer: those patching layer L join
the batch there. The last layer is computed only at the target's row when nothing there needs more.
The patches themselves go in through :func:`cbert_core.model.hooks.patch_activations`; a residual-stream
patch of layer L, where a batch row starts, is written into its starting input with the same rule
(:func:`cbert_core.model.hooks.write_patch`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cbert_core.analyses.minimal_pair import MinimalPair, make_pair
from cbert_core.analyses.targets import Target, read_target_score
from cbert_core.errors import TargetError
from cbert_core.model.hooks import ActivationPatch, HeadSet, capture, knockout, patch_activations, write_patch
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import autocast
from cbert_core.progress import Progress, report
from cbert_core.records import frozen
from cbert_core.run.forward import (
    DEFAULT_INFERENCE_MEMORY,
    attention_context,
    embed,
    finish_layer,
    fit_batch,
    run_encoder,
    word_vectors,
)
from cbert_core.run.plan import NotePlan, RunOptions
from cbert_core.serving.speed import Passes

Direction = Literal["denoising", "noising"]
ScanName = Literal["residual", "attention", "ffn", "heads", "heads_at"]
SCANS: tuple[ScanName, ...] = ("residual", "attention", "ffn", "heads", "heads_at")
SCAN_SITES: dict[ScanName, str] = {"residual": "hidden", "attention": "attention_update", "ffn": "ffn_update",
                                   "heads": "context", "heads_at": "context"}
HEAD_SCANS = frozenset({"heads", "heads_at"})
MAX_BATCH_ROWS = 256  # more rows per batch gain little speed and delay the progress bar
_RECORDED = ("context", "attention_update", "ffn_update")


@dataclass(frozen=True, kw_only=True)
class StoredRun:
    """One version of the pair run once, with every activation a patch may take from it."""

    ids: np.ndarray  # int64 [t]
    row: int  # the row the target reads (-1: a similarity, all rows)
    score: float  # the target
    hidden: np.ndarray  # float32 [layer, t, d]: each layer's input (the residual stream)
    context: np.ndarray  # float32 [layer, t, h * dh]: the heads' outputs before the output projection
    attention_update: np.ndarray  # float32 [layer, t, d]: the attention block's output projection
    ffn_update: np.ndarray  # float32 [layer, t, d]: the feed-forward block's output

    def __post_init__(self) -> None:
        t = self.ids.shape[0]
        for array in (self.hidden, self.context, self.attention_update, self.ffn_update):
            if array.ndim != 3 or array.shape[1] != t:
                raise ValueError("StoredRun activations must be [layer, t, width]")
        frozen(self.ids, self.hidden, self.context, self.attention_update, self.ffn_update)

    def site(self, name: str) -> np.ndarray:
        """The activations recorded at a patch site ([layer, t, width])."""
        return {"hidden": self.hidden, "context": self.context, "attention_update": self.attention_update,
                "ffn_update": self.ffn_update}[name]


@dataclass(frozen=True, kw_only=True, eq=False)
class PatchRun:
    """One patched run: at ``site`` of ``layer``, base positions take the source's values at theirs."""

    site: str
    layer: int
    base_positions: np.ndarray  # int64 [k]
    source_positions: np.ndarray  # int64 [k]
    head: int = -1  # the head whose output is patched (the context site only)

    def __post_init__(self) -> None:
        if self.base_positions.shape != self.source_positions.shape or self.base_positions.ndim != 1:
            raise ValueError("PatchRun positions must be two [k] arrays")
        if (self.site == "context") != (self.head >= 0):
            raise ValueError("a head is given exactly for the context site")


@dataclass(frozen=True, kw_only=True)
class PatchScan:
    """One scan: the target after each patch, and the share of the difference it moved."""

    name: ScanName
    scores: np.ndarray  # float64 [layer, position] or [layer, head]; NaN where nothing was patched
    share: np.ndarray  # float64, the same shape: (scores - base) / (source - base)

    def __post_init__(self) -> None:
        if self.scores.shape != self.share.shape or self.scores.ndim != 2:
            raise ValueError("PatchScan scores and share must be the same [layer, x] shape")
        frozen(self.scores, self.share)


@dataclass(frozen=True, kw_only=True)
class PairEffect:
    """The target on both versions of a pair (no patching)."""

    pair: MinimalPair
    target: Target
    clean_score: float
    corrupted_score: float
    knocked_out: HeadSet

    @property
    def difference(self) -> float:
        return self.clean_score - self.corrupted_score


@dataclass(frozen=True, kw_only=True)
class PatchingResult:
    """Every scan of one pair, in one direction."""

    effect: PairEffect
    direction: Direction
    scans: tuple[PatchScan, ...]
    position: int  # the clean position the "heads_at" scan patched (-1: not run)
    patched_runs: int  # runs through the model, the two recorded ones not counted
    batch_rows: int  # most runs per batch (the memory bound's choice)
    seconds: float

    @property
    def pair(self) -> MinimalPair:
        return self.effect.pair

    @property
    def base_score(self) -> float:
        return self.effect.corrupted_score if self.direction == "denoising" else self.effect.clean_score

    @property
    def source_score(self) -> float:
        return self.effect.clean_score if self.direction == "denoising" else self.effect.corrupted_score

    def scan(self, name: ScanName) -> PatchScan | None:
        return next((scan for scan in self.scans if scan.name == name), None)


def _layer(loaded: LoadedModel, index: int, hidden: torch.Tensor, row: int | None) -> torch.Tensor:
    """Layer ``index`` on [b, t, d]; with ``row``, computed at that row only ([b, 1, d])."""
    queries = hidden if row is None else hidden[:, row:row + 1]
    return finish_layer(loaded, index, attention_context(loaded, index, hidden, queries), queries)


def _merged(patches: list[ActivationPatch]) -> list[ActivationPatch]:
    """Patches of one (site, layer) joined into one (one hook call writes them all)."""
    grouped: dict[tuple[str, int], list[ActivationPatch]] = {}
    for patch in patches:
        grouped.setdefault((patch.site, patch.layer), []).append(patch)
    return [ActivationPatch(site=site, layer=layer, rows=torch.cat([p.rows for p in group]),
                            positions=torch.cat([p.positions for p in group]),
                            values=torch.cat([p.values for p in group]),
                            heads=None if group[0].heads is None else torch.cat([p.heads for p in group]))
            for (site, layer), group in grouped.items()]


def _activation_patch(loaded: LoadedModel, run: PatchRun, row: int, source: StoredRun) -> ActivationPatch:
    count = run.base_positions.size
    values = source.site(run.site)[run.layer][run.source_positions]  # [k, width]
    heads = None
    if run.site == "context":
        head_dim = loaded.anatomy.head_dim
        values = values[:, run.head * head_dim:(run.head + 1) * head_dim]
        heads = torch.full((count,), run.head, dtype=torch.long, device=loaded.device)
    return ActivationPatch(site=run.site, layer=run.layer, rows=torch.full((count,), row, dtype=torch.long, device=loaded.device),
                           positions=torch.from_numpy(run.base_positions.astype(np.int64)).to(loaded.device),
                           values=torch.from_numpy(np.ascontiguousarray(values)).to(loaded.device),
                           heads=heads)


def _run_batch(loaded: LoadedModel, base_hidden: np.ndarray, row: int, runs: Sequence[PatchRun],
               source: StoredRun | None, target: Target) -> torch.Tensor:
    """float64 [len(runs)]: the target after each run (sorted by layer), all in one staggered batch.

    Batch row i is ``runs[i]``; it joins at its layer with the base run's input there.
    """
    layers = len(loaded.anatomy.layers)
    positional = row >= 0
    full_last = not positional or any(run.layer == layers - 1 and run.site != "hidden" for run in runs)
    patches = _merged([_activation_patch(loaded, run, index, source) for index, run in enumerate(runs)
                       if run.site != "hidden" and run.base_positions.size])
    hidden: torch.Tensor | None = None
    with patch_activations(loaded.anatomy, patches):
        for layer in range(runs[0].layer, layers):
            joining = [(index, run) for index, run in enumerate(runs) if run.layer == layer]
            if joining:
                start = torch.tensor(base_hidden[layer], device=loaded.device)[None].expand(len(joining), -1, -1)  # [j, t, d]
                residual = [(local, run) for local, (_index, run) in enumerate(joining)
                            if run.site == "hidden" and run.base_positions.size]
                if residual:
                    patch = _merged([_activation_patch(loaded, run, local, source) for local, run in residual])[0]
                    start = write_patch(start, patch, loaded.anatomy.num_heads)
                hidden = start if hidden is None else torch.cat([hidden, start])
            last = layer == layers - 1
            hidden = _layer(loaded, layer, hidden, row if last and not full_last else None)
    states = hidden[:, row:row + 1] if positional and hidden.shape[1] > 1 else hidden
    return read_target_score(loaded, target, states)


def record_run(loaded: LoadedModel, ids: np.ndarray, target: Target, row: int,
               options: RunOptions = RunOptions()) -> StoredRun:
    """Run ``ids`` once (with the options' knocked-out heads and precision) and keep every patchable activation.

    Args:
        ids: int64 [t], [CLS] + pieces + [SEP].
        row: the row the target reads (-1 for a similarity).
    """
    with torch.inference_mode(), knockout(loaded.anatomy, options.knocked_out), autocast(options.precision, loaded.device):
        with capture(loaded.anatomy, _RECORDED) as recording:
            inputs: list[torch.Tensor] = []
            run_encoder(loaded, embed(loaded, word_vectors(loaded, torch.tensor(ids, dtype=torch.long, device=loaded.device)[None])),
                        layer_inputs=inputs)
        hidden = torch.cat(inputs).float().cpu().numpy()  # [layer, t, d]
        recorded = {site: recording.take_stacked(site)[:, 0] for site in _RECORDED}  # [layer, t, width]
        empty = PatchRun(site="hidden", layer=0, base_positions=np.zeros(0, np.int64),
                         source_positions=np.zeros(0, np.int64))
        score = float(_run_batch(loaded, hidden, row, [empty], None, target)[0])
    return StoredRun(ids=ids.astype(np.int64), row=int(row), score=score, hidden=hidden, **recorded)


def patched_scores(loaded: LoadedModel, base: StoredRun, source: StoredRun, runs: Sequence[PatchRun],
                   target: Target, *, options: RunOptions = RunOptions(), batch_size: int | None = None,
                   memory_limit: int = DEFAULT_INFERENCE_MEMORY, progress: Progress | None = None) -> np.ndarray:
    """float64 [run]: the target after each patched run, computed in batches under ``memory_limit``.

    A run that patches the last layer somewhere other than the target's row cannot change the target
    (that row reads only itself there): it gets the base score without running.

    Raises:
        ResourceLimitError: a single run would not fit in ``memory_limit``.
    """
    layers = len(loaded.anatomy.layers)
    scores = np.full(len(runs), np.nan)
    todo = []
    for index, run in enumerate(runs):
        if base.row >= 0 and run.layer == layers - 1 and run.site != "hidden" and not (run.base_positions == base.row).any():
            scores[index] = base.score
        else:
            todo.append(index)
    todo.sort(key=lambda index: runs[index].layer)
    per_batch = fit_batch(loaded, base.ids.size, min(batch_size or MAX_BATCH_ROWS, MAX_BATCH_ROWS),
                          memory_limit, backward=False, what="Activation patching")
    with torch.inference_mode(), knockout(loaded.anatomy, options.knocked_out), autocast(options.precision, loaded.device):
        for first in range(0, len(todo), per_batch):
            chosen = todo[first:first + per_batch]
            scores[chosen] = _run_batch(loaded, base.hidden, base.row, [runs[i] for i in chosen], source,
                                        target).cpu().numpy()
            done = first + len(chosen)
            report(progress, done / max(len(todo), 1), f"{done:,} of {len(todo):,} patched runs")
    return scores


def scan_runs(name: ScanName, pair: MinimalPair, direction: Direction, layers: int, heads: int,
               knocked_out: HeadSet, position: int) -> tuple[list[PatchRun], np.ndarray]:
    """The runs of one scan and, per cell of its [layer, x] grid, the run's index (-1: not patched)."""
    clean = np.arange(pair.positions)
    partnered = pair.partner >= 0
    other = pair.partner.astype(np.int64)
    base_of, source_of = (other, clean) if direction == "denoising" else (clean, other)
    site = SCAN_SITES[name]
    runs: list[PatchRun] = []
    if name in HEAD_SCANS:
        chosen = clean[partnered] if name == "heads" else np.array([position])
        cells = np.full((layers, heads), -1)
        for layer in range(layers):
            for head in range(heads):
                if (layer, head) in knocked_out:
                    continue
                cells[layer, head] = len(runs)
                runs.append(PatchRun(site=site, layer=layer, base_positions=base_of[chosen],
                                     source_positions=source_of[chosen], head=head))
        return runs, cells
    cells = np.full((layers, pair.positions), -1)
    for layer in range(layers):
        for p in clean[partnered]:
            cells[layer, p] = len(runs)
            runs.append(PatchRun(site=site, layer=layer, base_positions=base_of[[p]], source_positions=source_of[[p]]))
    return runs, cells


def pair_effect(loaded: LoadedModel, plan: NotePlan, corrupted_text: str, target: Target) -> PairEffect:
    """The pair made (see :func:`cbert_core.analyses.minimal_pair.make_pair`) and the target on both versions,
    with the plan's options (knocked-out heads, precision)."""
    pair = make_pair(loaded, plan, corrupted_text, target)
    clean = record_run(loaded, pair.clean_ids, target, pair.clean_row, plan.options)
    corrupted = record_run(loaded, pair.corrupted_ids, pair.corrupted_target, pair.corrupted_row, plan.options)
    return PairEffect(pair=pair, target=target, clean_score=clean.score, corrupted_score=corrupted.score,
                      knocked_out=plan.options.knocked_out)


def planned_passes(layers: int, heads: int, positions: int, scans: Sequence[ScanName]) -> Passes:
    """The work of :func:`patch_pair`, in full passes of ``positions`` (a run patching layer L runs layers L on)."""
    layer_rows = 2 * layers  # the two recorded runs
    for name in scans:
        per_layer = heads if name in HEAD_SCANS else positions
        layer_rows += sum(per_layer * (layers - layer) for layer in range(layers))
    return Passes(forward=((positions, math.ceil(layer_rows / layers)),))


def patch_pair(loaded: LoadedModel, plan: NotePlan, corrupted_text: str, target: Target, *,
               direction: Direction = "denoising", scans: Sequence[ScanName] = ("residual", "heads"),
               position: int | None = None, batch_size: int | None = None,
               memory_limit: int = DEFAULT_INFERENCE_MEMORY, progress: Progress | None = None) -> PatchingResult:
    """Patch the pair's activations at every site of the chosen scans and measure the target.

    Args:
        plan: the note (clean); its options (knocked-out heads, precision) apply to every run.
        corrupted_text: the edited copy.
        direction: "denoising" (clean activations into the corrupted run) or "noising" (the reverse).
        scans: names from :data:`SCANS`.
        position: the clean window position the "heads_at" scan patches (default: the first position the
            edit changed).
        batch_size: most patched runs per batch (None: as many as the memory bound allows, up to
            :data:`MAX_BATCH_ROWS`).

    Raises:
        TargetError: a pair that cannot be patched (see :func:`make_pair`), an edit that leaves the target
            unchanged, a position outside the window or without a partner.
        ResourceLimitError: one run would not fit in ``memory_limit``.
    """
    started = time.perf_counter()
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising', not {direction!r}")
    unknown = set(scans) - set(SCANS)
    if unknown:
        raise ValueError(f"unknown scans {sorted(unknown)}; choose from {SCANS}")
    options = plan.options
    pair = make_pair(loaded, plan, corrupted_text, target)
    report(progress, 0.0, "Running both versions")
    clean = record_run(loaded, pair.clean_ids, target, pair.clean_row, options)
    corrupted = record_run(loaded, pair.corrupted_ids, pair.corrupted_target, pair.corrupted_row, options)
    effect = PairEffect(pair=pair, target=target, clean_score=clean.score, corrupted_score=corrupted.score,
                        knocked_out=options.knocked_out)
    if abs(effect.difference) <= 1e-6 * max(1.0, abs(clean.score)):
        raise TargetError(f"The edit leaves the {target.score_name} of '{target.label}' unchanged "
                          f"({clean.score:.4f} in both versions): there is nothing for patching to explain. Choose "
                          f"another edit or another target.")
    if "heads_at" in scans:
        position = first_changed_position(pair) if position is None else int(position)
        if not 0 <= position < pair.positions:
            raise TargetError(f"Position {position} is outside the window of {pair.positions} positions.")
        if pair.partner[position] < 0:
            raise TargetError(f"'{pair.clean_tokens[position]}' (position {position}) has no partner in the edited "
                              f"copy, so nothing can be patched there. Choose a position both versions share.")
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    base_target = pair.corrupted_target if direction == "denoising" else target
    layers, heads = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    planned = [(name, *scan_runs(name, pair, direction, layers, heads, options.knocked_out,
                                  -1 if position is None else position)) for name in dict.fromkeys(scans)]
    every_run = [run for _name, runs, _cells in planned for run in runs]
    per_batch = fit_batch(loaded, base.ids.size, min(batch_size or MAX_BATCH_ROWS, MAX_BATCH_ROWS), memory_limit,
                          backward=False, what="Activation patching")
    scores = patched_scores(loaded, base, source, every_run, base_target, options=options, batch_size=per_batch,
                            memory_limit=memory_limit, progress=progress)
    results, offset = [], 0
    for name, runs, cells in planned:
        grid = np.where(cells >= 0, scores[offset + np.maximum(cells, 0)], np.nan)
        results.append(PatchScan(name=name, scores=grid, share=(grid - base.score) / (source.score - base.score)))
        offset += len(runs)
    report(progress, 1.0, "Done")
    return PatchingResult(effect=effect, direction=direction, scans=tuple(results),
                          position=-1 if position is None else int(position), patched_runs=len(every_run),
                          batch_rows=per_batch, seconds=time.perf_counter() - started)


def first_changed_position(pair: MinimalPair) -> int:
    """A clean position with a partner where the edit shows: the first changed piece that has a partner (a flipped
    cue), else the first partnered position after the edit (a removed cue's next word), else [CLS] (0)."""
    changed = [p for p in range(1, pair.positions - 1)
               if pair.partner[p] < 0 or pair.clean_ids[p] != pair.corrupted_ids[pair.partner[p]]]
    partnered = [p for p in changed if pair.partner[p] >= 0]
    if partnered:
        return partnered[0]
    after = [p for p in range(changed[0] if changed else 1, pair.positions - 1) if pair.partner[p] >= 0]
    return after[0] if after else 0


def top_heads(result: PatchingResult, k: int, scan: ScanName = "heads") -> list[tuple[int, int, float]]:
    """The ``k`` heads whose patch moved the most of the difference: (layer, head, share), largest first."""
    found = result.scan(scan)
    if found is None:
        return []
    share = np.nan_to_num(found.share, nan=-np.inf)
    order = np.argsort(-share, axis=None, kind="stable")[:k]
    layers, heads = np.unravel_index(order, share.shape)
    return [(int(a), int(b), float(found.share[a, b])) for a, b in zip(layers, heads) if np.isfinite(found.share[a, b])]


def one_run_at_a_time(loaded: LoadedModel, base: StoredRun, source: StoredRun, runs: Sequence[PatchRun],
                      target: Target, *, options: RunOptions = RunOptions()) -> np.ndarray:
    """float64 [run]: the plain reference for :func:`patched_scores`: one whole forward pass per run, every patch
    (the residual stream's too) written by the hooks of :func:`cbert_core.model.hooks.patch_activations`.

    Slow on purpose; the benchmark and the tests check the batched scans against it.
    """
    scores = np.zeros(len(runs))
    ids = torch.tensor(base.ids, dtype=torch.long, device=loaded.device)[None]
    with torch.inference_mode(), knockout(loaded.anatomy, options.knocked_out), autocast(options.precision, loaded.device):
        for index, run in enumerate(runs):
            patches = [_activation_patch(loaded, run, 0, source)] if run.base_positions.size else []
            with patch_activations(loaded.anatomy, patches):
                states = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)))  # [1, t, d]
            scores[index] = float(read_target_score(loaded, target, states[:, base.row:base.row + 1]
                                                    if base.row >= 0 else states)[0])
    return scores
