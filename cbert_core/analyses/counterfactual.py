"""Counterfactual edits: replace a span of the note and compare the two predictions.

:func:`counterfactual` predicts a :class:`cbert_core.analyses.targets.Target` on the
original and the edited note, aligns their words and, when asked, attributes
both versions with :func:`cbert_core.analyses.attribution.attribute` and reports the
change of each word's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.analyses.attribution import Attribution, Method, attribute
from cbert_core.analyses.predict import DEFAULT_TOP_K
from cbert_core.analyses.targets import Target, read_target_score, resolve_target
from cbert_core.errors import TargetError
from cbert_core.model.heads import head_logits
from cbert_core.model.hooks import knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, part, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import embed, run_encoder, word_vectors
from cbert_core.run.plan import NotePlan, plan_note


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The target and the distribution it lives in, for one version of the note."""

    text: str
    score: float  # the target scalar (log-probability or cosine)
    names: tuple[str, ...]  # [c] tokens, labels or the description
    probs: np.ndarray  # float32 [c]
    attribution: Attribution | None

    def __post_init__(self) -> None:
        if self.probs.shape != (len(self.names),):
            raise ValueError("Outcome.probs must be [c]")
        frozen_array(self.probs)


@dataclass(frozen=True, kw_only=True)
class Counterfactual:
    """A word span replaced in place: both predictions, their difference, aligned words."""

    target: Target
    edit: tuple[int, int]  # characters replaced in the original
    replacement: str
    edited_span: tuple[int, int]  # the replacement's characters in the edited text
    original: Outcome
    edited: Outcome
    names: tuple[str, ...]  # [c] union of both outcomes' names
    original_probs: np.ndarray  # float32 [c]
    edited_probs: np.ndarray  # float32 [c]
    prob_change: np.ndarray  # float32 [c]: edited - original
    score_change: float
    word_alignment: np.ndarray  # int32 [original word]: the same word in the edited note, -1 if edited away
    word_score_change: np.ndarray | None  # float32 [original word]: attribution change (NaN unaligned/outside)

    def __post_init__(self) -> None:
        c = len(self.names)
        if not (self.original_probs.shape == self.edited_probs.shape == self.prob_change.shape == (c,)):
            raise ValueError("Counterfactual probabilities must be [c]")
        for array in (self.original_probs, self.edited_probs, self.prob_change, self.word_alignment,
                      self.word_score_change):
            if array is not None:
                frozen_array(array)


def _outcome(loaded: LoadedModel, plan: NotePlan, target: Target, *, window: int | None,
             top_k: int) -> tuple[Outcome, np.ndarray]:
    """The target on one version of the note, and the full distribution it comes from.

    Returns:
        (outcome, float32 [vocab or labels] full distribution; [1] cosine for similarity).
    """
    text = plan.text
    resolved = resolve_target(loaded, plan, target, window)
    with torch.inference_mode(), knockout(loaded.anatomy, plan.options.knocked_out):
        ids = torch.from_numpy(resolved.ids)[None].to(loaded.device)
        hidden = embed(loaded, word_vectors(loaded, ids))
        if target.kind == "similarity":
            score = float(read_target_score(loaded, target, run_encoder(loaded, hidden))[0])
            single = np.array([score], np.float32)
            return Outcome(text=text, score=score, names=(target.label,), probs=single, attribution=None), single
        logits = head_logits(loaded, run_encoder(loaded, hidden, rows=torch.tensor([[max(resolved.position, 0)]], device=ids.device)))
        probs = torch.softmax((logits if target.kind == "class" else logits[:, 0])[0].float(), dim=-1).cpu().numpy()
    index = target.token_id if target.kind == "masked-token" else target.class_index
    score = float(np.log(max(float(probs[index]), 1e-45)))
    if target.kind == "masked-token":
        chosen = list(dict.fromkeys([index, *np.argsort(-probs)[:top_k].tolist()]))
        names = tuple(loaded.tokenizer(plan.lowercase).convert_ids_to_tokens(chosen))
        return Outcome(text=text, score=score, names=names, probs=probs[chosen].astype(np.float32),
                       attribution=None), probs.astype(np.float32)
    return Outcome(text=text, score=score, names=loaded.info.labels, probs=probs.astype(np.float32),
                   attribution=None), probs.astype(np.float32)


def apply_edit(text: str, char_start: int, char_end: int, replacement: str) -> str:
    """``text`` with characters [char_start, char_end) replaced by ``replacement``.

    Raises:
        TargetError: an empty span, or one outside the note.
    """
    if not (0 <= char_start < char_end <= len(text)):
        raise TargetError(f"The edit must replace a non-empty span inside the note (characters 0 to {len(text)}); "
                          f"characters {char_start} to {char_end} are not. Select the words to replace.")
    return text[:char_start] + replacement + text[char_end:]


