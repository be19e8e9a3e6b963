"""The k largest entries of each row of a wide matrix (a vocabulary's logits), faster than torch.topk.

``torch.topk`` over the 28,996 logits of each of 512 positions takes about 15 ms on 2 cores, ten times
one pass over them: it partially sorts every row. The k largest entries of a row lie in the k chunks of
the row whose maxima are largest (any other chunk's entries are each below k entries of those chunks), so
one cheap pass for the chunk maxima, then ``torch.topk`` over k chunks per row, gives the same values.
"""

from __future__ import annotations

import torch

CHUNK = 256  # entries per chunk of a row


def row_top_k(values: torch.Tensor, k: int, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [rows, k], indices [rows, k]) of the k largest entries of each row of ``values`` [rows, n],
    largest first: the values ``torch.topk(values, k, dim=-1)`` gives (among equal values, which index is
    returned may differ, as it may between torch versions)."""
    rows, width = values.shape
    k = min(k, width)
    chunks = width // chunk
    if chunks < 4 * k:  # too few chunks to leave any out: plain topk
        return torch.topk(values, k, dim=-1)
    whole = chunks * chunk
    blocks = values[:, :whole].view(rows, chunks, chunk)  # [rows, chunks, chunk]
    best = torch.topk(blocks.amax(-1), k, dim=-1).indices  # [rows, k]: the chunks with the largest maxima
    candidates = blocks[torch.arange(rows, device=values.device)[:, None], best].reshape(rows, k * chunk)
    top, at = torch.topk(candidates, k, dim=-1)  # [rows, k]; at: slot * chunk + offset in the chosen chunks
    indices = best.gather(-1, torch.div(at, chunk, rounding_mode="floor")) * chunk + at % chunk
    if whole < width:  # the entries after the last whole chunk compete too
        tail_top, tail_at = torch.topk(values[:, whole:], min(k, width - whole), dim=-1)
        top, at = torch.topk(torch.cat([top, tail_top], dim=-1), k, dim=-1)
        indices = torch.cat([indices, tail_at + whole], dim=-1).gather(-1, at)
    return top, indices
