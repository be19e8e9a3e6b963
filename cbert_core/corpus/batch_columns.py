"""The "predictions" and "attributions" columns of the batch command line.

What a prediction means depends on the checkpoint's head:

* masked-LM: the note's pseudo-log-likelihood (:func:`cbert_core.analyses.predict.pseudo_log_likelihood`;
  ``pll_stride`` pieces apart are masked together, 0 = exact and slow);
* sequence classification: the predicted label and the label probabilities;
* token classification: entity spans (characters, label, score; no text);
* bare encoder: zero-shot embedding similarity to ``--labels`` descriptions.

Attributions explain the note-level prediction: the predicted class of a
sequence classifier, or the best-matching description of an encoder; a
masked-LM or token-classification model has no note-level target, so asking
for attributions there is refused with a message. Each row keeps the top words
by |score| as character spans (no text) and, for integrated gradients, the
convergence delta. Long notes are attributed in their first window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cbert_core.analyses.attribution import attribute
from cbert_core.analyses.labelling import classify, token_labels
from cbert_core.analyses.predict import pseudo_log_likelihood
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.analyses.targets import Target, class_target, similarity_target
from cbert_core.errors import TargetError
from cbert_core.model.loading import HeadKind, LoadedModel
from cbert_core.run.plan import NotePlan


class _NoteResults:
    """Per-note results several columns share (computed once for the note in hand)."""

    def __init__(self, loaded: LoadedModel, settings: Any) -> None:
        self.loaded, self.settings = loaded, settings
        self.zero_shot = _last_only(lambda plan: embedding_similarity(loaded, plan, list(settings.labels),
                                                                      per_sentence=False))
        self.classified = _last_only(lambda plan: classify(loaded, plan))


Columns = dict[str, Callable[[NotePlan], object]]


def _likelihood_columns(shared: _NoteResults) -> Columns:
    def likelihood(plan: NotePlan) -> dict[str, float]:
        result = pseudo_log_likelihood(shared.loaded, plan, batch_size=max(8, shared.settings.batch_size),
                                       stride=shared.settings.pll_stride)
        scored = int(np.isfinite(result.token_logprobs).sum())
        return {"total": result.total, "mean": result.total / max(scored, 1), "scored": scored}

    return {"pseudo_log_likelihood": likelihood}


def _class_columns(shared: _NoteResults) -> Columns:
    return {"predicted_label": lambda plan: _best(shared.classified(plan)),
            "label_probs": lambda plan: shared.classified(plan).probs.astype(np.float32)}


def _entity_columns(shared: _NoteResults) -> Columns:
    def entities(plan: NotePlan) -> list[dict[str, object]]:
        return [{"label": e.label, "start": int(e.start), "end": int(e.end), "score": float(e.score)}
                for e in token_labels(shared.loaded, plan).entities]

    return {"entities": entities}


def _zero_shot_columns(shared: _NoteResults) -> Columns:
    return {"zero_shot_label": lambda plan: _best_description(shared.zero_shot(plan)),
            "zero_shot_probs": lambda plan: shared.zero_shot(plan).note_probs.astype(np.float32),
            "zero_shot_similarity": lambda plan: shared.zero_shot(plan).note_similarity.astype(np.float32)}


# What "predictions" means for each head kind.
PREDICTION_COLUMNS: dict[HeadKind, Callable[[_NoteResults], Columns]] = {
    "masked-lm": _likelihood_columns, "sequence-classification": _class_columns,
    "token-classification": _entity_columns, "encoder": _zero_shot_columns,
}
# The note-level prediction an attribution explains, for the head kinds that make one.
NOTE_LEVEL_TARGETS: dict[HeadKind, Callable[[_NoteResults, NotePlan], Target]] = {
    "sequence-classification": lambda shared, plan: class_target(shared.loaded, _best(shared.classified(plan))),
    "encoder": lambda shared, plan: similarity_target(shared.loaded, _best_description(shared.zero_shot(plan)),
                                                      lowercase=plan.lowercase),
}


def extra_columns(loaded: LoadedModel, settings: Any, wanted: list[str]) -> Columns:
    """Per-note functions (planned note -> value) keyed by output column name.

    Raises:
        TargetError: the analysis does not fit the checkpoint (e.g. an encoder without ``labels``).
    """
    kind = loaded.info.head_kind
    if kind == "encoder" and not settings.labels:
        raise TargetError(f"{loaded.info.name} is a bare encoder with no prediction head: give label descriptions "
                          f"(--labels 'pneumonia present' 'no pneumonia') for zero-shot similarity, or drop "
                          f"'predictions'/'attributions'.")
    shared = _NoteResults(loaded, settings)
    columns: Columns = dict(PREDICTION_COLUMNS[kind](shared)) if "predictions" in wanted else {}
    if "attributions" in wanted:
        if kind not in NOTE_LEVEL_TARGETS:
            raise TargetError(f"Attributions explain a note-level prediction, which a {kind} model does not make. "
                              f"Use a sequence classifier, or an encoder with --labels; drop 'attributions' here.")
        target_for = NOTE_LEVEL_TARGETS[kind]

        def explained(plan: NotePlan) -> dict[str, object]:
            target = target_for(shared, plan)
            result = attribute(loaded, plan, target, method=settings.attribution_method,
                               steps=settings.attribution_steps, window=0)
            order = np.argsort(-np.abs(result.word_scores), kind="stable")[:settings.top_words]
            return {
                "target": target.label,
                "method": result.method,
                "score": float(result.score),
                "delta": float(result.delta),
                "top_words": [{"start": int(result.word_spans[i, 0]), "end": int(result.word_spans[i, 1]),
                               "score": float(result.word_scores[i])} for i in order],
            }

        columns["attribution"] = explained
    return columns


def _last_only(compute: Callable[[NotePlan], Any]) -> Callable[[NotePlan], Any]:
    """Remember the result for the last note, so several columns of one note share one run."""
    last: dict[str, Any] = {}

    def cached(plan: NotePlan) -> Any:
        if last.get("plan") is not plan:
            last["plan"], last["value"] = plan, compute(plan)
        return last["value"]

    return cached


def _best(result: Any) -> str:
    return str(result.labels[int(np.argmax(result.probs))])


def _best_description(result: Any) -> str:
    return str(result.descriptions[int(np.argmax(result.note_probs))])
