"""The one Flax (linen) encoder behind all three families.

Mirrors ``reference_models/pt/encoder.py`` module for module: submodule names are
the HF parameter names (``embeddings/word_embeddings``, ``encoder/layer/0/attention/self/query``,
...), so the parameter pytree maps to the canonical state dict by renaming leaves only
(see ``modeling.flax_to_hf_name``). Family differences come from ``onnxport.families``.

Everything here is a pure function of (params, inputs): Python branches look only at
the config, the family, ``None``-ness of inputs and static ``.shape`` values, so
``jax.jit`` compiles once per shape and jax2onnx can trace the forward.

Precision: every matmul passes ``precision=HIGHEST`` so float32 results do not depend on
the backend's default matmul precision (TPU/GPU would otherwise use bf16/tf32 passes);
nothing is changed in JAX's global configuration.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ...configs import EncoderConfig
from ...families import Family
from ..common import InputError, rotary_table
from ..layer_stack import run_layer_stack
from ..tracing import attention_hook, trace_options
from .activations import ACT2FN

PRECISION = jax.lax.Precision.HIGHEST
einsum = functools.partial(jnp.einsum, precision=PRECISION)

LayerPast = tuple  # (key, value) or (key, value, cross_key, cross_value), each (batch, heads, seq, head_dim)


# ----------------------------------------------------------------------------- building blocks
def dense(config: EncoderConfig, features: int, use_bias: bool = True, name: Optional[str] = None) -> nn.Dense:
    """nn.Linear's counterpart: kernel (in, out) = the HF weight (out, in) transposed."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        precision=PRECISION,
        kernel_init=nn.initializers.normal(config.initializer_range),
        name=name,
    )


def layer_norm(config: EncoderConfig, name: Optional[str] = None) -> nn.LayerNorm:
    # Two-pass variance (mean of squared deviations) like torch; the fast E[x^2]-E[x]^2 form loses digits.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


def embed(config: EncoderConfig, num: int, width: int, name: Optional[str] = None) -> nn.Embed:
    return nn.Embed(num, width, embedding_init=nn.initializers.normal(config.initializer_range), name=name)


def roberta_position_ids(input_ids: jax.Array, padding_idx: int, past_length: int = 0) -> jax.Array:
    """RoBERTa numbers real tokens from padding_idx + 1 and gives padding the padding index."""
    not_pad = (input_ids != padding_idx).astype(jnp.int32)
    incremental = (jnp.cumsum(not_pad, axis=1) + past_length) * not_pad
    return incremental + padding_idx


