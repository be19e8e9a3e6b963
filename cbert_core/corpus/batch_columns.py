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
from cbert_core.model.loading import LoadedModel
from cbert_core.run.plan import NotePlan


def extra_columns(loaded: LoadedModel, settings: Any, wanted: list[str]) -> dict[str, Callable[[NotePlan], object]]:
    """Per-note functions (planned note -> value) keyed by output column name.

    Raises:
        TargetError: the analysis does not fit the checkpoint (e.g. an encoder without ``labels``).
    """
    kind = loaded.info.head_kind
    columns: dict[str, Callable[[NotePlan], object]] = {}
    if kind == "encoder" and not settings.labels:
        raise TargetError(f"{loaded.info.name} is a bare encoder with no prediction head: give label descriptions "
                          f"(--labels 'pneumonia present' 'no pneumonia') for zero-shot similarity, or drop "
                          f"'predictions'/'attributions'.")

    @_last_only
    def zero_shot(plan: NotePlan) -> Any:
        return embedding_similarity(loaded, plan, list(settings.labels), per_sentence=False)

    @_last_only
    def classified(plan: NotePlan) -> Any:
        return classify(loaded, plan)

    if "predictions" in wanted:
        if kind == "masked-lm":
            def likelihood(plan: NotePlan) -> dict[str, float]:
                result = pseudo_log_likelihood(loaded, plan, batch_size=max(8, settings.batch_size),
                                               stride=settings.pll_stride)
                scored = int(np.isfinite(result.token_logprobs).sum())
                return {"total": result.total, "mean": result.total / max(scored, 1), "scored": scored}

            columns["pseudo_log_likelihood"] = likelihood
        elif kind == "sequence-classification":
            columns["predicted_label"] = lambda plan: _best(classified(plan))
            columns["label_probs"] = lambda plan: classified(plan).probs.astype(np.float32)
        elif kind == "token-classification":
            def entities(plan: NotePlan) -> list[dict[str, object]]:
                found = token_labels(loaded, plan).entities
                return [{"label": e.label, "start": int(e.start), "end": int(e.end), "score": float(e.score)}
                        for e in found]

            columns["entities"] = entities
        else:
            columns["zero_shot_label"] = lambda plan: _best_description(zero_shot(plan))
            columns["zero_shot_probs"] = lambda plan: zero_shot(plan).note_probs.astype(np.float32)
            columns["zero_shot_similarity"] = lambda plan: zero_shot(plan).note_similarity.astype(np.float32)
    if "attributions" in wanted:
        if kind == "sequence-classification":
            def target_for(plan: NotePlan) -> Target:
                return class_target(loaded, _best(classified(plan)))
        elif kind == "encoder":
            def target_for(plan: NotePlan) -> Target:
                return similarity_target(loaded, _best_description(zero_shot(plan)), lowercase=plan.lowercase)
        else:
            raise TargetError(f"Attributions explain a note-level prediction, which a {kind} model does not make. "
                              f"Use a sequence classifier, or an encoder with --labels; drop 'attributions' here.")

        def explained(plan: NotePlan) -> dict[str, object]:
            target = target_for(plan)
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
