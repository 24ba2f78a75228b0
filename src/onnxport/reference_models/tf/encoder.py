"""The one TensorFlow encoder behind all three families.

Mirrors ``reference_models/pt/encoder.py`` module for module: the attribute names
are the HF PyTorch parameter names (``named_parameters()`` yields checkpoint keys),
and every forward step happens in the same order. Family differences come from
``onnxport.families``: norm placement (post/pre), position scheme (learned table /
rotary), pooler.

Written for three execution modes: eager, ``tf.function`` with unknown batch and
sequence dimensions, and ``jit_compile=True``. Hence: no Python branching on tensor
values, dynamic sizes from ``tf.shape``, and input checks that use static shapes
(plus cheap ``tf.debugging`` asserts for value ranges when tracing a graph).
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from ...configs import EncoderConfig
from ...families import Family
from ..common import InputError, check_inputs, rotary_table, value_range
from ..outputs import BaseModelOutputWithPoolingAndCrossAttentions
from ..layer_stack import run_layer_stack
from ..tracing import attention_hook, trace_options
from .activations import ACT2FN
from .layers import Dropout, Embedding, LayerNorm, Length, Linear, Module, Parameter, shape_list

LayerPast = tuple[tf.Tensor, ...]  # (key, value) or (key, value, cross_key, cross_value)




# ----------------------------------------------------------------------------- position helpers
def roberta_position_ids(input_ids: tf.Tensor, padding_idx: int, past_length: Length = 0) -> tf.Tensor:
    """RoBERTa numbers real tokens from padding_idx + 1 and gives padding the padding index."""
    not_pad = tf.cast(tf.not_equal(input_ids, padding_idx), tf.int64)
    incremental = (tf.cumsum(not_pad, axis=1) + tf.cast(past_length, tf.int64)) * not_pad
    return incremental + padding_idx


def _repeat_pairs(t: tf.Tensor) -> tf.Tensor:
    """(..., n) -> (..., 2n) with every entry twice: a b -> a a b b (torch.repeat_interleave(t, 2, -1))."""
    doubled = tf.stack([t, t], axis=-1)
    return tf.reshape(doubled, tf.concat([tf.shape(t)[:-1], [2 * t.shape[-1]]], axis=0))


def apply_rotary(x: tf.Tensor, sin: tf.Tensor, cos: tf.Tensor) -> tf.Tensor:
    """The rotary position embedding of every query, key (and value) row: ``rotate_pairs``, or inside an
    exporter's ``tracing(rotary_op=...)`` block that function (one onnxport.RotaryEmbedding node)."""
    rotary_op = trace_options().rotary_op
    return rotate_pairs(x, sin, cos) if rotary_op is None else rotary_op(x, sin, cos)


def rotate_pairs(x: tf.Tensor, sin: tf.Tensor, cos: tf.Tensor) -> tf.Tensor:
    """Rotate interleaved feature pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).

    ``sin``/``cos`` hold one angle per pair, shape (..., seq, head_dim / 2).
    """
    sin_pos = _repeat_pairs(sin)
    cos_pos = _repeat_pairs(cos)
    rotated_half = tf.reshape(tf.stack([-x[..., 1::2], x[..., ::2]], axis=-1), tf.shape(x))
    return x * cos_pos + rotated_half * sin_pos


