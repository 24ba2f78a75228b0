"""The custom rotary op ``onnxport.RotaryEmbedding`` (domain ``onnxport``, version 1).

Schema (the same from the PyTorch, TensorFlow and Flax exporters)::

    Y = onnxport.RotaryEmbedding(X, cos, sin)

    X    float (batch, num_heads, sequence, head_dim)   queries, keys or values, heads split
    cos  float (batch | 1, 1, sequence, head_dim / 2)   one angle per feature pair, already
    sin  float (batch | 1, 1, sequence, head_dim / 2)   picked for the positions of X
    Y    float like X

    Y[..., 2i]   = X[..., 2i] * cos[..., i] - X[..., 2i+1] * sin[..., i]
    Y[..., 2i+1] = X[..., 2i+1] * cos[..., i] + X[..., 2i] * sin[..., i]

Pairs are interleaved (RoFormer / GPT-J style); there are no attributes. ``cos``
and ``sin`` are the ones the reference encoders already compute
(``SinusoidalPositions`` slices the table at ``past_length .. past_length + seq``,
or gathers ``position_ids``), so the past offset lives outside the op and all
rotary nodes of a graph share one table lookup. An exporter only has to turn
each ``apply_rotary(x, sin, cos)`` call into one node with inputs (x, cos, sin).

The model carries an ONNX function (standard ops only) defining the op, so
``onnx.checker`` (full check), shape inference, stock ONNX Runtime and
``onnx.reference`` run the file with nothing registered. For execution providers
with a fused kernel, :func:`lower_to_contrib` rewrites every node into ONNX
Runtime's ``com.microsoft.RotaryEmbedding`` (interleaved=1) and
:func:`lower_to_onnx23` into the standard opset-23 ``RotaryEmbedding``.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .opsets import default_opset, drop_opset, set_opset

DOMAIN = "onnxport"
OP_TYPE = "RotaryEmbedding"
VERSION = 1
MIN_OPSET = 13  # the body uses Unsqueeze/Squeeze with axes as inputs


def _const_i64(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def make_function(opset: int) -> onnx.FunctionProto:
    """The op's definition in standard ONNX ops, importing the model's default-domain ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"onnxport.RotaryEmbedding needs opset >= {MIN_OPSET}, got {opset}.")
    nodes = [
        _const_i64("zero", [0]),
        _const_i64("three", [3]),
        _const_i64("pair", [-1, 2]),
        _const_i64("last", [-1]),
        helper.make_node("Constant", [], ["i0"], value=helper.make_tensor("i0", TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], ["i1"], value=helper.make_tensor("i1", TensorProto.INT64, [], [1])),
        # (B, H, S, D) -> (B, H, S, D/2, 2): feature pairs on the last axis.
        helper.make_node("Shape", ["X"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "zero", "three"], ["lead"]),
        helper.make_node("Concat", ["lead", "pair"], ["pairs_shape"], axis=0),
        helper.make_node("Reshape", ["X", "pairs_shape"], ["pairs"]),
        helper.make_node("Gather", ["pairs", "i0"], ["x_even"], axis=-1),
        helper.make_node("Gather", ["pairs", "i1"], ["x_odd"], axis=-1),
        # Same operation order as the reference: x * cos + rotate_half(x) * sin.
        helper.make_node("Mul", ["x_even", "cos"], ["even_cos"]),
        helper.make_node("Mul", ["x_odd", "sin"], ["odd_sin"]),
        helper.make_node("Sub", ["even_cos", "odd_sin"], ["y_even"]),
        helper.make_node("Mul", ["x_odd", "cos"], ["odd_cos"]),
        helper.make_node("Mul", ["x_even", "sin"], ["even_sin"]),
        helper.make_node("Add", ["odd_cos", "even_sin"], ["y_odd"]),
        helper.make_node("Unsqueeze", ["y_even", "last"], ["y_even_1"]),
        helper.make_node("Unsqueeze", ["y_odd", "last"], ["y_odd_1"]),
        helper.make_node("Concat", ["y_even_1", "y_odd_1"], ["y_pairs"], axis=-1),
        helper.make_node("Reshape", ["y_pairs", "x_shape"], ["Y"]),
    ]
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        inputs=["X", "cos", "sin"],
        outputs=["Y"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=[],
        doc_string="Interleaved rotary position embedding; see onnxport.exporters.rotary_op.",
    )


def make_node(x: str, cos: str, sin: str, y: str, name: str = "") -> onnx.NodeProto:
    """One custom node, for exporters that build graphs by hand (e.g. tf2onnx handlers)."""
    return helper.make_node(OP_TYPE, [x, cos, sin], [y], name=name or None, domain=DOMAIN)


def rotary_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]


