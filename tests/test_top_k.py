"""The k largest logits per position, found by chunks, are exactly what torch.topk finds."""

from __future__ import annotations

import pytest
import torch

from cbert_core.model.top_k import row_top_k


@pytest.mark.parametrize("width", [28996, 30522, 28928, 3000, 50])
def test_row_top_k_equals_torch_topk(width: int) -> None:
    generator = torch.Generator().manual_seed(width)
    logits = torch.randn(64, width, generator=generator) * 5
    logits[1, -3:] = 40.0  # a row whose largest entries are all after the last whole chunk
    logits[2, :5] = 40.0  # ... and one whose are all in the first chunk
    logits[3, 1000 % width] = 50.0  # one entry far above the rest of its row
    values, indices = row_top_k(logits, 10)
    expected_values, expected_indices = torch.topk(logits, 10, dim=-1)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0)
    torch.testing.assert_close(torch.gather(logits, 1, indices), expected_values, rtol=0, atol=0)
    distinct = [row for row in range(64) if row not in (1, 2)]  # rows without equal values
    assert torch.equal(indices[distinct], expected_indices[distinct])


def test_row_top_k_with_k_wider_than_the_row() -> None:
    logits = torch.tensor([[0.5, 2.0, -1.0]])
    values, indices = row_top_k(logits, 10)
    assert values.tolist() == [[2.0, 0.5, -1.0]] and indices.tolist() == [[1, 0, 2]]