def apply_rotary(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """The rotary position embedding of every query, key (and value) row: ``rotate_pairs``, or inside an
    exporter's ``tracing(rotary_op=...)`` block that function (one onnxport.RotaryEmbedding node)."""
    rotary_op = trace_options().rotary_op
    return rotate_pairs(x, sin, cos) if rotary_op is None else rotary_op(x, sin, cos)


def rotate_pairs(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotate interleaved feature pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).

    ``sin``/``cos`` hold one angle per pair, shape (..., seq, head_dim / 2).
    """
    sin_pos = jnp.repeat(sin, 2, axis=-1)
    cos_pos = jnp.repeat(cos, 2, axis=-1)
    rotated_half = jnp.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    return x * cos_pos + rotated_half * sin_pos


def arange(length) -> jax.Array:
    """0..length-1 as int32. An iota rather than jnp.arange so symbolic lengths (jax.export / jax2onnx) trace."""
    return jax.lax.broadcasted_iota(jnp.int32, (length,), 0)


@functools.lru_cache(maxsize=8)
def _rotary_table(num_positions: int, head_dim: int) -> np.ndarray:
    return rotary_table(num_positions, head_dim)


# ----------------------------------------------------------------------------- modules
class Embeddings(nn.Module):
    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        config = self.config
        # RoFormer may embed in a smaller width and project up (embedding_size).
        width = config.embedding_width
        self.word_embeddings = embed(config, config.vocab_size, width)
        if not self.family.rotary:
            self.position_embeddings = embed(config, config.max_position_embeddings, width)
        self.token_type_embeddings = embed(config, config.type_vocab_size, width)
        self.LayerNorm = layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds, past_length: int, deterministic: bool):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        shape = inputs_embeds.shape[:-1]
        if token_type_ids is None:
            token_type_ids = jnp.zeros(shape, dtype=jnp.int32)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if not self.family.rotary:
            if self.config.position_embedding_type == "absolute":
                if position_ids is None:
                    if input_ids is not None:
                        position_ids = roberta_position_ids(input_ids, self.config.pad_token_id, past_length)
                    else:  # no ids to find padding in: number positions sequentially
                        start = self.config.pad_token_id + 1 + past_length
                        position_ids = jnp.broadcast_to(start + arange(shape[1]), shape)
                embeddings = embeddings + self.position_embeddings(position_ids)
            else:
                # Kept for every position_embedding_type so checkpoints round-trip (touching creates the param).
                _ = self.position_embeddings.embedding
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings, deterministic=deterministic)


class SinusoidalPositions(nn.Module):
    """RoFormer's fixed sin/cos table (transformers' ``embed_positions``); a constant, not a parameter."""

    config: EncoderConfig

    def __call__(self, seq_length: int, past_length: int, position_ids):
        """(sin, cos), each (1 or batch, 1, seq, head_dim / 2), for broadcasting over heads."""
        table = jnp.asarray(_rotary_table(self.config.max_position_embeddings, self.config.head_dim))
        if position_ids is None:
            rows = jnp.take(table, past_length + arange(seq_length), axis=0)[None, None]
        else:
            rows = jnp.take(table, position_ids, axis=0)[:, None]
        sin, cos = jnp.split(rows, 2, axis=-1)
        return sin, cos


class SelfAttention(nn.Module):
    config: EncoderConfig
    family: Family
    position_embedding_type: str

    @property
    def relative(self) -> bool:
        return self.position_embedding_type in ("relative_key", "relative_key_query")

    def setup(self) -> None:
        config = self.config
        self.query = dense(config, config.hidden_size)
        self.key = dense(config, config.hidden_size)
        self.value = dense(config, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        if self.relative:
            self.distance_embedding = embed(config, 2 * config.max_position_embeddings - 1, config.head_dim)

    def split_heads(self, x: jax.Array) -> jax.Array:
        batch, seq = x.shape[0], x.shape[1]
        return x.reshape(batch, seq, self.config.num_attention_heads, self.config.head_dim).transpose(0, 2, 1, 3)

    def __call__(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary,
                 deterministic: bool, query_rows: Optional[int] = None):
        is_cross_attention = encoder_hidden_states is not None
        # query_rows: only the first positions ask (keys and values still cover every position).
        query = self.split_heads(self.query(hidden_states if query_rows is None else hidden_states[:, :query_rows]))
        if is_cross_attention and past_key_value is not None:
            key, value = past_key_value  # the encoder's keys/values do not change between steps
        else:
            source = encoder_hidden_states if is_cross_attention else hidden_states
            key = self.split_heads(self.key(source))
            value = self.split_heads(self.value(source))
            if rotary is not None and not is_cross_attention:
                sin, cos = rotary
                if query_rows is None:
                    query = apply_rotary(query, sin, cos)
                else:
                    query = apply_rotary(query, sin[..., :query_rows, :], cos[..., :query_rows, :])
                key = apply_rotary(key, sin, cos)
                if getattr(self.config, "rotary_value", False):
                    value = apply_rotary(value, sin, cos)
            if past_key_value is not None:
                # lax.concatenate, not jnp.concatenate: jax2onnx's jnp.concatenate gets the symbolic
                # length wrong (P instead of P + S) when the past length is dynamic.
                key = jax.lax.concatenate([past_key_value[0], key], 2)
                value = jax.lax.concatenate([past_key_value[1], value], 2)

        fused = attention_hook(self.relative, head_mask, attention_mask)
        if fused is not None:  # exporting: one onnxport.Attention node
            context = fused(query, key, value, attention_mask, self.config.num_attention_heads,
                            1.0 / math.sqrt(self.config.head_dim))
            return context, None, (key, value)
        scores = einsum("bhqd,bhkd->bhqk", query, key)
        if self.relative:
            query_length, key_length = query.shape[2], key.shape[2]
            # Queries sit after the cached keys: positions past..past+q-1.
            query_positions = (key_length - query_length) + arange(query_length)
            key_positions = arange(key_length)
            distance = query_positions[:, None] - key_positions[None, :]
            positional = self.distance_embedding(distance + self.config.max_position_embeddings - 1)
            scores = scores + einsum("bhld,lrd->bhlr", query, positional)
            if self.position_embedding_type == "relative_key_query":
                scores = scores + einsum("bhrd,lrd->bhlr", key, positional)
        scores = scores / math.sqrt(self.config.head_dim)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = jax.nn.softmax(scores, axis=-1)
        probs = self.dropout(probs, deterministic=deterministic)
        if head_mask is not None:
            probs = probs * head_mask
        context = einsum("bhqk,bhkd->bqhd", probs, value)
        context = context.reshape(context.shape[0], context.shape[1], -1)
        return context, probs, (key, value)


class SelfOutput(nn.Module):
    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        self.dense = dense(self.config, self.config.hidden_size)
        if not self.family.pre_norm:
            self.LayerNorm = layer_norm(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, hidden_states, residual, deterministic: bool):
        hidden_states = self.dropout(self.dense(hidden_states), deterministic=deterministic)
        if not self.family.pre_norm:  # post-norm: normalise after the residual add
            return self.LayerNorm(hidden_states + residual)
        return hidden_states + residual


class Attention(nn.Module):
    config: EncoderConfig
    family: Family
    position_embedding_type: str

    def setup(self) -> None:
        self.self = SelfAttention(self.config, self.family, self.position_embedding_type)
        self.output = SelfOutput(self.config, self.family)
        if self.family.pre_norm:
            self.LayerNorm = layer_norm(self.config)

    def __call__(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary,
                 deterministic: bool, query_rows: Optional[int] = None):
        normed = self.LayerNorm(hidden_states) if self.family.pre_norm else hidden_states
        context, probs, present = self.self(
            normed, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary, deterministic, query_rows
        )
        residual = hidden_states if query_rows is None else hidden_states[:, :query_rows]
        return self.output(context, residual, deterministic), probs, present


class Intermediate(nn.Module):
    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        if self.family.pre_norm:
            self.LayerNorm = layer_norm(self.config)
        self.dense = dense(self.config, self.config.intermediate_size)

    def __call__(self, hidden_states):
        if self.family.pre_norm:
            hidden_states = self.LayerNorm(hidden_states)
        return ACT2FN[self.config.hidden_act](self.dense(hidden_states))


class Output(SelfOutput):
    """Same computation as SelfOutput; the dense layer's input width (intermediate_size) is inferred."""


