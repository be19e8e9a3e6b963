"""The "predictions", "zero-shot" and "attributions" columns of the batch command line.

What a prediction means depends on the checkpoint's head:

* masked-LM: the note's pseudo-log-likelihood (:func:`cbert_core.analyses.predict.pseudo_log_likelihood`;
  ``pll_stride`` pieces apart are masked together, 0 = exact and slow);
* sequence classification: the predicted label and the label probabilities;
* token classification: entity spans (characters, label, score; no text);
* bare encoder: zero-shot embedding similarity to ``--labels`` descriptions.

"zero-shot" asks for that similarity with any model (its encoder's last layer). A classifier's
predictions and zero-shot similarity are read from the note's one pass
(:class:`cbert_core.corpus.note_pass.NotePass`), which the embedding shares; the description
vectors are computed once per run, not once per note.

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
from cbert_core.analyses.labelling import (
    ClassProbabilities,
    TokenLabels,
    labels_from_windows,
    probabilities_from_windows,
    span_probabilities,
)
from cbert_core.analyses.predict import pseudo_log_likelihood
from cbert_core.analyses.similarity import (
    REFERENCE_DESCRIPTIONS,
    SimilarityResult,
    description_matrix,
    similarity_result,
)
from cbert_core.analyses.targets import Target, class_target, similarity_target
from cbert_core.corpus.note_pass import NotePass
from cbert_core.errors import TargetError
from cbert_core.model.heads import head_adapter
from cbert_core.model.loading import HeadKind, LoadedModel
from cbert_core.run.plan import NotePlan
from cbert_core.text.words import whitespace_words

Column = Callable[[NotePlan, NotePass], object]
Columns = dict[str, Column]


class _NoteResults:
    """Per-note results several columns share, built from the note's one pass."""

    def __init__(self, loaded: LoadedModel, settings: Any) -> None:
        self.loaded, self.settings = loaded, settings
        self.descriptions = tuple(str(label).strip() for label in settings.labels)
        self._targets: dict[bool, np.ndarray] = {}  # casing -> [description + reference, hidden]

    def classified(self, plan: NotePlan, note_pass: NotePass) -> ClassProbabilities:
        return probabilities_from_windows(self.loaded, plan, note_pass.window_logits)

    def tagged(self, plan: NotePlan, note_pass: NotePass) -> TokenLabels:
        return labels_from_windows(self.loaded, plan, note_pass.window_logits)

    def zero_shot(self, plan: NotePlan, note_pass: NotePass) -> SimilarityResult:
        targets = self._targets.get(plan.lowercase)
        if targets is None:  # once per run: every note is compared with the same descriptions
            targets = self._targets[plan.lowercase] = description_matrix(
                self.loaded, [*self.descriptions, *REFERENCE_DESCRIPTIONS], lowercase=plan.lowercase)
        return similarity_result(self.loaded, plan, note_pass.text_vector[None], targets,
                                 descriptions=self.descriptions, temperature=self.settings.temperature)


def _likelihood_columns(shared: _NoteResults) -> Columns:
    def likelihood(plan: NotePlan, _note_pass: NotePass) -> dict[str, float]:
        result = pseudo_log_likelihood(shared.loaded, plan, batch_size=max(8, shared.settings.batch_size),
                                       stride=shared.settings.pll_stride)
        scored = int(np.isfinite(result.token_logprobs).sum())
        return {"total": result.total, "mean": result.total / max(scored, 1), "scored": scored}

    return {"pseudo_log_likelihood": likelihood}


def _class_columns(shared: _NoteResults) -> Columns:
    return {"predicted_label": lambda plan, note_pass: _best(shared.classified(plan, note_pass)),
            "label_probs": lambda plan, note_pass: shared.classified(plan, note_pass).probs.astype(np.float32)}


