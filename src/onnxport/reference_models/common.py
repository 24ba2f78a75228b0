"""Framework-independent pieces shared by the PyTorch, TensorFlow and Flax encoders.

RoFormer's sinusoidal table and the checkpoint plumbing of ``from_pretrained`` /
``save_pretrained``; the input checks (so a bad input fails with a clear message
before any native kernel does) live in ``onnxport.artifact.input_checks``, shared
with validation and the runtime.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .. import checkpoints
from ..configs import AutoConfig, EncoderConfig
from ..families import Family, family_of
from ..artifact.input_checks import check_inputs, value_range  # noqa: F401  (the encoders' import path)
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
