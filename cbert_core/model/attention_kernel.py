"""The attention function the explorer loads models with: eager (it returns the weights), but faster.

transformers' eager attention scales the full [head, q, k] score matrix after the
matmul; scaling the queries first (a [head, q, d] tensor, 8x smaller at 512
tokens) and dropping the no-op dropout saves about a third of attention's time
on a 2-core CPU. The result is the same softmax(QK^T / sqrt(d_k)) V with the
same weights returned, so hooks capture exactly what the model used; masks come
in the eager (additive) format. A thread that set an observer
(:func:`cbert_core.model.hooks.observe_attention`) is handed each layer's scores and weights.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from cbert_core.model.hooks import attention_observer

NAME = "cbert_eager"


def explorer_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **_kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + mask) v.

    Args:
        query, key, value: [batch, head, pos, head_dim].
        attention_mask: additive mask broadcastable to [batch, head, q, k], or None.

    Returns:
        (output [batch, q, head, head_dim], weights [batch, head, q, k]).
    """
    scores = attention_scores(query, key, scaling, attention_mask)
    weights = torch.softmax(scores, dim=-1)
    observer = attention_observer()
    if observer is not None:
        observer(scores, weights)
    if module.training and dropout > 0:
        weights = nn.functional.dropout(weights, p=dropout, training=True)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [b, q, h, d]
    return output, weights


def attention_weights(query: torch.Tensor, key: torch.Tensor, scaling: float | None = None,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scaling + mask): the weights exactly as the model computes them.

    The model's attention (:func:`explorer_attention`) runs the same operations, and a trace recomputes a
    head's weights with this later from the queries and keys it kept (under the same autocast, the same
    operations in the same order).

    Args:
        query, key: [..., pos, head_dim] (e.g. [batch, head, pos, head_dim], or one head's [pos, head_dim]).
        scaling: default 1 / sqrt(head_dim).
        attention_mask: additive (or boolean keep) mask broadcastable to [..., q, k], or None.

    Returns:
        [..., q, k] weights; each row sums to one.
    """
    return torch.softmax(attention_scores(query, key, scaling, attention_mask), dim=-1)


def attention_scores(query: torch.Tensor, key: torch.Tensor, scaling: float | None = None,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """q k^T * scaling + mask, [..., q, k]: what the softmax of :func:`attention_weights` runs over."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(-2, -1))  # [..., q, k]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    return scores


AttentionInterface.register(NAME, explorer_attention)
AttentionMaskInterface.register(NAME, eager_mask)
