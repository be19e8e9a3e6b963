"""One adapter per head kind: everything that differs between a masked-LM, a token classifier, a
sequence classifier and a bare encoder lives here, nowhere else in the running code.

An adapter says, for its kind of checkpoint:

* :meth:`HeadAdapter.logits`: the head applied to last-layer states (the lean forward pass);
* :meth:`HeadAdapter.trace_part` and :meth:`HeadAdapter.stitched`: what a trace keeps of the head's
  output, window by window, and how the windows' parts become one :class:`HeadOutput`;
* :meth:`HeadAdapter.output_layer`: what the exact walk's output panel shows (:class:`OutputLayer`);
* :meth:`HeadAdapter.rows` and :meth:`HeadAdapter.trace_rows`: what the output layer says, as table
  rows a page can show (one pass; a whole trace);
* :attr:`HeadAdapter.one_pass_predictions`: whether the head's predictions come out of one plain
  pass over a window (a classifier's do; a masked-LM's need masked copies, a bare encoder has none),
  so the batch engine reads them from the pass it runs anyway.

:func:`head_adapter` looks the adapter up by ``ModelInfo.head_kind``. The analyses a head
supports (fill-mask, classification, entity labels, zero-shot similarity) stay in
``cbert_core.analyses``; the pages pick their sections by the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cbert_core.errors import TargetError
from cbert_core.model.loading import HeadKind, LoadedModel
from cbert_core.model.precision import float32
from cbert_core.model.top_k import row_top_k
from cbert_core.records import frozen

Stitch = Callable[[str, int], np.ndarray]  # (name of a per-token part, its position axis) -> note-wide array


@dataclass(frozen=True, kw_only=True)
class HeadOutput:
    """What the checkpoint's head computed over a whole trace, in a form small enough to keep."""

    kind: HeadKind
    labels: tuple[str, ...] = ()
    top_ids: np.ndarray | None = None  # int32 [pos, k]: masked-LM's best tokens at every position
    top_logprobs: np.ndarray | None = None  # float32 [pos, k]: their log-probabilities
    token_logits: np.ndarray | None = None  # float32 [pos, labels]: token classification
    sequence_logits: np.ndarray | None = None  # float32 [window, labels]: sequence classification
    cls_vectors: np.ndarray | None = None  # float32 [window, hidden]: last-layer [CLS] per window

    def __post_init__(self) -> None:
        frozen(self.top_ids, self.top_logprobs, self.token_logits, self.sequence_logits, self.cls_vectors)


