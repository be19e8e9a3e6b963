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

from cbert_core.errors import TargetError

UNBOUNDED = 2**62  # notes were already bounded by the command line's --max-chars


def extra_columns(loaded: Any, settings: Any, wanted: list[str]) -> dict[str, Callable[[str], object]]:
    """Per-note functions (text -> value) keyed by output column name.

    Raises:
        TargetError: the analysis does not fit the checkpoint (e.g. an encoder without ``labels``).
    """
    from cbert_core.analyses import labelling, predict, similarity

    kind = loaded.info.head_kind
    lowercase = settings.lowercase
    columns: dict[str, Callable[[str], object]] = {}
    if kind == "encoder" and not settings.labels:
        raise TargetError(f"{loaded.info.name} is a bare encoder with no prediction head: give label descriptions "
                          f"(--labels 'pneumonia present' 'no pneumonia') for zero-shot similarity, or drop "
                          f"'predictions'/'attributions'.")

    @_last_only
    def zero_shot(text: str) -> Any:
        return similarity.embedding_similarity(loaded, text, list(settings.labels), per_sentence=False,
                                               lowercase=lowercase, max_chars=UNBOUNDED)

    @_last_only
    def classified(text: str) -> Any:
        return labelling.classify(loaded, text, lowercase=lowercase, max_chars=UNBOUNDED)

    if "predictions" in wanted:
        if kind == "masked-lm":
            def likelihood(text: str) -> dict[str, float]:
                result = predict.pseudo_log_likelihood(loaded, text, batch_size=max(8, settings.batch_size),
                                                       stride=settings.pll_stride, lowercase=lowercase,
                                                       max_chars=UNBOUNDED)
                scored = int(np.isfinite(result.token_logprobs).sum())
                return {"total": result.total, "mean": result.total / max(scored, 1), "scored": scored}

            columns["pseudo_log_likelihood"] = likelihood
        elif kind == "sequence-classification":
            columns["predicted_label"] = lambda text: _best(classified(text))
            columns["label_probs"] = lambda text: classified(text).probs.astype(np.float32)
        elif kind == "token-classification":
            def entities(text: str) -> list[dict[str, object]]:
                found = labelling.token_labels(loaded, text, lowercase=lowercase, max_chars=UNBOUNDED).entities
                return [{"label": e.label, "start": int(e.start), "end": int(e.end), "score": float(e.score)}
                        for e in found]

            columns["entities"] = entities
        else:
            columns["zero_shot_label"] = lambda text: _best_description(zero_shot(text))
            columns["zero_shot_probs"] = lambda text: zero_shot(text).note_probs.astype(np.float32)
            columns["zero_shot_similarity"] = lambda text: zero_shot(text).note_similarity.astype(np.float32)
    if "attributions" in wanted:
        from cbert_core.analyses import attribution, targets

        if kind == "sequence-classification":
            def target_for(text: str) -> Any:
                return targets.class_target(loaded, _best(classified(text)))
        elif kind == "encoder":
            def target_for(text: str) -> Any:
                return targets.similarity_target(loaded, _best_description(zero_shot(text)), lowercase=lowercase)
        else:
            raise TargetError(f"Attributions explain a note-level prediction, which a {kind} model does not make. "
                              f"Use a sequence classifier, or an encoder with --labels; drop 'attributions' here.")

        def explained(text: str) -> dict[str, object]:
            target = target_for(text)
            result = attribution.attribute(loaded, text, target, method=settings.attribution_method,
                                           steps=settings.attribution_steps, window=0, lowercase=lowercase,
                                           max_chars=UNBOUNDED)
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


def _last_only(compute: Callable[[str], Any]) -> Callable[[str], Any]:
    """Remember the result for the last text, so several columns of one note share one run."""
    last: dict[str, Any] = {}

    def cached(text: str) -> Any:
        if last.get("text") is not text:
            last["text"], last["value"] = text, compute(text)
        return last["value"]

    return cached


def _best(result: Any) -> str:
    return str(result.labels[int(np.argmax(result.probs))])


def _best_description(result: Any) -> str:
    return str(result.descriptions[int(np.argmax(result.note_probs))])