def attach_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``model`` the op's function body and the ``onnxport`` opset import (in place, idempotent).

    Models without rotary nodes get no function and, unless another op of the domain (``onnxport.Attention``)
    is used, no stray domain import.
    """
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(kept)
    if not rotary_nodes(model):
        if not any(n.domain == DOMAIN for n in model.graph.node):
            drop_opset(model, DOMAIN)
        return model
    model.functions.append(make_function(default_opset(model)))
    set_opset(model, DOMAIN, VERSION)
    return model


# ----------------------------------------------------------------------------- fused lowerings
def _cache_and_positions(node: onnx.NodeProto, prefix: str) -> tuple[list[onnx.NodeProto], str, str, str]:
    """Nodes turning (cos, sin) of shape (B'|1, 1, S, D/2) into position-indexed caches.

    cache = reshape(cos, (B' * S, D/2)); position_ids[b, s] = (b if B' > 1 else 0) * S + s,
    i.e. row-major indices into that cache, broadcast to (B, S). Works for B' = 1 and B' = B.
    """
    x, cos, sin = node.input
    n = lambda s: f"{prefix}/{s}"  # noqa: E731
    nodes = [
        _const_i64(n("flat"), [-1]),
        helper.make_node("Constant", [], [n("zero")], value=helper.make_tensor(n("zero"), TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], [n("one")], value=helper.make_tensor(n("one"), TensorProto.INT64, [], [1])),
        _const_i64(n("dims_bs"), [0, 2]),  # (B', S) of cos, (B, S) of X
        _const_i64(n("half_axis"), [3]),
        helper.make_node("Shape", [cos], [n("cos_shape")]),
        helper.make_node("Gather", [n("cos_shape"), n("dims_bs")], [n("cos_bs")], axis=0),
        helper.make_node("Gather", [n("cos_shape"), n("half_axis")], [n("half")], axis=0),
        helper.make_node("Concat", [n("flat"), n("half")], [n("cache_shape")], axis=0),
        helper.make_node("Reshape", [cos, n("cache_shape")], [n("cos_cache")]),
        helper.make_node("Reshape", [sin, n("cache_shape")], [n("sin_cache")]),
        helper.make_node("ReduceProd", [n("cos_bs")], [n("rows")], keepdims=0),
        helper.make_node("Range", [n("zero"), n("rows"), n("one")], [n("range")]),
        helper.make_node("Reshape", [n("range"), n("cos_bs")], [n("positions_bs")]),
        helper.make_node("Shape", [x], [n("x_shape")]),
        helper.make_node("Gather", [n("x_shape"), n("dims_bs")], [n("x_bs")], axis=0),
        helper.make_node("Expand", [n("positions_bs"), n("x_bs")], [n("position_ids")]),
    ]
    return nodes, n("cos_cache"), n("sin_cache"), n("position_ids")


def _lower(model: onnx.ModelProto, fused_inputs, domain: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every custom node as a fused ``RotaryEmbedding`` of ``domain``, interleaved
    like the custom op, whose inputs are ``fused_inputs(x, cos_cache, sin_cache, position_ids)``."""
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    new_nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(lowered.graph.node):
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            prefix = f"{node.name or 'rotary'}_{i}/fused"
            helpers, cos_cache, sin_cache, positions = _cache_and_positions(node, prefix)
            new_nodes.extend(helpers)
            new_nodes.append(helper.make_node(
                "RotaryEmbedding", fused_inputs(node.input[0], cos_cache, sin_cache, positions), list(node.output),
                name=f"{prefix}/RotaryEmbedding", domain=domain, interleaved=1))
        else:
            new_nodes.append(node)
    del lowered.graph.node[:]
    lowered.graph.node.extend(new_nodes)
    attach_function(lowered)  # drops the now unused function and domain import
    return lowered


def lower_to_contrib(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every custom node as ``com.microsoft.RotaryEmbedding`` (ONNX Runtime's fused kernel).

    Its inputs are (input (B, N, S, H), position_ids (B, S), cos_cache, sin_cache (max, H/2)).
    Note ReduceProd at opset >= 18 takes axes as an input; without it, all axes are reduced either way.
    """
    lowered = _lower(model, lambda x, cos_cache, sin_cache, positions: [x, positions, cos_cache, sin_cache],
                     domain="com.microsoft")
    set_opset(lowered, "com.microsoft", 1)
    return lowered


def lower_to_onnx23(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every custom node as the standard opset-23 ``RotaryEmbedding`` (interleaved=1).

    The model must already import opset >= 23 (our exporters write 17 by default; convert first).
    """
    opset = default_opset(model)
    if opset < 23:
        raise ValueError(
            f"The standard RotaryEmbedding op needs opset >= 23, the model imports {opset}; "
            "use lower_to_contrib for ONNX Runtime, or export with a higher opset."
        )
    return _lower(model, lambda x, cos_cache, sin_cache, positions: [x, cos_cache, sin_cache, positions])
