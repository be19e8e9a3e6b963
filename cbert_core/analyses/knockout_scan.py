"""Head importance: how much a target changes when each attention head is knocked out.

:func:`head_importance` knocks out every (layer, head) in turn, exactly and in
batches: each batch row gates a different head with the lean forward pass of
:mod:`cbert_core.run.forward`, reusing the intact run below the knocked-out layer.
The target is a :class:`cbert_core.analyses.targets.Target`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.analyses.targets import Target, read_target_score, resolve_target
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import (
    DEFAULT_INFERENCE_MEMORY,
    attention_context,
    embed,
    finish_layer,
    fit_batch,
    gate_heads,
    run_encoder,
    word_vectors,
)
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.text.windows import Window


@dataclass(frozen=True, kw_only=True)
class HeadImportance:
    """How much the target changes when each head is knocked out (one head at a time)."""

    target: Target
    model_key: str
    text: str
    knocked_out: HeadSet  # heads out in every run, the intact one included
    window: Window
    intact_score: float
    scores: np.ndarray  # float32 [layer, head]: knocked-out score - intact score; NaN for heads already out
    seconds: float

    def __post_init__(self) -> None:
        if self.scores.ndim != 2:
            raise ValueError("HeadImportance.scores must be [layer, head]")
        frozen_array(self.scores)


def planned_passes(layers: int, heads: int, positions: int) -> Passes:
    """The passes :func:`head_importance` runs on a window of ``positions`` (about half of one per head)."""
    return Passes(forward=((positions, layers * heads // 2 + 1),))


def head_importance(loaded: LoadedModel, plan: NotePlan, target: Target, *, batch_size: int | None = None,
                    memory_limit: int = DEFAULT_INFERENCE_MEMORY, window: int | None = None,
                    progress: Progress | None = None) -> HeadImportance:
    """Knock out each of the layer x head heads in turn and record the target's change.

    Exact and batched: every batch row gates a different head (a [row, head] multiplier on
    the context vector before the output projection, as :func:`cbert_core.model.hooks.knockout`
    does for the whole batch). Rows that knock out a head of layer L reuse the intact run's
    layers below L and its attention in L, so the work is about half of layer x head full
    passes. Heads the plan's options knock out stay out in every run.

    Raises:
        TargetError, WrongHeadError, ResourceLimitError.
    """
    started = time.perf_counter()
    knocked_out = plan.options.knocked_out
    resolved = resolve_target(loaded, plan, target, window)
    layers, heads_per_layer = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    rows_per_batch = fit_batch(loaded, resolved.ids.size, batch_size or heads_per_layer, memory_limit,
                               backward=False, what="Head importance")
    scores = np.zeros((layers, heads_per_layer), np.float32)
    positional = target.kind != "similarity"
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as base_heads:
        device = loaded.device
        ids = torch.from_numpy(resolved.ids)[None].to(device)
        inputs: list[torch.Tensor] = []
        rows = torch.tensor([[max(resolved.position, 0)]], device=device) if positional else None
        final = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)), rows=rows, layer_inputs=inputs)
        intact = float(read_target_score(loaded, target, final)[0])
        total, done = layers * heads_per_layer, 0
        for layer in range(layers):
            hidden = inputs[layer]  # [1, t, d]
            last = layer == layers - 1
            queries = hidden[:, rows[0]] if positional and last else hidden
            context = attention_context(loaded, layer, hidden, queries)  # [1, q, h * dh]
            for first in range(0, heads_per_layer, rows_per_batch):
                chosen = list(range(first, min(first + rows_per_batch, heads_per_layer)))
                gate = torch.ones(len(chosen), heads_per_layer, device=device)
                gate[torch.arange(len(chosen), device=device), torch.tensor(chosen, device=device)] = 0
                gated = gate_heads(loaded, context.expand(len(chosen), -1, -1), gate)
                out = finish_layer(loaded, layer, gated, queries.expand(len(chosen), -1, -1))
                if not last:
                    out = run_encoder(loaded, out, start=layer + 1,
                                      rows=rows.expand(len(chosen), -1) if positional else None)
                scores[layer, chosen] = (read_target_score(loaded, target, out) - intact).cpu().numpy()
                done += len(chosen)
                report(progress, done / total, f"Head importance: {done} of {total} heads")
    for layer, head in base_heads:
        scores[layer, head] = np.nan
    return HeadImportance(target=target, model_key=loaded.info.key, text=plan.text, knocked_out=base_heads,
                          window=resolved.window, intact_score=intact, scores=scores,
                          seconds=time.perf_counter() - started)
