"""Framework-independent pieces shared by the PyTorch, TensorFlow and Flax encoders.

Input checks (so a bad input fails with a clear message before any native kernel
does), RoFormer's sinusoidal table, and the checkpoint plumbing of
``from_pretrained`` / ``save_pretrained``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .. import checkpoints
from ..configs import AutoConfig, EncoderConfig
from ..families import Family, family_of
from ..errors import InputError  # noqa: F401  (re-exported: the old import path keeps working)

logger = logging.getLogger("onnxport")


def rotary_table(num_positions: int, head_dim: int) -> np.ndarray:
    """RoFormer's sinusoidal table, shape (num_positions, head_dim): sines in the first half, cosines in the second.

    Computed in float64 like transformers, then cast, so every framework starts from identical numbers.
    """
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    inv_freq = np.power(10000.0, -2.0 * (np.arange(head_dim) // 2) / head_dim)[None, :]
    angles = positions * inv_freq
    sentinel = head_dim // 2 if head_dim % 2 == 0 else head_dim // 2 + 1
    table = np.empty((num_positions, head_dim), dtype=np.float64)
    table[:, :sentinel] = np.sin(angles[:, 0::2])
    table[:, sentinel:] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


def last_layer_query_rows(first_token_only: bool, config: EncoderConfig, *, needs_every_position: bool) -> int | None:
    """Query rows of the last layer: 1 when an exporter traces a graph whose head reads the first token only
    (``first_token_only``), None (every row) otherwise, or when the call needs every position of the last
    layer (hidden states, attentions, a cache, cross-attention, a past) or relative position scores, which
    index query positions."""
    if not first_token_only or needs_every_position:
        return None
    return 1 if config.position_embedding_type in ("absolute", "rotary") else None


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


# ----------------------------------------------------------------------------- checkpoint plumbing
def load_config_and_weights(
    checkpoint_dir: str | os.PathLike, family: Family, config: EncoderConfig | None = None, **config_overrides: Any
) -> tuple[EncoderConfig, checkpoints.StateDict]:
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(
            f"Checkpoint directory {checkpoint_dir!r} does not exist. onnxport loads local HF-format directories "
            "(config.json + model.safetensors / pytorch_model.bin); there is no model hub access."
        )
    if config is None:
        config = AutoConfig.from_pretrained(checkpoint_dir, **config_overrides)
    if family_of(config) is not family:
        raise checkpoints.CheckpointError(
            f"{checkpoint_dir} holds a {config.model_type!r} model, not {family.model_type!r}; "
            f"use the {family_of(config).class_prefix}* classes."
        )
    return config, checkpoints.load_state_dict(checkpoint_dir)


def fit_or_raise(
    state: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, tuple],
    family: Family,
    class_name: str,
    optional_keys: Sequence[str] = (),
) -> tuple[checkpoints.StateDict, checkpoints.LoadReport]:
    """Fit checkpoint weights to a model; raise on shape mismatches, log missing/unexpected keys."""
    fitted, report = checkpoints.fit_state_dict(
        state,
        expected_shapes,
        family.base_model_prefix,
        optional_keys=optional_keys,
        ignore_unexpected=(".position_ids", ".token_type_ids"),
    )
    if report.mismatched:
        raise checkpoints.CheckpointError(
            f"The checkpoint's weights disagree with its config for {class_name}:\n{report}\n"
            "Fix config.json (vocab_size, hidden_size, ...) to match the weights."
        )
    if report.missing:
        logger.warning("%s: %d weights not in the checkpoint were newly initialized: %s",
                       class_name, len(report.missing), ", ".join(report.missing))
    if report.unexpected:
        logger.info("%s: %d checkpoint weights unused: %s", class_name, len(report.unexpected),
                    ", ".join(report.unexpected))
    return fitted, report


def save_checkpoint(
    save_directory: str | os.PathLike,
    config: EncoderConfig,
    state: Mapping[str, np.ndarray],
    architecture: str,
    drop_keys: Sequence[str] = (),
    max_shard_size: int | None = None,
) -> None:
    """Write config.json (with ``architectures``) and safetensors, leaving out tied copies like transformers."""
    save_directory = os.fspath(save_directory)
    os.makedirs(save_directory, exist_ok=True)
    config.architectures = [architecture]
    config.save_pretrained(save_directory)
    kept = {k: np.asarray(v) for k, v in state.items() if k not in set(drop_keys)}
    checkpoints.save_state_dict(kept, save_directory, max_shard_size=max_shard_size)
