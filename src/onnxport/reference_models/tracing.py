"""The export tracing context: how the reference encoders behave while an exporter traces them.

An exporter enters ``with tracing(...)`` around its trace; the three encoders read ``trace_options()``
when they are traced or called. Outside any ``tracing`` block the options are the defaults
(``TraceOptions()``): plain rotary and attention formulas, every query row, graph input checks on, i.e. the models
as users run them. The options live in a ``contextvars.ContextVar``, so they are local to the thread
(and asyncio task) that entered the block, nest, and are restored when the block exits, by an
exception too. No exporter assigns into a reference-model module or instance.

Cached traces: the options are read at trace time, so a compiled function must not be reused across
different options. The exporters trace fresh functions (``torch.onnx.export`` traces every call;
the TF exporter builds a new ``tf.function``; jax2onnx traces its function afresh). A compiled call
that outlives the block must key its cache on ``trace_options()`` (the Flax classes' ``jax.jit``
takes them as a static argument).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

# (x, sin, cos) -> x rotated; the same arguments as the encoders' apply_rotary.
RotaryFunction = Callable[[Any, Any, Any], Any]
# (query, key, value, mask_bias, num_heads, scale) -> context (batch, query rows, num_heads * head_dim):
# softmax(query @ key^T * scale + mask_bias) @ value, heads merged; query (batch, heads, rows, head_dim),
# key/value (batch, heads, keys, head_dim) with any past already concatenated, mask_bias additive.
AttentionFunction = Callable[[Any, Any, Any, Any, int, float], Any]


@dataclass(frozen=True)
class TraceOptions:
    """What an exporter changes in the reference encoders while it traces them (hashable: a jit static key)."""

    # Called instead of the plain rotary formula for every rotary application (RoFormer queries, keys,
    # and values with rotary_value), with apply_rotary's arguments (x, sin, cos): the exporters' hook
    # that makes each application one onnxport.RotaryEmbedding node. None: the formula.
    rotary_op: Optional[RotaryFunction] = None
    # Called instead of the scores -> mask -> softmax -> context formula by every attention (self and
    # cross) whose scores are exactly that formula (``attention_hook``): the exporters' hook that makes
    # each one onnxport.Attention node, which the runtime lowers to ONNX Runtime's fused kernel. None: the
    # formula.
    attention_op: Optional[AttentionFunction] = None
    # The head reads the first token alone (text-classification): the last layer computes its query,
    # attention output and feed-forward for that token only (keys and values still span the sequence).
    # Same logits, about 1/num_layers fewer FLOPs. Ignored whenever a call needs every position of the
    # last layer (``common.last_layer_query_rows``).
    first_token_only_last_layer: bool = False
    # TensorFlow graph mode: value-range asserts (ids < vocab, length <= position table) in the traced
    # graph. The TF exporter turns them off (the runtime checks inputs against the io spec; Assert nodes
    # do not belong in an artifact). Eager calls check values either way.
    graph_input_checks: bool = True


DEFAULTS = TraceOptions()


def attention_hook(relative_positions: bool, head_mask: Any, mask_bias: Any) -> Optional[AttentionFunction]:
    """The attention op in force for one attention call, or None (the formula). Scores with relative-position
    terms, a head mask or no mask keep the formula: the op's schema is scaled dot product + additive mask."""
    op = trace_options().attention_op
    if op is None or relative_positions or head_mask is not None or mask_bias is None:
        return None
    return op

_OPTIONS: contextvars.ContextVar[TraceOptions] = contextvars.ContextVar("onnxport_trace_options", default=DEFAULTS)


def trace_options() -> TraceOptions:
    """The options in force here: those of the innermost ``tracing`` block, else the defaults."""
    return _OPTIONS.get()


@contextlib.contextmanager
def tracing(**changes: Any) -> Iterator[TraceOptions]:
    """Within the block, ``trace_options()`` is the enclosing options with ``changes`` applied.

    ``changes`` are ``TraceOptions`` field names (an unknown one is a TypeError). The previous options
    come back when the block exits, however it exits."""
    options = replace(_OPTIONS.get(), **changes)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


__all__ = ["DEFAULTS", "AttentionFunction", "RotaryFunction", "attention_hook", "TraceOptions", "trace_options", "tracing"]
