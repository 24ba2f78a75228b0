"""The one PyTorch encoder behind all three families.

Module and attribute names are the HF parameter names, so ``state_dict()`` keys
are the checkpoint keys. Family differences come from ``onnxport.families``:
norm placement (post/pre), position scheme (learned table / rotary), pooler.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ...configs import EncoderConfig
from ...errors import InputError
from ...families import Family
from ..common import check_inputs, rotary_table, value_range
from ..outputs import BaseModelOutputWithPoolingAndCrossAttentions
from ..layer_stack import run_layer_stack
from ..tracing import attention_hook, trace_options
from .activations import ACT2FN

LayerPast = tuple[torch.Tensor, ...]  # (key, value) or (key, value, cross_key, cross_value)


def _exporting() -> bool:
    """True while torch traces the model for ONNX; value checks on tensors must not run then."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def roberta_position_ids(input_ids: torch.Tensor, padding_idx: int, past_length: int = 0) -> torch.Tensor:
    """RoBERTa numbers real tokens from padding_idx + 1 and gives padding the padding index."""
    not_pad = input_ids.ne(padding_idx).int()
    incremental = (torch.cumsum(not_pad, dim=1).type_as(not_pad) + past_length) * not_pad
    return incremental.long() + padding_idx


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The rotary position embedding of every query, key (and value) row: ``rotate_pairs``, or inside an
    exporter's ``tracing(rotary_op=...)`` block that function (one onnxport.RotaryEmbedding node)."""
    rotary_op = trace_options().rotary_op
    return rotate_pairs(x, sin, cos) if rotary_op is None else rotary_op(x, sin, cos)


def rotate_pairs(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved feature pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).

    ``sin``/``cos`` hold one angle per pair, shape (..., seq, head_dim / 2).
    """
    sin_pos = torch.repeat_interleave(sin, 2, dim=-1)
    cos_pos = torch.repeat_interleave(cos, 2, dim=-1)
    rotated_half = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape_as(x)
    return x * cos_pos + rotated_half * sin_pos


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.family = family
        # RoFormer may embed in a smaller width and project up (embedding_size).
        width = config.embedding_width
        self.padding_idx = config.pad_token_id
        self.position_embedding_type = config.position_embedding_type
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        if not family.rotary:
            # Kept for every position_embedding_type so checkpoints round-trip; only "absolute" adds it.
            self.position_embeddings = nn.Embedding(
                config.max_position_embeddings, width, padding_idx=config.pad_token_id
            )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds, past_length: int) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        shape = inputs_embeds.shape[:-1]
        if token_type_ids is None:
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if not self.family.rotary and self.position_embedding_type == "absolute":
            if position_ids is None:
                if input_ids is not None:
                    position_ids = roberta_position_ids(input_ids, self.padding_idx, past_length)
                else:  # no ids to find padding in: number positions sequentially
                    start = self.padding_idx + 1 + past_length
                    position_ids = torch.arange(start, start + shape[1], device=inputs_embeds.device).expand(shape)
            embeddings = embeddings + self.position_embeddings(position_ids)
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings)


class SinusoidalPositions(nn.Module):
    """RoFormer's fixed sin/cos table; a buffer named like transformers' ``embed_positions.weight``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(rotary_table(config.max_position_embeddings, config.head_dim)))

    def forward(self, seq_length: int, past_length: int, position_ids: Optional[torch.Tensor]):
        """(sin, cos), each (1 or batch, 1, seq, head_dim / 2), for broadcasting over heads."""
        if position_ids is None:
            table = self.weight[past_length : past_length + seq_length][None, None]
        else:
            table = self.weight[position_ids][:, None]
        sin, cos = table.chunk(2, dim=-1)
        return sin, cos


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family, position_embedding_type: str) -> None:
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.position_embedding_type = position_embedding_type
        self.rotary_value = bool(getattr(config, "rotary_value", False))
        # Relative position scores (the distance table) for "relative_key" / "relative_key_query".
        self.relative = position_embedding_type in ("relative_key", "relative_key_query")
        if self.relative:
            self.max_position_embeddings = config.max_position_embeddings
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, config.head_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        head_mask: Optional[torch.Tensor],
        encoder_hidden_states: Optional[torch.Tensor],
        past_key_value: Optional[tuple[torch.Tensor, torch.Tensor]],
        rotary: Optional[tuple[torch.Tensor, torch.Tensor]],
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
                key = torch.cat([past_key_value[0], key], dim=2)
                value = torch.cat([past_key_value[1], value], dim=2)

        fused = attention_hook(self.relative, head_mask, attention_mask)
        if fused is not None:  # exporting: one onnxport.Attention node
            context = fused(query, key, value, attention_mask, self.num_attention_heads,
                            1.0 / math.sqrt(self.attention_head_size))
            return context, None, (key, value)
        scores = torch.matmul(query, key.transpose(-1, -2))
        if self.relative:
            query_length, key_length = query.shape[2], key.shape[2]
            # Queries sit after the cached keys: positions past..past+q-1.
            query_positions = torch.arange(key_length - query_length, key_length, device=query.device).view(-1, 1)
            key_positions = torch.arange(key_length, device=query.device).view(1, -1)
            distance = query_positions - key_positions
            positional = self.distance_embedding(distance + self.max_position_embeddings - 1).to(query.dtype)
            scores = scores + torch.einsum("bhld,lrd->bhlr", query, positional)
            if self.position_embedding_type == "relative_key_query":
                scores = scores + torch.einsum("bhrd,lrd->bhlr", key, positional)
        scores = scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1)
        probs = self.dropout(probs)
        if head_mask is not None:
            probs = probs * head_mask
        context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.shape[0], context.shape[1], -1)
        return context, probs, (key, value)