# ----------------------------------------------------------------------------- the encoder
class Embeddings(Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.family = family
        # RoFormer may embed in a smaller width and project up (embedding_size).
        width = config.embedding_width
        self.padding_idx = config.pad_token_id
        self.position_embedding_type = config.position_embedding_type
        self.word_embeddings = Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        if not family.rotary:
            # Kept for every position_embedding_type so checkpoints round-trip; only "absolute" adds it.
            self.position_embeddings = Embedding(config.max_position_embeddings, width, padding_idx=config.pad_token_id)
        self.token_type_embeddings = Embedding(config.type_vocab_size, width)
        self.LayerNorm = LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds, past_length: Length, training: bool):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = tf.zeros(tf.shape(inputs_embeds)[:-1], dtype=tf.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if not self.family.rotary and self.position_embedding_type == "absolute":
            if position_ids is None:
                if input_ids is not None:
                    position_ids = roberta_position_ids(input_ids, self.padding_idx, past_length)
                else:  # no ids to find padding in: number positions sequentially (broadcast over the batch)
                    start = tf.cast(past_length, tf.int64) + self.padding_idx + 1
                    position_ids = tf.range(start, start + tf.cast(tf.shape(inputs_embeds)[1], tf.int64))[None]
            embeddings = embeddings + self.position_embeddings(position_ids)
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings, training)


