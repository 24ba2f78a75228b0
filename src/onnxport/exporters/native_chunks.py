"""The native PyTorch model run with its attention over chunks of query rows: validation at long lengths.

At 8,192 tokens one layer's attention scores are (rows x heads x 8192 x 8192) fp32 — 3.2 GB at 12 heads —
and the reference model holds about three such tensors at its peak. ``query_chunks(model, rows)`` makes
every encoder layer compute its output ``rows`` query positions at a time, keys and values over all
positions as before, so the scores never exceed (rows x heads x ``rows`` x length).

It uses the layers' own ``query_rows`` (the layer computes the first ``query_rows`` positions' outputs):
for the chunk starting at position ``a`` the layer's input, its additive mask and its rotary tables are
rolled by ``-a`` along the sequence, so positions ``a..a+rows`` come first. Self-attention is equivariant
under a permutation of the positions applied to the hidden states, the mask and the rotary tables together
(keys are summed over in another order: float rounding, far below the validation tolerance), and every
other part of a layer works row by row; the outputs are exactly the model's, and no attention code is
duplicated here. Layers whose attention depends on position differences (``relative_key`` scores), a cache,
or cross-attention run whole.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def splits_queries(model: torch.nn.Module) -> bool:
    """Whether ``query_chunks`` can chunk this model's layers (no relative-position attention scores)."""
    from ..reference_models.pt.encoder import Layer

    layers = [m for m in model.modules() if isinstance(m, Layer)]
    return bool(layers) and not any(layer.attention.self.relative for layer in layers)


def _roll(tensor: torch.Tensor | None, shift: int, dims: tuple[int, ...]) -> torch.Tensor | None:
    if tensor is None:
        return None
    dims = tuple(d for d in dims if tensor.shape[d] > 1)  # broadcast axes stay as they are
    return torch.roll(tensor, shifts=(shift,) * len(dims), dims=dims) if dims else tensor


def _chunked(forward, rows: int):
    def run(hidden_states, attention_mask, head_mask, encoder_hidden_states, encoder_attention_mask,
            past_key_value, rotary, query_rows=None):
        sequence = hidden_states.shape[1]
        if (query_rows is not None or past_key_value is not None or encoder_hidden_states is not None
                or sequence <= rows):
            return forward(hidden_states, attention_mask, head_mask, encoder_hidden_states, encoder_attention_mask,
                           past_key_value, rotary, query_rows)
        pieces, present = [], None
        for start in range(0, sequence, rows):
            take = min(rows, sequence - start)
            mask = attention_mask
            if mask is not None:
                mask = _roll(mask, -start, (-1, -2))  # (batch, 1, 1 or query, key)
                if mask.shape[-2] > 1:  # a causal mask has a row per query: the chunk's rows
                    mask = mask[..., :take, :]
            rolled = None if rotary is None else tuple(_roll(t, -start, (-2,)) for t in rotary)
            result = forward(_roll(hidden_states, -start, (1,)), mask, head_mask, None, None, None, rolled, take)
            pieces.append(result[0])
            if start == 0:
                present = result[3]  # keys and values over every position, unrolled in the first chunk
            del result  # the chunk's probabilities, before the next chunk's scores
        return torch.cat(pieces, dim=1), None, None, present

    return run


@contextlib.contextmanager
def query_chunks(model: torch.nn.Module, rows: int) -> Iterator[None]:
    """Within the block every encoder layer of ``model`` (onnxport's PyTorch reference model) computes its
    attention ``rows`` query positions at a time; attention probabilities are not returned then."""
    from ..reference_models.pt.encoder import Layer

    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    layers = [m for m in model.modules() if isinstance(m, Layer)] if splits_queries(model) else []
    for layer in layers:
        layer.forward = _chunked(layer.forward, rows)  # an instance attribute: the class's forward is untouched
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
