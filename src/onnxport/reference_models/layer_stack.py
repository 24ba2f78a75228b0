"""The encoders' layer loop, written once for the three frameworks: run the layers in order and collect
what the call asked for (hidden states, attentions, the cache). Pure Python over framework values: each
encoder passes a function that runs its layer ``i``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..configs import EncoderConfig
from .common import last_layer_query_rows
from .tracing import trace_options

# (index, hidden_states, query_rows) -> (hidden_states, self-attention probs, cross-attention probs, present)
LayerCall = Callable[[int, Any, Optional[int]], tuple]


@dataclass
class LayerStackOutput:
    hidden_states: Any  # the last layer's output (before a pre-norm stack's final LayerNorm)
    all_hidden_states: Optional[tuple]  # the embeddings' output and every layer's (output_hidden_states)
    attentions: Optional[tuple]  # per layer (output_attentions)
    cross_attentions: Optional[tuple]  # per layer (output_attentions with cross-attention)
    presents: Optional[tuple]  # per layer (use_cache)


def run_layer_stack(config: EncoderConfig, hidden_states, run_layer: LayerCall, *, use_cache: bool,
                    output_attentions: bool, output_hidden_states: bool, cross_attention: bool,
                    has_past: bool) -> LayerStackOutput:
    """Every layer in order. The last one computes only the first query row inside an exporter's
    ``tracing(first_token_only_last_layer=True)`` block when nothing the call returns needs the others
    (``common.last_layer_query_rows``)."""
    all_hidden_states = () if output_hidden_states else None
    attentions = () if output_attentions else None
    cross_attentions = () if output_attentions and config.add_cross_attention else None
    presents = () if use_cache else None
    last_query_rows = last_layer_query_rows(
        trace_options().first_token_only_last_layer, config,
        needs_every_position=bool(output_hidden_states or output_attentions or use_cache or cross_attention or has_past),
    )
    last = config.num_hidden_layers - 1
    for i in range(config.num_hidden_layers):
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        hidden_states, self_probs, cross_probs, present = run_layer(i, hidden_states,
                                                                    last_query_rows if i == last else None)
        if use_cache:
            presents += (present,)
        if output_attentions:
            attentions += (self_probs,)
            if cross_attentions is not None and cross_probs is not None:
                cross_attentions += (cross_probs,)
    if output_hidden_states:
        all_hidden_states += (hidden_states,)
    return LayerStackOutput(hidden_states, all_hidden_states, attentions, cross_attentions, presents)
