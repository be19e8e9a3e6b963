"""What an explanation explains: a :class:`Target`, one scalar of the model's output.

A target names the scalar in terms of the note, not of token positions: a masked
token's log-probability, a class's log-probability, an entity label's
log-probability at a word, or the cosine similarity to a label description.
Build one with :func:`masked_token_target`, :func:`class_target`,
:func:`token_class_target` or :func:`similarity_target`.

The private helpers are shared by the modules that explain a target
(:mod:`cbert_core.analyses.attribution`, :mod:`cbert_core.analyses.knockout_scan`,
:mod:`cbert_core.analyses.counterfactual`, :mod:`cbert_core.analyses.faithfulness`):
``resolve_target`` places a target in one window of a plan note (a long note's
note-level target needs ``window=``, else ResourceLimitError), and ``target_scores``,
``target_scores_for_ids`` and ``read_target_score`` read the target scalar from word
vectors, token ids or last-layer states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from cbert_core.analyses.similarity import description_embedding
from cbert_core.errors import ResourceLimitError, TargetError
from cbert_core.model.heads import head_logits
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import float32
from cbert_core.records import frozen_array
from cbert_core.run.forward import embed, require_head, run_encoder, vocabulary_id, word_vectors
from cbert_core.run.plan import NotePlan
from cbert_core.text.tokens import mask_positions
from cbert_core.text.windows import Window

TargetKind = Literal["masked-token", "class", "token-class", "similarity"]
TARGET_KINDS: tuple[TargetKind, ...] = ("masked-token", "class", "token-class", "similarity")
Taps = Sequence[Callable[[torch.Tensor], torch.Tensor]]  # one per layer, applied to its output


@dataclass(frozen=True, kw_only=True)
class Target:
    """One scalar of the model's output, named in terms of the note (not of token positions).

    masked-token: log p(``token_id``) at the ``mask_index``-th [MASK] of the note.
    class: log p(``class_index``) of a sequence classifier.
    token-class: log p(``class_index``) at the first piece of the word holding ``char_index``.
    similarity: cosine similarity between the note's mean-pooled embedding and ``reference``.
    """

    kind: TargetKind
    label: str  # what the user sees: the word, class label or description
    token_id: int = -1
    mask_index: int = 0
    char_index: int = -1
    class_index: int = -1
    reference: np.ndarray | None = field(default=None, compare=False)  # float32 [hidden], unit length

    def __post_init__(self) -> None:
        if self.kind == "masked-token" and (self.token_id < 0 or self.mask_index < 0):
            raise ValueError("a masked-token target needs token_id and mask_index")
        if self.kind in {"class", "token-class"} and self.class_index < 0:
            raise ValueError("a class target needs class_index")
        if self.kind == "token-class" and self.char_index < 0:
            raise ValueError("a token-class target needs char_index")
        if self.kind == "similarity":
            if self.reference is None or self.reference.ndim != 1:
                raise ValueError("a similarity target needs a [hidden] reference vector")
            frozen_array(self.reference)

    @property
    def score_name(self) -> str:
        return "cosine similarity" if self.kind == "similarity" else "log-probability"

    @property
    def positional(self) -> bool:
        """True when the target lives at one position (so a long note has an obvious window)."""
        return self.kind in {"masked-token", "token-class"}


def masked_token_target(loaded: LoadedModel, word: str, *, mask_index: int = 0,
                        lowercase: bool | None = None) -> Target:
    """Target: the log-probability of ``word`` at the ``mask_index``-th [MASK] (0 = first).

    Raises:
        WrongHeadError: no masked-LM head. TargetError: ``word`` is not one vocabulary piece.
    """
    require_head(loaded, "masked-lm", "Explaining a masked word")
    token_id = vocabulary_id(loaded, word, lowercase=lowercase)
    shown = loaded.tokenizer(loaded.resolve_lowercase(lowercase)).convert_ids_to_tokens(token_id)
    return Target(kind="masked-token", label=str(shown), token_id=token_id, mask_index=int(mask_index))


def _class_index(loaded: LoadedModel, label: str | int) -> int:
    labels = loaded.info.labels
    if isinstance(label, int | np.integer):
        if not 0 <= int(label) < len(labels):
            raise TargetError(f"Class {label} does not exist; the model has {len(labels)} classes.")
        return int(label)
    if label not in labels:
        raise TargetError(f"'{label}' is not one of the model's labels ({', '.join(labels)}).")
    return labels.index(label)


def class_target(loaded: LoadedModel, label: str | int) -> Target:
    """Target: the log-probability of a sequence classifier's class (name or index)."""
    require_head(loaded, "sequence-classification", "Explaining a class")
    index = _class_index(loaded, label)
    return Target(kind="class", label=loaded.info.labels[index], class_index=index)