def _entity_columns(shared: _NoteResults) -> Columns:
    def entities(plan: NotePlan, note_pass: NotePass) -> list[dict[str, object]]:
        return [{"label": e.label, "start": int(e.start), "end": int(e.end), "score": float(e.score)}
                for e in shared.tagged(plan, note_pass).entities]

    columns: Columns = {"entities": entities}
    if shared.settings.word_probs:
        columns["word_probs"] = lambda plan, note_pass: span_probabilities(
            shared.tagged(plan, note_pass), whitespace_words(plan.text))
    return columns


def _zero_shot_columns(shared: _NoteResults) -> Columns:
    return {"zero_shot_label": lambda plan, note_pass: _best_description(shared.zero_shot(plan, note_pass)),
            "zero_shot_probs": lambda plan, note_pass: shared.zero_shot(plan, note_pass).note_probs.astype(np.float32),
            "zero_shot_similarity": lambda plan, note_pass: shared.zero_shot(
                plan, note_pass).note_similarity.astype(np.float32)}


# What "predictions" means for each head kind.
PREDICTION_COLUMNS: dict[HeadKind, Callable[[_NoteResults], Columns]] = {
    "masked-lm": _likelihood_columns, "sequence-classification": _class_columns,
    "token-classification": _entity_columns, "encoder": _zero_shot_columns,
}
# The note-level prediction an attribution explains, for the head kinds that make one.
NOTE_LEVEL_TARGETS: dict[HeadKind, Callable[[_NoteResults, NotePlan, NotePass], Target]] = {
    "sequence-classification": lambda shared, plan, note_pass: class_target(
        shared.loaded, _best(shared.classified(plan, note_pass))),
    "encoder": lambda shared, plan, note_pass: similarity_target(
        shared.loaded, _best_description(shared.zero_shot(plan, note_pass)), lowercase=plan.lowercase),
}


class BatchColumns:
    """The per-note columns of "predictions", "zero-shot" and "attributions", and what they need of the one pass.

    Raises:
        TargetError: an analysis that does not fit the checkpoint (e.g. an encoder without ``labels``).
    """

    def __init__(self, loaded: LoadedModel, settings: Any) -> None:
        kind = loaded.info.head_kind
        wanted = set(settings.analyses)
        zero_shot = "zero-shot" in wanted or (kind == "encoder" and wanted & {"predictions", "attributions"})
        if zero_shot and not settings.labels:
            what = "is a bare encoder with no prediction head: give" if kind == "encoder" else "needs"
            raise TargetError(f"{loaded.info.name} {what} label descriptions (--labels 'pneumonia present' "
                              f"'no pneumonia') for zero-shot similarity, or drop "
                              f"'{'zero-shot' if kind != 'encoder' else 'predictions'}'/'attributions'.")
        if zero_shot and any(not str(label).strip() for label in settings.labels):
            raise TargetError("Every label description needs some text (for example 'pneumonia present').")
        shared = _NoteResults(loaded, settings)
        self.columns: Columns = dict(PREDICTION_COLUMNS[kind](shared)) if "predictions" in wanted else {}
        if "zero-shot" in wanted:
            self.columns.update(_zero_shot_columns(shared))
        self.needs_text_vectors = bool(zero_shot)
        self.needs_head = bool(wanted & {"predictions", "attributions"}) and \
            head_adapter(kind).one_pass_predictions
        if "attributions" in wanted:
            if kind not in NOTE_LEVEL_TARGETS:
                raise TargetError(f"Attributions explain a note-level prediction, which a {kind} model does not "
                                  f"make. Use a sequence classifier, or an encoder with --labels; drop "
                                  f"'attributions' here.")
            target_for = NOTE_LEVEL_TARGETS[kind]

            def explained(plan: NotePlan, note_pass: NotePass) -> dict[str, object]:
                target = target_for(shared, plan, note_pass)
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

            self.columns["attribution"] = explained


def _best(result: Any) -> str:
    return str(result.labels[int(np.argmax(result.probs))])


def _best_description(result: Any) -> str:
    return str(result.descriptions[int(np.argmax(result.note_probs))])