@dataclass(frozen=True, kw_only=True)
class OutputLayer:
    """What the checkpoint's head computed from the last layer of one pass, for the output panel."""

    kind: HeadKind
    labels: tuple[str, ...] = ()  # class names (classification heads)
    top_ids: np.ndarray | None = None  # int64 [pos, k]: masked-LM's most likely tokens at every position
    top_tokens: tuple[tuple[str, ...], ...] = ()  # [pos][k]: those tokens as text
    top_probs: np.ndarray | None = None  # float32 [pos, k]: their probabilities
    token_logits: np.ndarray | None = None  # float32 [pos, label]: token classification scores
    token_probs: np.ndarray | None = None  # float32 [pos, label]
    sequence_logits: np.ndarray | None = None  # float32 [label]: sequence classification scores
    sequence_probs: np.ndarray | None = None  # float32 [label]
    multi_label: bool = False  # True: per-label sigmoid probabilities instead of a softmax over labels
    cls_vector: np.ndarray  # float32 [hidden]: last layer at [CLS]
    mean_vector: np.ndarray  # float32 [hidden]: last layer averaged over all positions (sentence-encoder pooling)
    pooled_vector: np.ndarray | None = None  # float32 [hidden]: the checkpoint's pooler (dense + tanh on [CLS])

    def __post_init__(self) -> None:
        frozen(self.top_ids, self.top_probs, self.token_logits, self.token_probs, self.sequence_logits,
               self.sequence_probs, self.cls_vector, self.mean_vector, self.pooled_vector)

    def predictions_at(self, position: int) -> list[tuple[str, float]]:
        """Masked-LM: (token, probability) pairs at ``position``, best first; [] for other heads."""
        if self.top_probs is None:
            return []
        return [(token, float(prob)) for token, prob in zip(self.top_tokens[position], self.top_probs[position])]


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The masked-LM head as a function: last-layer-like hidden states [..., d] -> logits [..., vocab].

    Raises:
        TargetError: the checkpoint has no fill-mask head.
    """
    if hasattr(model, "cls") and hasattr(model.cls, "predictions"):
        return model.cls  # BERT: transform (dense, GELU, LayerNorm) then decoder
    if hasattr(model, "lm_head"):
        return model.lm_head  # RoBERTa family: dense, GELU, LayerNorm, decoder
    if hasattr(model, "generator_predictions") and hasattr(model, "generator_lm_head"):
        return lambda hidden: model.generator_lm_head(model.generator_predictions(hidden))  # ELECTRA generator
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return lambda hidden: model.vocab_projector(model.vocab_layer_norm(model.activation(
            model.vocab_transform(hidden))))
    raise TargetError(
        "This checkpoint has no fill-mask (masked-language-model) head, so its layers cannot be read as "
        "word predictions. Load a masked-language model such as emilyalsentzer/Bio_ClinicalBERT."
    )


def _probabilities(logits: torch.Tensor, multi_label: bool) -> np.ndarray:
    return (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).cpu().numpy()


def _common(outputs: object, last: torch.Tensor) -> dict:
    pooled = getattr(outputs, "pooler_output", None)
    return dict(cls_vector=last[0].cpu().numpy().copy(), mean_vector=last.mean(0).cpu().numpy(),
                pooled_vector=None if pooled is None else pooled[0].float().cpu().numpy().copy())


class HeadAdapter:
    """What one kind of head does; see the module notes. Subclasses override every method."""

    kind: HeadKind
    one_pass_predictions: bool = False  # see the module notes

    def logits(self, loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        """The head on last-layer states [b, m, d] (row 0 is [CLS] where the head reads it)."""
        raise NotImplementedError

    def trace_part(self, outputs: object, top_k: int) -> dict[str, np.ndarray]:
        """The head's output for one window of a trace, reduced to what the trace keeps (it may overwrite ``outputs``)."""
        raise NotImplementedError

    def stitched(self, labels: tuple[str, ...], parts: list[dict[str, np.ndarray]], stitch: Stitch) -> HeadOutput:
        """The windows' parts as one record (per-token parts via ``stitch``)."""
        raise NotImplementedError

    def output_layer(self, loaded: LoadedModel, outputs: object, last: torch.Tensor, lowercase: bool,
                     top_k: int) -> OutputLayer:
        """The output panel's record for one exact pass (``last``: [t, d] float32 last-layer states)."""
        raise NotImplementedError

    def rows(self, output: OutputLayer, tokens: tuple[str, ...], query: int,
             shown: np.ndarray) -> list[dict[str, object]]:
        """Table rows of what the output layer of one pass says: at the piece followed (``query``) or
        the pieces in view (``shown``), as the head reads them."""
        raise NotImplementedError

    def trace_rows(self, head: HeadOutput, tokens: tuple[str, ...], masks: np.ndarray,
                   names: Callable[[list[int]], list[str]]) -> list[dict[str, object]]:
        """Table rows of what the head said over a whole trace (``names``: token ids to vocabulary entries)."""
        raise NotImplementedError