class Layer(nn.Module):
    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        self.attention = Attention(self.config, self.family, self.config.position_embedding_type)
        if self.config.add_cross_attention:
            # transformers always uses absolute (i.e. no relative) scores across the encoder states.
            self.crossattention = Attention(self.config, self.family, "absolute")
        self.intermediate = Intermediate(self.config, self.family)
        self.output = Output(self.config, self.family)

    def __call__(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, encoder_attention_mask,
                 past_key_value: Optional[LayerPast], rotary, deterministic: bool, query_rows: Optional[int] = None):
        self_past = tuple(past_key_value[:2]) if past_key_value is not None else None
        attention_output, self_probs, present = self.attention(
            hidden_states, attention_mask, head_mask, None, self_past, rotary, deterministic, query_rows
        )
        cross_probs = None
        if encoder_hidden_states is not None:
            cross_past = tuple(past_key_value[2:]) if past_key_value is not None and len(past_key_value) == 4 else None
            attention_output, cross_probs, cross_present = self.crossattention(
                attention_output, encoder_attention_mask, head_mask, encoder_hidden_states, cross_past, None,
                deterministic,
            )
            present = present + cross_present
        layer_output = self.output(self.intermediate(attention_output), attention_output, deterministic)
        return layer_output, self_probs, cross_probs, present


class LayerCollection(nn.Module):
    """``encoder.layer``: children named "0", "1", ... like the HF ``ModuleList`` indices."""

    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        self.layers = [Layer(self.config, self.family, name=str(i)) for i in range(self.config.num_hidden_layers)]

    def __call__(self, index: int, *args):
        return self.layers[index](*args)


class Encoder(nn.Module):
    config: EncoderConfig
    family: Family

    def setup(self) -> None:
        if self.family.rotary:
            self.embed_positions = SinusoidalPositions(self.config)
        # The layer loop lives in BaseModel, as in the PyTorch encoder.
        self.layer = LayerCollection(self.config, self.family)


class Pooler(nn.Module):
    config: EncoderConfig

    def setup(self) -> None:
        self.dense = dense(self.config, self.config.hidden_size)

    def __call__(self, hidden_states):
        return jnp.tanh(self.dense(hidden_states[:, 0]))