def token_class_target(loaded: LoadedModel, char_index: int, label: str | int) -> Target:
    """Target: the log-probability of ``label`` at the word holding character ``char_index``."""
    require_head(loaded, "token-classification", "Explaining an entity label")
    index = _class_index(loaded, label)
    return Target(kind="token-class", label=loaded.info.labels[index], class_index=index, char_index=int(char_index))


def similarity_target(loaded: LoadedModel, description: str, *, lowercase: bool | None = None) -> Target:
    """Target: cosine similarity between the note's mean-pooled embedding and ``description``'s."""
    reference = description_embedding(loaded, description, lowercase=lowercase)
    return Target(kind="similarity", label=description.strip(), reference=reference)


@dataclass(frozen=True, kw_only=True)
class ResolvedTarget:
    """A target placed in one window of a plan note."""

    window: Window
    ids: np.ndarray  # int64 [t]: the window's input
    position: int  # local row the score reads (0 for class; -1 for similarity)
    fixed: np.ndarray  # bool [t]: never perturbed ([CLS], [SEP], the target [MASK])


def resolve_target(loaded: LoadedModel, plan: NotePlan, target: Target, window: int | None) -> ResolvedTarget:
    note = plan.tokens
    content: int | None = None
    if target.kind == "masked-token":
        require_head(loaded, "masked-lm", "Explaining a masked word")
        masks = mask_positions(note.ids, plan.mask_id)
        mask = loaded.info.mask_token or "[MASK]"
        if masks.size == 0:
            raise TargetError(f"The note has no {mask}. Type {mask} where the word to explain goes.")
        if target.mask_index >= masks.size:
            raise TargetError(f"The note has {masks.size} {mask} tokens; mask number {target.mask_index + 1} "
                              f"does not exist.")
        content = int(masks[target.mask_index])
    elif target.kind == "token-class":
        require_head(loaded, "token-classification", "Explaining an entity label")
        holding = np.flatnonzero((note.offsets[:, 0] <= target.char_index) & (note.offsets[:, 1] > target.char_index))
        if holding.size == 0:
            raise TargetError("The chosen character is not inside a word. Click a word of the note.")
        content = int(np.flatnonzero(note.word_ids == note.word_ids[holding[0]])[0])
    elif target.kind == "class":
        require_head(loaded, "sequence-classification", "Explaining a class")
    if content is not None:
        chosen = plan.windows[int(plan.owner[content])]
    elif window is not None:
        if not 0 <= window < len(plan.windows):
            raise TargetError(f"Window {window} does not exist; the note has {len(plan.windows)} windows.")
        chosen = plan.windows[window]
    elif len(plan.windows) > 1:
        raise ResourceLimitError(
            f"The note has {len(note)} word pieces, more than the {loaded.info.max_tokens - 2} the model reads at "
            f"once, and this target depends on the whole note. Select a section or a window of the note to explain."
        )
    else:
        chosen = plan.windows[0]
    ids = plan.window_ids(chosen)
    fixed = np.zeros(ids.size, dtype=bool)
    fixed[[0, -1]] = True
    position = {"class": 0, "similarity": -1}.get(target.kind, -1)
    if content is not None:
        position = content - chosen.start + 1
        if target.kind == "masked-token":
            fixed[position] = True
    return ResolvedTarget(window=chosen, ids=ids, position=position, fixed=fixed)