def counterfactual(loaded: LoadedModel, plan: NotePlan, char_start: int, char_end: int, replacement: str,
                   target: Target, *, method: Method | None = None, top_k: int = DEFAULT_TOP_K,
                   window: int | None = None, progress: Progress | None = None,
                   **attribution_settings: object) -> Counterfactual:
    """Replace characters [char_start, char_end) of the planned note by ``replacement`` and compare the predictions.

    The edited note is planned with the same options (casing, overlap, precision, knocked-out heads).

    Args:
        target: what to compare; a token-class target's character is moved with the edit.
        method: also attribute both versions with this method (None: predictions only).
        attribution_settings: passed to :func:`cbert_core.analyses.attribution.attribute` (steps, baseline, batch_size, ...).

    Raises:
        TargetError: an empty or out-of-range span, or an edit that replaces the target itself.
    """
    text = plan.text
    edited_text = apply_edit(text, char_start, char_end, replacement)
    shift = len(replacement) - (char_end - char_start)
    edited_target = target
    if target.kind == "token-class":
        if char_start <= target.char_index < char_end:
            raise TargetError("The edit replaces the word being explained. Choose another word to edit or explain.")
        if target.char_index >= char_end:
            edited_target = Target(kind="token-class", label=target.label, class_index=target.class_index,
                                   char_index=target.char_index + shift)
    if target.kind == "masked-token":
        mask = loaded.info.mask_token or "[MASK]"
        if mask in text[char_start:char_end] or mask in replacement:
            raise TargetError(f"The edit must not add or remove {mask} tokens; edit other words.")
    edited_plan = plan_note(loaded, edited_text, plan.options)
    original, original_full = _outcome(loaded, plan, target, window=window, top_k=top_k)
    report(progress, 0.05, "Predicted the original note")
    edited, edited_full = _outcome(loaded, edited_plan, edited_target, window=window, top_k=top_k)
    report(progress, 0.1, "Predicted the edited note")
    names = tuple(dict.fromkeys([*original.names, *edited.names]))
    if target.kind == "masked-token":
        ids = loaded.tokenizer(plan.lowercase).convert_tokens_to_ids(list(names))
        original_probs, edited_probs = original_full[ids], edited_full[ids]
    else:
        original_probs, edited_probs = original_full, edited_full
    original_attribution = edited_attribution = None
    if method is not None:
        original_attribution = attribute(loaded, plan, target, method=method, window=window,
                                         progress=part(progress, 0.1, 0.55), **attribution_settings)
        edited_attribution = attribute(loaded, edited_plan, edited_target, method=method, window=window,
                                       progress=part(progress, 0.55, 1.0), **attribution_settings)
    alignment = _align_words(plan, edited_plan, char_start, char_end, shift)
    score_change = None
    if original_attribution is not None and edited_attribution is not None:
        score_change = _word_score_change(original_attribution, edited_attribution, alignment)
    report(progress, 1.0, "Done")
    return Counterfactual(
        target=target, edit=(char_start, char_end), replacement=replacement,
        edited_span=(char_start, char_start + len(replacement)),
        original=Outcome(text=text, score=original.score, names=original.names, probs=original.probs.copy(),
                         attribution=original_attribution),
        edited=Outcome(text=edited_text, score=edited.score, names=edited.names, probs=edited.probs.copy(),
                       attribution=edited_attribution),
        names=names, original_probs=original_probs, edited_probs=edited_probs,
        prob_change=(edited_probs - original_probs).astype(np.float32),
        score_change=edited.score - original.score, word_alignment=alignment, word_score_change=score_change,
    )


def _align_words(original: NotePlan, edited: NotePlan, start: int, end: int, shift: int) -> np.ndarray:
    """int32 [original word]: index of the same word (same characters, moved by the edit) or -1."""
    lookup = {(int(a), int(b)): index for index, (a, b) in enumerate(edited.tokens.word_spans)}
    alignment = np.full(len(original.tokens.word_spans), -1, np.int32)
    for index, (a, b) in enumerate(original.tokens.word_spans):
        if b <= start:
            alignment[index] = lookup.get((int(a), int(b)), -1)
        elif a >= end:
            alignment[index] = lookup.get((int(a) + shift, int(b) + shift), -1)
    return alignment


def _word_score_change(original: Attribution, edited: Attribution, alignment: np.ndarray) -> np.ndarray:
    change = np.full(alignment.size, np.nan, np.float32)
    edited_index = {int(w): i for i, w in enumerate(edited.words)}
    for i, word in enumerate(original.words):
        j = edited_index.get(int(alignment[word]), -1) if alignment[word] >= 0 else -1
        if j >= 0:
            change[word] = edited.word_scores[j] - original.word_scores[i]
    return change