class BaseModel(nn.Module):
    """``XLMRobertaModel`` / ``RobertaPreLayerNormModel`` / ``RoFormerModel`` as a linen module.

    Flags arrive resolved (plain bools); the public classes in ``modeling`` resolve config defaults and check inputs.
    Returns a dict with the fields of ``BaseModelOutputWithPoolingAndCrossAttentions`` (absent ones None).
    """

    config: EncoderConfig
    family: Family
    add_pooling_layer: bool = True

    def setup(self) -> None:
        config, family = self.config, self.family
        self.embeddings = Embeddings(config, family)
        if self.config.projects_embeddings:
            self.embeddings_project = dense(config, config.hidden_size)
        self.encoder = Encoder(config, family)
        if family.pre_norm:
            self.LayerNorm = layer_norm(config)
        if family.has_pooler and self.add_pooling_layer:
            self.pooler = Pooler(config)


    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values=None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        deterministic: bool = True,
    ) -> dict[str, Any]:
        config = self.config
        past_length = past_key_values[0][0].shape[2] if past_key_values else 0
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, seq = reference.shape[0], reference.shape[1]
        dtype = jnp.float32

        if attention_mask is None:
            attention_mask = jnp.ones((batch, seq + past_length), dtype=dtype)
        extended_mask = self._extended_attention_mask(attention_mask, seq, past_length, dtype)
        encoder_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = jnp.ones(encoder_hidden_states.shape[:2], dtype=dtype)
            encoder_mask = self._invert_mask(encoder_attention_mask, dtype)
        layer_head_masks = self._head_masks(head_mask, dtype)

        hidden_states = self.embeddings(
            input_ids, token_type_ids, position_ids, inputs_embeds, past_length, deterministic
        )
        if self.config.projects_embeddings:
            hidden_states = self.embeddings_project(hidden_states)
        rotary = None
        if self.family.rotary:
            rotary = self.encoder.embed_positions(seq, past_length, position_ids)

        stack = run_layer_stack(
            config, hidden_states,
            lambda i, h, query_rows: self.encoder.layer(
                i, h, extended_mask, layer_head_masks[i], encoder_hidden_states, encoder_mask,
                past_key_values[i] if past_key_values else None, rotary, deterministic, query_rows),
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            cross_attention=encoder_hidden_states is not None, has_past=bool(past_key_values),
        )
        hidden_states = stack.hidden_states
        if self.family.pre_norm:  # pre-norm stacks end with one more LayerNorm
            hidden_states = self.LayerNorm(hidden_states)
        pooled = self.pooler(hidden_states) if self.family.has_pooler and self.add_pooling_layer else None
        return dict(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            past_key_values=stack.presents,
            hidden_states=stack.all_hidden_states,
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions or None,
        )

    # -- helpers ---------------------------------------------------------------------------
    def _extended_attention_mask(self, attention_mask, seq: int, past_length: int, dtype):
        """(batch, 1, q, k) additive mask: 0 where attended, the dtype's minimum where not."""
        mask = attention_mask[:, None, None, :].astype(dtype)
        if self.config.is_decoder:
            query_positions = past_length + arange(seq)
            key_positions = arange(attention_mask.shape[1])
            causal = key_positions[None, :] <= query_positions[:, None]
            mask = causal[None, None].astype(dtype) * mask
        return (1.0 - mask) * jnp.finfo(dtype).min

    @staticmethod
    def _invert_mask(mask, dtype):
        return (1.0 - mask[:, None, None, :].astype(dtype)) * jnp.finfo(dtype).min

    def _head_masks(self, head_mask, dtype) -> list:
        layers, heads = self.config.num_hidden_layers, self.config.num_attention_heads
        if head_mask is None:
            return [None] * layers
        head_mask = jnp.asarray(head_mask, dtype=dtype)
        if head_mask.ndim == 1:
            head_mask = jnp.broadcast_to(head_mask[None], (layers, head_mask.shape[0]))
        if tuple(head_mask.shape) != (layers, heads):
            raise InputError(
                f"head_mask must have shape (num_heads,) or (num_layers, num_heads) = ({layers}, {heads}), "
                f"got {tuple(head_mask.shape)}."
            )
        return [head_mask[i][None, :, None, None] for i in range(layers)]