def target_scores(loaded: LoadedModel, target: Target, words: torch.Tensor, positions: torch.Tensor | None = None,
                  key_mask: torch.Tensor | None = None, taps: Taps | None = None) -> torch.Tensor:
    """The target scalar for a batch of word-vector inputs.

    Args:
        words: [b, t, embedding size].
        positions: int64 [b] target row per input (ignored for similarity).
        key_mask: bool [b, t] for padded batches.
        taps: applied to each layer's output (see :func:`cbert_core.run.forward.run_encoder`).

    Returns:
        [b] log-probability (or cosine similarity).
    """
    if target.kind == "similarity":
        pooled = pooled_states(loaded, words, key_mask, taps)
        with float32():  # the cosine in float32 under bf16
            reference = torch.tensor(target.reference, dtype=torch.float32, device=pooled.device)
            return F.cosine_similarity(pooled, reference[None], dim=-1)
    hidden = embed(loaded, words)
    assert positions is not None
    states = run_encoder(loaded, hidden, rows=positions[:, None], key_mask=key_mask, taps=taps)  # [b, 1, d]
    logits = head_logits(loaded, states)
    logits = logits if target.kind == "class" else logits[:, 0]  # float32 [b, classes or vocab]
    index = target.token_id if target.kind == "masked-token" else target.class_index
    with float32():
        return logits[:, index] - torch.logsumexp(logits, dim=-1)


def pooled_states(loaded: LoadedModel, words: torch.Tensor, key_mask: torch.Tensor | None = None,
                  taps: Taps | None = None) -> torch.Tensor:
    """float32 [b, d]: the last layer mean-pooled over every position of word-vector inputs [b, t, e].

    [CLS] and [SEP] included (as sentence-transformers pools); padded positions (``key_mask`` False) left out.
    """
    states = run_encoder(loaded, embed(loaded, words), key_mask=key_mask, taps=taps).float()  # [b, t, d]
    with float32():  # pooling in float32 under bf16
        if key_mask is None:
            return states.mean(1)
        return (states * key_mask[..., None]).sum(1) / key_mask.sum(1, keepdim=True)


def target_scores_for_ids(loaded: LoadedModel, target: Target, sequences: list[np.ndarray], positions: list[int],
                    batch_size: int) -> np.ndarray:
    """float64 [n]: the target scalar for token-id sequences of any lengths (padded batches, no grad)."""
    out = np.zeros(len(sequences), np.float64)
    for first in range(0, len(sequences), batch_size):
        chunk = list(range(first, min(first + batch_size, len(sequences))))
        width = max(sequences[i].size for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        keep = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, i in enumerate(chunk):
            ids[row, :sequences[i].size] = torch.tensor(sequences[i], dtype=torch.long)
            keep[row, :sequences[i].size] = True
        rows = torch.tensor([max(positions[i], 0) for i in chunk], dtype=torch.long)
        device = loaded.device
        scores = target_scores(loaded, target, word_vectors(loaded, ids.to(device)), rows.to(device),
                               None if bool(keep.all()) else keep.to(device))
        out[chunk] = scores.double().cpu().numpy()
    return out


def read_target_score(loaded: LoadedModel, target: Target, states: torch.Tensor) -> torch.Tensor:
    """float64 [b] target scalar from last-layer states ([b, 1, d] at the target row, or [b, t, d])."""
    if target.kind == "similarity":
        reference = torch.tensor(target.reference, dtype=torch.float32, device=states.device)
        return F.cosine_similarity(states.mean(1), reference[None], dim=-1).double()
    logits = head_logits(loaded, states)
    logits = (logits if target.kind == "class" else logits[:, 0]).float()
    index = target.token_id if target.kind == "masked-token" else target.class_index
    return (logits[:, index] - torch.logsumexp(logits, dim=-1)).double()


def target_probability(target: Target, score: np.ndarray | float) -> np.ndarray | float:
    """The target's probability (exp of a log-probability); a cosine similarity stays as it is."""
    return score if target.kind == "similarity" else np.exp(score)