class MaskedLanguageModel(HeadAdapter):
    kind: HeadKind = "masked-lm"

    def logits(self, loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        return mlm_head(loaded.model)(hidden)

    def trace_part(self, outputs: object, top_k: int) -> dict[str, np.ndarray]:
        logits = outputs.logits[0].float()  # [t, vocab]; overwritten below (the trace reads nothing else of it)
        values, indices = row_top_k(logits, top_k)  # [t, k], largest first
        # log-sum-exp in place from the largest logit found: no [t, vocab] temporary, one pass fewer
        largest = values[:, :1]
        log_sum_exp = logits.sub_(largest).exp_().sum(-1, keepdim=True).log_().add_(largest)
        logprobs = values - log_sum_exp
        return {"top_ids": indices.cpu().numpy().astype(np.int32)[None], "top_logprobs": logprobs.cpu().numpy()[None]}

    def stitched(self, labels: tuple[str, ...], parts: list[dict[str, np.ndarray]], stitch: Stitch) -> HeadOutput:
        return HeadOutput(kind=self.kind, top_ids=stitch("top_ids", 1)[0], top_logprobs=stitch("top_logprobs", 1)[0])

    def output_layer(self, loaded: LoadedModel, outputs: object, last: torch.Tensor, lowercase: bool,
                     top_k: int) -> OutputLayer:
        probs = torch.softmax(outputs.logits[0].float(), dim=-1)  # [t, vocab]
        values, indices = torch.topk(probs, k=min(top_k, probs.shape[-1]), dim=-1)  # [t, k]
        convert = loaded.tokenizer(lowercase).convert_ids_to_tokens
        tokens = tuple(tuple(str(token) for token in convert(row)) for row in indices.tolist())
        return OutputLayer(kind=self.kind, **_common(outputs, last), top_ids=indices.cpu().numpy().astype(np.int64),
                           top_tokens=tokens, top_probs=values.cpu().numpy().copy())

    def rows(self, output: OutputLayer, tokens: tuple[str, ...], query: int,
             shown: np.ndarray) -> list[dict[str, object]]:
        return [{"token": token, "probability": prob} for token, prob in output.predictions_at(query)]

    def trace_rows(self, head: HeadOutput, tokens: tuple[str, ...], masks: np.ndarray,
                   names: Callable[[list[int]], list[str]]) -> list[dict[str, object]]:
        return [{"[MASK]": number + 1, "token": token, "probability": float(np.exp(logprob))}
                for number, mask in enumerate(masks[:3])
                for token, logprob in zip(names(head.top_ids[mask].tolist()), head.top_logprobs[mask])]


class TokenClassifier(HeadAdapter):
    kind: HeadKind = "token-classification"
    one_pass_predictions = True

    def logits(self, loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        return loaded.model.classifier(hidden)

    def trace_part(self, outputs: object, top_k: int) -> dict[str, np.ndarray]:
        return {"token_logits": outputs.logits[0].float().cpu().numpy()[None]}

    def stitched(self, labels: tuple[str, ...], parts: list[dict[str, np.ndarray]], stitch: Stitch) -> HeadOutput:
        return HeadOutput(kind=self.kind, labels=labels, token_logits=stitch("token_logits", 1)[0])

    def output_layer(self, loaded: LoadedModel, outputs: object, last: torch.Tensor, lowercase: bool,
                     top_k: int) -> OutputLayer:
        multi_label = getattr(loaded.model.config, "problem_type", None) == "multi_label_classification"
        logits = outputs.logits[0].float()
        return OutputLayer(kind=self.kind, **_common(outputs, last), labels=loaded.info.labels,
                           token_logits=logits.cpu().numpy().copy(), token_probs=_probabilities(logits, multi_label),
                           multi_label=multi_label)

    def rows(self, output: OutputLayer, tokens: tuple[str, ...], query: int,
             shown: np.ndarray) -> list[dict[str, object]]:
        best = output.token_probs.argmax(-1)
        return [{"token": tokens[p], "label": output.labels[int(best[p])],
                 "probability": float(output.token_probs[p, best[p]])} for p in shown]

    def trace_rows(self, head: HeadOutput, tokens: tuple[str, ...], masks: np.ndarray,
                   names: Callable[[list[int]], list[str]]) -> list[dict[str, object]]:
        best = head.token_logits.argmax(-1)
        return [{"token": token, "label": head.labels[int(label)]} for token, label in zip(tokens, best)]


class SequenceClassifier(HeadAdapter):
    kind: HeadKind = "sequence-classification"
    one_pass_predictions = True

    def logits(self, loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        model = loaded.model
        if hasattr(model, "pre_classifier"):  # DistilBERT
            return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is not None and isinstance(model.classifier, nn.Linear):  # BERT
            return model.classifier(pooler(hidden))
        return model.classifier(hidden)  # RoBERTa/ELECTRA heads read row 0 themselves

    def trace_part(self, outputs: object, top_k: int) -> dict[str, np.ndarray]:
        return {"sequence_logits": outputs.logits[0].float().cpu().numpy()}

    def stitched(self, labels: tuple[str, ...], parts: list[dict[str, np.ndarray]], stitch: Stitch) -> HeadOutput:
        return HeadOutput(kind=self.kind, labels=labels,
                          sequence_logits=np.stack([part["sequence_logits"] for part in parts]).astype(np.float32))

    def output_layer(self, loaded: LoadedModel, outputs: object, last: torch.Tensor, lowercase: bool,
                     top_k: int) -> OutputLayer:
        multi_label = getattr(loaded.model.config, "problem_type", None) == "multi_label_classification"
        logits = outputs.logits[0].float()
        return OutputLayer(kind=self.kind, **_common(outputs, last), labels=loaded.info.labels,
                           sequence_logits=logits.cpu().numpy().copy(), sequence_probs=_probabilities(logits, multi_label),
                           multi_label=multi_label)

    def rows(self, output: OutputLayer, tokens: tuple[str, ...], query: int,
             shown: np.ndarray) -> list[dict[str, object]]:
        return [{"label": label, "probability": float(prob)} for label, prob in zip(output.labels,
                                                                                     output.sequence_probs)]

    def trace_rows(self, head: HeadOutput, tokens: tuple[str, ...], masks: np.ndarray,
                   names: Callable[[list[int]], list[str]]) -> list[dict[str, object]]:
        probs = torch.softmax(torch.from_numpy(head.sequence_logits), dim=-1).cpu().numpy().mean(0)  # windows averaged
        return [{"label": label, "probability": float(prob)} for label, prob in zip(head.labels, probs)]


class BareEncoder(HeadAdapter):
    kind: HeadKind = "encoder"

    def logits(self, loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        return hidden  # no head: the states are the output

    def trace_part(self, outputs: object, top_k: int) -> dict[str, np.ndarray]:
        return {"cls_vectors": outputs.last_hidden_state[0, 0].float().cpu().numpy()}  # [hidden]

    def stitched(self, labels: tuple[str, ...], parts: list[dict[str, np.ndarray]], stitch: Stitch) -> HeadOutput:
        return HeadOutput(kind=self.kind, cls_vectors=np.stack([part["cls_vectors"] for part in parts]).astype(np.float32))

    def output_layer(self, loaded: LoadedModel, outputs: object, last: torch.Tensor, lowercase: bool,
                     top_k: int) -> OutputLayer:
        return OutputLayer(kind=self.kind, **_common(outputs, last))

    def rows(self, output: OutputLayer, tokens: tuple[str, ...], query: int,
             shown: np.ndarray) -> list[dict[str, object]]:
        vectors = {"[CLS] vector": output.cls_vector, "mean of pieces": output.mean_vector}
        if output.pooled_vector is not None:
            vectors["pooled vector"] = output.pooled_vector
        return [{"vector": name, "norm": float(np.linalg.norm(vector)),
                 "first 8 numbers": np.array2string(vector[:8], precision=3)} for name, vector in vectors.items()]

    def trace_rows(self, head: HeadOutput, tokens: tuple[str, ...], masks: np.ndarray,
                   names: Callable[[list[int]], list[str]]) -> list[dict[str, object]]:
        return []  # no prediction head: the Predictions page ranks label descriptions by similarity


ADAPTERS: dict[HeadKind, HeadAdapter] = {adapter.kind: adapter for adapter in (
    MaskedLanguageModel(), TokenClassifier(), SequenceClassifier(), BareEncoder())}


def head_adapter(kind: HeadKind) -> HeadAdapter:
    """The adapter for a checkpoint's head kind (``ModelInfo.head_kind``)."""
    return ADAPTERS[kind]


def head_logits(loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The checkpoint's head on last-layer states, always in float32.

    Under bf16 autocast the encoder runs in bfloat16, but the head (a few rows here) stays
    float32 so that log-probabilities are not rounded to bfloat16's 3 digits.

    Args:
        hidden: [b, m, d]. For a sequence-classification head, row 0 must be [CLS].

    Returns:
        float32 masked-lm [b, m, vocab]; token-classification [b, m, labels];
        sequence-classification [b, labels]; a bare encoder returns ``hidden``.
    """
    with float32():
        return head_adapter(loaded.info.head_kind).logits(loaded, hidden.float())