class SelfOutput(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.family = family
        if not family.pre_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        if not self.family.pre_norm:  # post-norm: normalise after the residual add
            return self.LayerNorm(hidden_states + residual)
        return hidden_states + residual


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family, position_embedding_type: str) -> None:
        super().__init__()
        self.self = SelfAttention(config, family, position_embedding_type)
        self.output = SelfOutput(config, family)
        self.family = family
        if family.pre_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary,
                query_rows: Optional[int] = None):
        normed = self.LayerNorm(hidden_states) if self.family.pre_norm else hidden_states
        context, probs, present = self.self(
            normed, attention_mask, head_mask, encoder_hidden_states, past_key_value, rotary, query_rows
        )
        residual = hidden_states if query_rows is None else hidden_states[:, :query_rows]
        return self.output(context, residual), probs, present


class Intermediate(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.family = family
        if family.pre_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.family.pre_norm:
            hidden_states = self.LayerNorm(hidden_states)
        return self.intermediate_act_fn(self.dense(hidden_states))


class Output(SelfOutput):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__(config, family)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        self.attention = Attention(config, family, config.position_embedding_type)
        self.add_cross_attention = config.add_cross_attention
        if config.add_cross_attention:
            # transformers always uses absolute (i.e. no relative) scores across the encoder states.
            self.crossattention = Attention(config, family, "absolute")
        self.intermediate = Intermediate(config, family)
        self.output = Output(config, family)

    def forward(
        self,
        hidden_states,
        attention_mask,
        head_mask,
        encoder_hidden_states,
        encoder_attention_mask,
        past_key_value: Optional[LayerPast],
        rotary,
        query_rows: Optional[int] = None,
    ):
        self_past = past_key_value[:2] if past_key_value is not None else None
        attention_output, self_probs, present = self.attention(
            hidden_states, attention_mask, head_mask, None, self_past, rotary, query_rows
        )
        cross_probs = None
        if encoder_hidden_states is not None:
            if not self.add_cross_attention:
                raise InputError(
                    "encoder_hidden_states were passed but the model has no cross-attention; "
                    "load it with add_cross_attention=True (and is_decoder=True)."
                )
            cross_past = past_key_value[2:] if past_key_value is not None and len(past_key_value) == 4 else None
            attention_output, cross_probs, cross_present = self.crossattention(
                attention_output, encoder_attention_mask, head_mask, encoder_hidden_states, cross_past, None
            )
            present = present + cross_present
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, self_probs, cross_probs, present


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig, family: Family) -> None:
        super().__init__()
        if family.rotary:
            self.embed_positions = SinusoidalPositions(config)
        self.layer = nn.ModuleList([Layer(config, family) for _ in range(config.num_hidden_layers)])


