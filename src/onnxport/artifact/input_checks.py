"""The input checks the reference models, validation and the runtime share.

``check_inputs`` states the rules of one forward call (shapes, id ranges, the position table) for a config or
anything with its limits (``io_spec.InputLimits``); ``to_fp16_checked`` refuses cache values an fp16 graph
cannot hold. Everything fails with an ``InputError`` before a native kernel or ONNX Runtime sees the input.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..configs import EncoderConfig
from ..errors import InputError
from ..families import Family

FP16_MAX = float(np.finfo(np.float16).max)  # 65504

def check_inputs(
    config: EncoderConfig,
    family: Family,
    *,
    input_shape: Sequence[int] | None,
    embeds_shape: Sequence[int] | None = None,
    attention_mask_shape: Sequence[int] | None = None,
    token_type_ids_shape: Sequence[int] | None = None,
    position_ids_shape: Sequence[int] | None = None,
    past_length: int = 0,
    ids_range: tuple[int, int] | None = None,
    token_type_range: tuple[int, int] | None = None,
    position_range: tuple[int, int] | None = None,
) -> None:
    """Check shapes and (when known) value ranges of one forward call.

    Shapes may contain ``None`` for dimensions unknown at trace time; such dimensions are not checked.
    ``*_range`` are (min, max) of concrete integer inputs, or None when the values are symbolic.
    """
    if input_shape is None and embeds_shape is None:
        raise InputError("You have to specify either input_ids or inputs_embeds.")
    if input_shape is not None and embeds_shape is not None:
        raise InputError("You cannot specify both input_ids and inputs_embeds at the same time; pass one of them.")
    shape = tuple(input_shape) if input_shape is not None else tuple(embeds_shape)[:-1]
    if len(shape) != 2:
        raise InputError(
            f"input_ids must have shape (batch, sequence), got {tuple(shape)}; add a batch dimension "
            "(e.g. input_ids[None]) for a single sequence."
        )
    if embeds_shape is not None:
        width = config.embedding_width
        if embeds_shape[-1] not in (None, width):
            raise InputError(f"inputs_embeds must end in the embedding size {width}, got shape {tuple(embeds_shape)}.")
    batch, seq = shape
    if ids_range is not None:
        low, high = ids_range
        if low < 0 or high >= config.vocab_size:
            raise InputError(
                f"input_ids must lie in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}), "
                f"found values in [{low}, {high}]; check the tokenizer matches the model."
            )
    if seq is not None and position_ids_shape is None:
        total = seq + past_length
        limit = config.max_sequence_length
        if total > limit:
            raise InputError(
                f"Sequence length {total}{' (including past)' if past_length else ''} exceeds the "
                f"model's maximum of {limit} positions (max_position_embeddings={config.max_position_embeddings}); "
                "truncate the input (e.g. tokenizer(..., truncation=True, max_length=...))."
            )
    if attention_mask_shape is not None:
        want = (batch, None if seq is None else seq + past_length)
        if len(attention_mask_shape) != 2 or not _same(attention_mask_shape, want):
            raise InputError(
                f"attention_mask must have shape (batch, past + sequence) = {_fmt(want)}, got {tuple(attention_mask_shape)}."
            )
    if token_type_ids_shape is not None and not _same(token_type_ids_shape, shape):
        raise InputError(f"token_type_ids must have the shape of input_ids {_fmt(shape)}, got {tuple(token_type_ids_shape)}.")
    if token_type_range is not None:
        low, high = token_type_range
        if low < 0 or high >= config.type_vocab_size:
            raise InputError(
                f"token_type_ids must lie in [0, {config.type_vocab_size - 1}] (type_vocab_size), found [{low}, {high}]."
            )
    if position_ids_shape is not None:
        # (batch, sequence) or a (1, sequence) / (sequence,) row broadcast over the batch
        if len(position_ids_shape) not in (1, 2) or not _same(position_ids_shape[-1:], (seq,)):
            raise InputError(f"position_ids must have shape (batch, sequence) {_fmt(shape)}, got {tuple(position_ids_shape)}.")
    if position_range is not None:
        low, high = position_range
        table = config.max_position_embeddings
        if low < 0 or high >= table:
            raise InputError(f"position_ids must lie in [0, {table - 1}] (max_position_embeddings), found [{low}, {high}].")


def _same(got: Sequence[Any], want: Sequence[Any]) -> bool:
    return len(got) == len(want) and all(g is None or w is None or g == w for g, w in zip(got, want))


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def value_range(array: Any) -> tuple[int, int] | None:
    """(min, max) of a concrete integer array-like, None for an empty one."""
    values = np.asarray(array)
    if values.size == 0:
        return None
    return int(values.min()), int(values.max())


def to_fp16_checked(name: str, array: Any) -> np.ndarray:
    """``array`` (a cache tensor fed to an fp16 graph) as float16, refusing what float16 cannot hold.

    numpy casts |x| > 65504 to inf and keeps NaN: the graph would then answer NaN/inf without a word.
    Raises ``InputError`` naming the tensor and its largest magnitude instead."""
    array = np.asarray(array)
    if array.dtype == np.float16:
        return array
    if array.size and array.dtype.kind in "fiu":
        wide = array.astype(np.float64, copy=False)
        if np.isnan(wide).any():
            raise InputError(f"{name} holds NaN values; feed the cache the model returned (present.*).")
        peak = float(np.max(np.abs(wide)))
        if peak > FP16_MAX:
            raise InputError(
                f"{name} holds values up to {peak:g} in magnitude, beyond float16's range (max {FP16_MAX:g}) that "
                "this fp16 export's cache takes: they would become inf. Feed the cache the model returned "
                "(present.*, float16), or use an fp32 export."
            )
    return array.astype(np.float16)
