"""Per-head statistics reduced from the scores and weights the attention kernel computes, and the
thread-local attention observer the trace uses to see them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cbert_core.model.hooks import attention_observer, observe_attention
from cbert_core.run.head_stats import HeadStatistics, statistics_reducer, window_statistics

TOKENS = ("[CLS]", "chest", "pain", ",", "no", "fever", ".", "denies", "##s", "[SEP]")


def direct_statistics(weights: np.ndarray, tokens: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The metrics of weights [head, q, k], from their definitions, in float64."""
    weights = weights.astype(np.float64)
    size = weights.shape[-1]
    logs = np.log(np.where(weights > 0, weights, 1.0))
    entropy = -(weights * logs).sum(-1).mean(-1)
    distance = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
    punctuation = [index for index, token in enumerate(tokens) if token in {",", "."}]
    return {
        "entropy": entropy,
        "normalized_entropy": entropy / np.log(size),
        "mean_distance": (weights * distance).sum(-1).mean(-1),
        "cls_share": weights[:, :, 0].mean(-1),
        "sep_share": weights[:, :, -1].mean(-1),
        "punctuation_share": weights[:, :, punctuation].sum(-1).mean(-1),
        "self_share": np.diagonal(weights, axis1=1, axis2=2).mean(-1),
        "previous_share": np.diagonal(weights, offset=-1, axis1=1, axis2=2).mean(-1),
    }


def test_statistics_from_scores_equal_their_definitions_also_where_a_query_ignores_itself() -> None:
    generator = torch.Generator().manual_seed(0)
    heads, size = 4, len(TOKENS)
    scores = torch.randn(1, heads, size, size, generator=generator) * 4
    scores[0, 1] *= 12  # a head that puts nearly all of its weight on one key per query
    scores[0, 2].diagonal().fill_(-200.0)  # queries whose own weight is 0 in float32: no logarithm
    weights = torch.softmax(scores, dim=-1)
    assert (weights[0, 2].diagonal() == 0).all()  # so the log-sum-exp must be found another way
    reduced = statistics_reducer(TOKENS)(scores.clone(), weights)  # [metric, head]
    expected = direct_statistics(weights[0].numpy(), TOKENS)
    for index, name in enumerate(HeadStatistics.METRICS):
        np.testing.assert_allclose(reduced[index].numpy(), expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # and from the weights alone (a trace given its attention arrays), the same numbers
    from_weights = window_statistics(weights[0][None].numpy(), TOKENS)
    for index, name in enumerate(HeadStatistics.METRICS):
        np.testing.assert_allclose(from_weights.metric(name)[0], reduced[index].numpy(), rtol=1e-5, atol=1e-5)


def test_the_observer_sees_each_layer_of_its_own_threads_forward_only(tiny) -> None:
    ids = torch.tensor([[tiny.tokenizer().cls_token_id, 5, 6, 7, 8, tiny.tokenizer().sep_token_id]])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    other_ran = threading.Event()

    def other_thread() -> None:
        with torch.inference_mode():
            tiny.model(input_ids=ids)
        other_ran.set()

    with torch.inference_mode(), observe_attention(lambda scores, weights: seen.append((scores.clone(), weights))):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert other_ran.is_set() and seen == []  # another session's forward is not observed
        tiny.model(input_ids=ids)
        with observe_attention(lambda scores, weights: None):  # nested: the inner observer, then ours again
            tiny.model(input_ids=ids)
        assert len(seen) == tiny.info.num_layers
    assert attention_observer() is None
    for scores, weights in seen:
        assert tuple(weights.shape) == (1, tiny.info.num_heads, 6, 6)
        torch.testing.assert_close(torch.softmax(scores, dim=-1), weights)


def test_an_observer_that_raises_leaves_no_observer_behind(tiny) -> None:
    def fails(_scores: torch.Tensor, _weights: torch.Tensor) -> None:
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"), torch.inference_mode(), observe_attention(fails):
        tiny.model(input_ids=torch.tensor([[1, 5, 6, 2]]))
    assert attention_observer() is None