class BaseModel(nn.Module):
    """``XLMRobertaModel`` / ``RobertaPreLayerNormModel`` / ``RoFormerModel`` (without the from_pretrained API)."""

    def __init__(self, config: EncoderConfig, family: Family, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.family = family
        self.embeddings = Embeddings(config, family)
        if self.config.projects_embeddings:
            self.embeddings_project = nn.Linear(config.embedding_width, config.hidden_size)
        self.encoder = Encoder(config, family)
        if family.pre_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        if self.has_pooler:
            self.pooler = Pooler(config)


    @property
    def has_pooler(self) -> bool:
        return self.family.has_pooler and self.add_pooling_layer

    def forward(
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
    ):
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.use_return_dict if return_dict is None else return_dict
        use_cache = (config.use_cache if use_cache is None else use_cache) if config.is_decoder else False

        past_length = past_key_values[0][0].shape[2] if past_key_values else 0
        if not _exporting():
            self._check(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values, past_length)
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, seq = reference.shape[0], reference.shape[1]
        device = reference.device
        dtype = self.embeddings.word_embeddings.weight.dtype

        if attention_mask is None:
            attention_mask = torch.ones((batch, seq + past_length), device=device)
        extended_mask = self._extended_attention_mask(attention_mask, seq, past_length, dtype)
        encoder_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=device)
            encoder_mask = self._invert_mask(encoder_attention_mask, dtype)
        layer_head_masks = self._head_masks(head_mask, dtype)

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_length)
        if self.config.projects_embeddings:
            hidden_states = self.embeddings_project(hidden_states)
        rotary = None
        if self.family.rotary:
            rotary = self.encoder.embed_positions(seq, past_length, position_ids)

        stack = run_layer_stack(
            config, hidden_states,
            lambda i, h, query_rows: self.encoder.layer[i](
                h, extended_mask, layer_head_masks[i], encoder_hidden_states, encoder_mask,
                past_key_values[i] if past_key_values else None, rotary, query_rows),
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
        check_inputs(
            self.config,
            self.family,
            input_shape=None if input_ids is None else tuple(input_ids.shape),
            embeds_shape=None if inputs_embeds is None else tuple(inputs_embeds.shape),
            attention_mask_shape=None if attention_mask is None or attention_mask.dim() == 3 else tuple(attention_mask.shape),
            token_type_ids_shape=None if token_type_ids is None else tuple(token_type_ids.shape),
            position_ids_shape=None if position_ids is None else tuple(position_ids.shape),
            past_length=past_length,
            ids_range=None if input_ids is None else value_range(input_ids.detach().cpu()),
            token_type_range=None if token_type_ids is None else value_range(token_type_ids.detach().cpu()),
            position_range=None if position_ids is None else value_range(position_ids.detach().cpu()),
        )
        if past_key_values is not None and len(past_key_values) != self.config.num_hidden_layers:
            raise InputError(
                f"past_key_values has {len(past_key_values)} layers, the model has {self.config.num_hidden_layers}."
            )

    def _extended_attention_mask(self, attention_mask, seq: int, past_length: int, dtype) -> torch.Tensor:
        """(batch, 1, q, k) additive mask: 0 where attended, the dtype's minimum where not."""
        if attention_mask.dim() == 3:
            mask = attention_mask[:, None, :, :]
        else:
            mask = attention_mask[:, None, None, :]
            if self.config.is_decoder:
                query_positions = torch.arange(past_length, past_length + seq, device=mask.device)
                key_positions = torch.arange(past_length + seq, device=mask.device)
                causal = key_positions[None, :] <= query_positions[:, None]
                mask = causal[None, None].to(mask.dtype) * mask
        mask = mask.to(dtype)
        return (1.0 - mask) * torch.finfo(dtype).min

    @staticmethod
    def _invert_mask(mask, dtype) -> torch.Tensor:
        mask = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
        return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min

    def _head_masks(self, head_mask, dtype) -> list:
        layers = self.config.num_hidden_layers
        if head_mask is None:
            return [None] * layers
        if head_mask.dim() == 1:
            head_mask = head_mask[None].expand(layers, -1)
        if tuple(head_mask.shape) != (layers, self.config.num_attention_heads):
            raise InputError(
                f"head_mask must have shape (num_heads,) or (num_layers, num_heads) = "
                f"({layers}, {self.config.num_attention_heads}), got {tuple(head_mask.shape)}."
            )
        return list(head_mask.to(dtype)[:, None, :, None, None])


class Pooler(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))