class SinusoidalPositions(Module):
    """RoFormer's fixed sin/cos table, stored like transformers' ``embed_positions.weight`` (not trained)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        table = rotary_table(config.max_position_embeddings, config.head_dim)
        self.weight = tf.Variable(table, trainable=False, name="weight")

    def _own_parameters(self) -> dict[str, Parameter]:
        return {"weight": Parameter(self.weight)}

    def __call__(self, seq_length: Length, past_length: Length, position_ids: Optional[tf.Tensor]):
        """(sin, cos), each (1 or batch, 1, seq, head_dim / 2), for broadcasting over heads."""
        if position_ids is None:
            positions = tf.range(past_length, past_length + seq_length)
            table = tf.gather(self.weight, positions)[None, None]
        else:
            table = tf.gather(self.weight, position_ids)[:, None]
        sin, cos = tf.split(table, 2, axis=-1)
        return sin, cos


class SelfAttention(Module):
    def __init__(self, config: EncoderConfig, family: Family, position_embedding_type: str) -> None:
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_dim
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)
        self.position_embedding_type = position_embedding_type
        self.rotary_value = bool(getattr(config, "rotary_value", False))
        # Relative position scores (the distance table) for "relative_key" / "relative_key_query".
        self.relative = position_embedding_type in ("relative_key", "relative_key_query")
        if self.relative:
            self.max_position_embeddings = config.max_position_embeddings
            self.distance_embedding = Embedding(2 * config.max_position_embeddings - 1, config.head_dim)

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """(batch, seq, hidden) -> (batch, heads, seq, head_dim)."""
        x = tf.reshape(x, [tf.shape(x)[0], -1, self.num_attention_heads, self.attention_head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def __call__(
        self,
        hidden_states: tf.Tensor,
        attention_mask: Optional[tf.Tensor],
        head_mask: Optional[tf.Tensor],
        encoder_hidden_states: Optional[tf.Tensor],
        past_key_value: Optional[tuple[tf.Tensor, tf.Tensor]],
        rotary: Optional[tuple[tf.Tensor, tf.Tensor]],
        training: bool,
        query_rows: Optional[int] = None,
    ):
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
                if self.rotary_value:
                    value = apply_rotary(value, sin, cos)
            if past_key_value is not None:
                key = tf.concat([past_key_value[0], key], axis=2)
                value = tf.concat([past_key_value[1], value], axis=2)

        fused = attention_hook(self.relative, head_mask, attention_mask)
        if fused is not None:  # exporting: one onnxport.Attention node
            context = fused(query, key, value, attention_mask, self.num_attention_heads,
                            1.0 / math.sqrt(self.attention_head_size))
            return context, None, (key, value)
        scores = tf.matmul(query, key, transpose_b=True)
        if self.relative:
            query_length, key_length = tf.shape(query)[2], tf.shape(key)[2]
            # Queries sit after the cached keys: positions past..past+q-1.
            query_positions = tf.range(key_length - query_length, key_length)[:, None]
            key_positions = tf.range(key_length)[None, :]
            distance = query_positions - key_positions
            positional = self.distance_embedding(distance + self.max_position_embeddings - 1)
            scores = scores + tf.einsum("bhld,lrd->bhlr", query, positional)
            if self.position_embedding_type == "relative_key_query":
                scores = scores + tf.einsum("bhrd,lrd->bhlr", key, positional)
        scores = scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = tf.nn.softmax(scores, axis=-1)
        probs = self.dropout(probs, training)
        if head_mask is not None:
            probs = probs * head_mask
        context = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])
        context = tf.reshape(context, [tf.shape(context)[0], tf.shape(context)[1], -1])
        return context, probs, (key, value)


class SelfOutput(Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.family = family
        if not family.pre_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, hidden_states: tf.Tensor, residual: tf.Tensor, training: bool) -> tf.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states), training)
        if not self.family.pre_norm:  # post-norm: normalise after the residual add
            return self.LayerNorm(hidden_states + residual)
        return hidden_states + residual


class Attention(Module):
    def __init__(self, config: EncoderConfig, family: Family, position_embedding_type: str) -> None:
        super().__init__()
        self.self = SelfAttention(config, family, position_embedding_type)
        self.output = SelfOutput(config, family)
        self.family = family
        if family.pre_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary, training,
                 query_rows: Optional[int] = None):
        normed = self.LayerNorm(hidden_states) if self.family.pre_norm else hidden_states
        context, probs, present = self.self(
            normed, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary, training, query_rows
        )
        residual = hidden_states if query_rows is None else hidden_states[:, :query_rows]
        return self.output(context, residual, training), probs, present


class Intermediate(Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.family = family
        if family.pre_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def __call__(self, hidden_states: tf.Tensor) -> tf.Tensor:
        if self.family.pre_norm:
            hidden_states = self.LayerNorm(hidden_states)
        return self.intermediate_act_fn(self.dense(hidden_states))


class Output(SelfOutput):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__(config, family)
        self.dense = Linear(config.intermediate_size, config.hidden_size)


class Layer(Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.attention = Attention(config, family, config.position_embedding_type)
        self.add_cross_attention = config.add_cross_attention
        if config.add_cross_attention:
            # transformers always uses absolute (i.e. no relative) scores across the encoder states.
            self.crossattention = Attention(config, family, "absolute")
        self.intermediate = Intermediate(config, family)
        self.output = Output(config, family)

    def __call__(
        self,
        hidden_states,
        attention_mask,
        head_mask,
        encoder_hidden_states,
        encoder_attention_mask,
        past_key_value: Optional[LayerPast],
        rotary,
        training: bool,
        query_rows: Optional[int] = None,
    ):
        self_past = tuple(past_key_value[:2]) if past_key_value is not None else None
        attention_output, self_probs, present = self.attention(
            hidden_states, attention_mask, head_mask, None, self_past, rotary, training, query_rows
        )
        cross_probs = None
        if encoder_hidden_states is not None:
            if not self.add_cross_attention:
                raise InputError(
                    "encoder_hidden_states were passed but the model has no cross-attention; "
                    "load it with add_cross_attention=True (and is_decoder=True)."
                )
            cross_past = tuple(past_key_value[2:]) if past_key_value is not None and len(past_key_value) == 4 else None
            attention_output, cross_probs, cross_present = self.crossattention(
                attention_output, encoder_attention_mask, head_mask, encoder_hidden_states, cross_past, None, training
            )
            present = present + cross_present
        layer_output = self.output(self.intermediate(attention_output), attention_output, training)
        return layer_output, self_probs, cross_probs, present


class Encoder(Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        if family.rotary:
            self.embed_positions = SinusoidalPositions(config)
        self.layer = [Layer(config, family) for _ in range(config.num_hidden_layers)]


class Pooler(Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = tf.tanh

    def __call__(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


def _static_shape(x: Optional[tf.Tensor]) -> Optional[tuple]:
    if x is None:
        return None
    if x.shape.rank is None:  # unknown rank: nothing to check statically
        return (None, None)
    return tuple(x.shape.as_list())


class BaseModel(Module):
    """``TFXLMRobertaModel`` / ``TFRobertaPreLayerNormModel`` / ``TFRoFormerModel`` (without the checkpoint API)."""

    def __init__(self, config: EncoderConfig, family: Family, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.family = family
        self.embeddings = Embeddings(config, family)
        if self.config.projects_embeddings:
            self.embeddings_project = Linear(config.embedding_width, config.hidden_size)
        self.encoder = Encoder(config, family)
        if family.pre_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        if self.has_pooler:
            self.pooler = Pooler(config)


    @property
    def has_pooler(self) -> bool:
        return self.family.has_pooler and self.add_pooling_layer

    def call(
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
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.use_return_dict if return_dict is None else return_dict
        use_cache = (config.use_cache if use_cache is None else use_cache) if config.is_decoder else False

        input_ids = None if input_ids is None else tf.cast(input_ids, tf.int64)
        token_type_ids = None if token_type_ids is None else tf.cast(token_type_ids, tf.int64)
        position_ids = None if position_ids is None else tf.cast(position_ids, tf.int64)
        past_length: Length = shape_list(past_key_values[0][0])[2] if past_key_values else 0
        input_ids, token_type_ids, position_ids, inputs_embeds = self._check(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values, past_length
        )
        if position_ids is not None and position_ids.shape.rank == 1:
            position_ids = position_ids[None]  # one row of positions for the whole batch
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, seq = shape_list(reference)[:2]

        if attention_mask is None:
            attention_mask = tf.ones((batch, seq + past_length), dtype=tf.float32)
        extended_mask = self._extended_attention_mask(attention_mask, seq, past_length)
        encoder_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = tf.ones(shape_list(encoder_hidden_states)[:2], dtype=tf.float32)
            encoder_mask = self._invert_mask(encoder_attention_mask)
        layer_head_masks = self._head_masks(head_mask)

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_length, training)
        if self.config.projects_embeddings:
            hidden_states = self.embeddings_project(hidden_states)
        rotary = None
        if self.family.rotary:
            rotary = self.encoder.embed_positions(seq, past_length, position_ids)

        stack = run_layer_stack(
            config, hidden_states,
            lambda i, h, query_rows: self.encoder.layer[i](
                h, extended_mask, layer_head_masks[i], encoder_hidden_states, encoder_mask,
                past_key_values[i] if past_key_values else None, rotary, training, query_rows),
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            cross_attention=encoder_hidden_states is not None, has_past=bool(past_key_values),
        )
        hidden_states = stack.hidden_states
        if self.family.pre_norm:  # pre-norm stacks end with one more LayerNorm
            hidden_states = self.LayerNorm(hidden_states)
        pooled = self.pooler(hidden_states) if self.has_pooler else None

        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            past_key_values=stack.presents,
            hidden_states=stack.all_hidden_states,
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions,
        )
        return output if return_dict else output.to_tuple()

    # -- helpers ---------------------------------------------------------------------------
    def _check(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values, past_length):
        """Raise InputError for bad shapes (and, eagerly, values); returns the inputs, in graph mode gated
        behind value-range asserts so a bad id fails with our message before any gather does."""
        eager = tf.executing_eagerly()
        static_past = past_length if isinstance(past_length, int) else None
        mask_shape = None
        if attention_mask is not None and attention_mask.shape.rank != 3:
            mask_shape = _static_shape(attention_mask)
            if static_past is None and len(mask_shape) == 2:  # past + sequence is only known at run time
                mask_shape = (mask_shape[0], None)

        def concrete_range(x):
            return value_range(x.numpy()) if eager and x is not None else None

        check_inputs(
            self.config,
            self.family,
            input_shape=_static_shape(input_ids),
            embeds_shape=_static_shape(inputs_embeds),
            attention_mask_shape=mask_shape,
            token_type_ids_shape=_static_shape(token_type_ids),
            position_ids_shape=_static_shape(position_ids),
            past_length=static_past or 0,
            ids_range=concrete_range(input_ids),
            token_type_range=concrete_range(token_type_ids),
            position_range=concrete_range(position_ids),
        )
        if past_key_values is not None and len(past_key_values) != self.config.num_hidden_layers:
            raise InputError(
                f"past_key_values has {len(past_key_values)} layers, the model has {self.config.num_hidden_layers}."
            )
        tensors = (input_ids, token_type_ids, position_ids, inputs_embeds)
        # While tracing a graph, tf.debugging asserts check value ranges (XLA drops them); an exporter
        # turns them off (TraceOptions.graph_input_checks) to keep Assert nodes out of the artifact.
        if eager or not trace_options().graph_input_checks:
            return tensors
        asserts = self._graph_checks(input_ids, token_type_ids, position_ids, inputs_embeds, past_length)
        with tf.control_dependencies(asserts):
            return tuple(None if t is None else tf.identity(t) for t in tensors)

    def _graph_checks(self, input_ids, token_type_ids, position_ids, inputs_embeds, past_length) -> list:
        """Value-range checks as graph asserts (values are unknown while tracing)."""
        config = self.config
        asserts = []

        def assert_in(x, limit, message):
            asserts.append(tf.debugging.assert_non_negative(x, message=message))
            asserts.append(tf.debugging.assert_less(x, tf.constant(limit, x.dtype), message=message))

        if input_ids is not None:
            assert_in(input_ids, config.vocab_size,
                      f"input_ids must lie in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}); "
                      "check the tokenizer matches the model")
        if token_type_ids is not None:
            assert_in(token_type_ids, config.type_vocab_size,
                      f"token_type_ids must lie in [0, {config.type_vocab_size - 1}] (type_vocab_size)")
        if position_ids is not None:
            assert_in(position_ids, config.max_position_embeddings,
                      f"position_ids must lie in [0, {config.max_position_embeddings - 1}] (max_position_embeddings)")
        else:
            reference = input_ids if input_ids is not None else inputs_embeds
            total = tf.shape(reference)[1] + past_length
            asserts.append(tf.debugging.assert_less_equal(
                total, config.max_sequence_length,
                message=f"Sequence length (including past) exceeds the model maximum of {config.max_sequence_length} "
                        "positions (max_position_embeddings); truncate the input",
            ))
        return [a for a in asserts if a is not None]

    def _extended_attention_mask(self, attention_mask, seq: Length, past_length: Length) -> tf.Tensor:
        """(batch, 1, q, k) additive mask: 0 where attended, float32's minimum where not."""
        mask = tf.cast(attention_mask, tf.float32)
        if mask.shape.rank == 3:
            mask = mask[:, None, :, :]
        else:
            mask = mask[:, None, None, :]
            if self.config.is_decoder:
                query_positions = tf.range(past_length, past_length + seq)
                key_positions = tf.range(past_length + seq)
                causal = key_positions[None, :] <= query_positions[:, None]
                mask = tf.cast(causal, tf.float32)[None, None] * mask
        return (1.0 - mask) * tf.float32.min

    @staticmethod
    def _invert_mask(mask) -> tf.Tensor:
        mask = tf.cast(mask, tf.float32)
        mask = mask[:, None, :, :] if mask.shape.rank == 3 else mask[:, None, None, :]
        return (1.0 - mask) * tf.float32.min

    def _head_masks(self, head_mask) -> list:
        layers, heads = self.config.num_hidden_layers, self.config.num_attention_heads
        if head_mask is None:
            return [None] * layers
        head_mask = tf.cast(head_mask, tf.float32)
        if head_mask.shape.rank == 1:
            head_mask = tf.broadcast_to(head_mask[None], (layers, head_mask.shape[0] or heads))
        if tuple(head_mask.shape.as_list()) != (layers, heads):
            raise InputError(
                f"head_mask must have shape (num_heads,) or (num_layers, num_heads) = "
                f"({layers}, {heads}), got {tuple(head_mask.shape.as_list())}."
            )
        return [head_mask[i][None, :, None, None] for i in range(layers)]
