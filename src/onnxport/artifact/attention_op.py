"""The custom attention op ``onnxport.Attention`` (domain ``onnxport``, version 1).

Schema (the same from the PyTorch, TensorFlow and Flax exporters)::

    Y = onnxport.Attention(Q, K, V, mask_bias)      attributes: num_heads (int), scale (float)

    Q          float (batch, num_heads, q_sequence, head_dim)    heads split (rotary already applied)
    K          float (batch, num_heads, kv_sequence, head_dim)   past keys already concatenated in front
    V          float (batch, num_heads, kv_sequence, head_dim)
    mask_bias  float broadcastable to (batch, num_heads, q_sequence, kv_sequence): additive, 0 where a key
               is attended, the dtype's minimum where not (the reference encoders' extended mask:
               (batch, 1, 1, kv) for key padding, (batch, 1, q, kv) for causal decoders)
    Y          float (batch, q_sequence, num_heads * head_dim)   heads merged

    Y = merge_heads(softmax(Q @ K^T * scale + mask_bias) @ V)

The output is already heads-merged, as ONNX Runtime's ``com.microsoft.MultiHeadAttention`` returns it, so
the lowering replaces the node and nothing after it. ``num_heads`` is redundant with Q's shape; the lowering
needs it as an attribute. An exporter turns each call of the reference encoders' attention hook
(``TraceOptions.attention_op``) into one node.

The model carries an ONNX function (standard ops only) defining the op, so ``onnx.checker`` (full check),
shape inference, stock ONNX Runtime, onnxruntime-node/-web and ``onnx.reference`` run the file with nothing
registered. :func:`lower_to_contrib` rewrites every node into ``com.microsoft.MultiHeadAttention`` for
execution providers with that kernel (CPU, CUDA). ONNX Runtime's CPU kernel takes its flash-attention path
only when it gets no mask at all, so each lowered node is an ``If`` on "this batch's mask bias is all zero"
(no padding): one branch calls the kernel without a mask, the other with the mask: as ``key_padding_mask``
(batch, keys) when the bias is a per-key mask (shape (batch, 1, 1, keys) by shape inference: the encoders'
padding mask), else as ``attention_bias`` (a decoder's causal mask). One session serves both branches (the
weights are loaded once); the test is one reduction per distinct mask tensor, shared by every layer.

Why not the standard ONNX ``Attention`` (opset 23): the exports are opset 17 by default (the TF front end stops
at 18), and onnxruntime-web and older runtimes would need opset 23; a custom node with a function body runs
everywhere at any opset >= 13, and the runtime still picks the kernel (its flash path, the key-padding form)
at load. A lowering to the opset-23 op, like ``rotary_op.lower_to_onnx23``, is left for when it measures
better.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, TensorProto, helper

from .opsets import default_opset, drop_opset, set_opset

DOMAIN = "onnxport"
OP_TYPE = "Attention"
VERSION = 1
MIN_OPSET = 13  # Softmax over the last axis alone (opset 13 semantics)


def _const_i64(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def make_function(opset: int) -> onnx.FunctionProto:
    """The op's definition in standard ONNX ops, importing the model's default-domain ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"onnxport.Attention needs opset >= {MIN_OPSET}, got {opset}.")
    scale = helper.make_node("Constant", [], ["scale"])
    scale.attribute.append(helper.make_attribute_ref("value_float", AttributeProto.FLOAT))
    scale.attribute[0].ref_attr_name = "scale"
    nodes = [
        scale,
        _const_i64("merged", [0, 0, -1]),
        # The reference encoders' order: scores = Q K^T, scaled, masked, softmax over keys, times V.
        helper.make_node("Transpose", ["K"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["Q", "k_t"], ["scores"]),
        # The scale in the scores' type (fp16 graphs); CastLike is opset 15, below it graphs are fp32.
        helper.make_node("CastLike", ["scale", "scores"], ["scale_t"]) if opset >= 15 else
        helper.make_node("Identity", ["scale"], ["scale_t"]),
        helper.make_node("Mul", ["scores", "scale_t"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask_bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "V"], ["context"]),
        # (B, N, S, H) -> (B, S, N * H)
        helper.make_node("Transpose", ["context"], ["context_bsnh"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_bsnh", "merged"], ["Y"]),
    ]
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        inputs=["Q", "K", "V", "mask_bias"],
        outputs=["Y"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["num_heads", "scale"],
        doc_string="Scaled dot-product attention, heads merged; see onnxport.artifact.attention_op.",
    )


def make_node(q: str, k: str, v: str, mask_bias: str, y: str, num_heads: int, scale: float,
              name: str = "") -> onnx.NodeProto:
    """One custom node, for exporters that build graphs by hand (tf2onnx handlers, jax2onnx plugins)."""
    return helper.make_node(OP_TYPE, [q, k, v, mask_bias], [y], name=name or None, domain=DOMAIN,
                            num_heads=int(num_heads), scale=float(scale))


def attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]


def _custom_domain_used(model: onnx.ModelProto) -> bool:
    return any(n.domain == DOMAIN for n in model.graph.node)


def attach_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``model`` the op's function body and the ``onnxport`` opset import (in place, idempotent).

    Models without attention nodes are left without the function (the domain import stays while the rotary
    op, of the same domain, still uses it)."""
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(kept)
    if attention_nodes(model):
        model.functions.append(make_function(default_opset(model)))
        set_opset(model, DOMAIN, VERSION)
    elif not _custom_domain_used(model):
        drop_opset(model, DOMAIN)
    return model


# ----------------------------------------------------------------------------- the fused lowering
def _to_3d(x: str, prefix: str, merged: str) -> list[onnx.NodeProto]:
    """(B, N, S, H) -> (B, S, N * H), the layout the kernel's flash path reads (ONNX Runtime cancels the
    transpose against the one that split the heads where nothing sits between them)."""
    return [
        helper.make_node("Transpose", [x], [f"{prefix}/bsnh"], perm=[0, 2, 1, 3], name=f"{prefix}/Transpose"),
        helper.make_node("Reshape", [f"{prefix}/bsnh", merged], [f"{prefix}/3d"], name=f"{prefix}/Reshape"),
    ]


# What a masked key adds to the scores in the key-padding form: the reference encoders' fill (float32 minimum).
MASK_FILTER_VALUE = -3.4028234663852886e38


def _mha(prefix: str, q: str, k: str, v: str, mask: str, out: str, node: onnx.NodeProto,
         key_padding: bool = False) -> onnx.NodeProto:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = {}
    if not mask:
        inputs = [q, k, v]
    elif key_padding:  # key_padding_mask (B, L) int32: 1 attended, 0 masked (MASK_FILTER_VALUE added)
        inputs = [q, k, v, "", mask]
        extra["mask_filter_value"] = MASK_FILTER_VALUE
    else:
        inputs = [q, k, v, "", "", mask]  # attention_bias (B, 1, S, L)
    return helper.make_node("MultiHeadAttention", inputs, [out], name=f"{prefix}/MultiHeadAttention",
                            domain="com.microsoft", num_heads=int(attrs["num_heads"]), scale=float(attrs["scale"]),
                            **extra)


def key_padding_biases(model: onnx.ModelProto) -> set[str]:
    """Mask-bias inputs of the attention nodes whose shape is (batch, 1, 1, keys) by shape inference: a
    per-key mask, which the kernel takes in its key-padding form. Pass the graph without its weights
    (shape inference serialises the model); on any failure none (the attention_bias form is always right)."""
    biases = {n.input[3] for n in attention_nodes(model)}
    try:
        light = onnx.ModelProto()
        light.CopyFrom(model)
        del light.graph.initializer[:]  # shapes only: the initializers' types and shapes stay as graph inputs
        light.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                                 for i in model.graph.initializer)
        inferred = onnx.shape_inference.infer_shapes(light)
    except Exception:  # an ONNX version whose inference fails on some op: fall back, never break the load
        return set()
    found = set()
    for value in (*inferred.graph.value_info, *inferred.graph.input):
        if value.name in biases:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and all(d.HasField("dim_value") and d.dim_value == 1 for d in (dims[1], dims[2])):
                found.add(value.name)
    return found


def lower_to_contrib(model: onnx.ModelProto, mask_branch: bool = True, elem_type: int = TensorProto.FLOAT,
                     in_place: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with every ``onnxport.Attention`` as ONNX Runtime's ``com.microsoft.MultiHeadAttention``.

    Q, K and V go in as (B, S, N * H) (key/value in BNSH would bypass the CPU flash path). Each node becomes
    ``If(mask bias all zero, MHA without mask, MHA with the mask)``: a per-key bias (``key_padding_biases``)
    as ``key_padding_mask`` (B, L), any other expanded to (B, 1|N, S, L) as ``attention_bias``. ``in_place``: rewrite ``model`` itself (no copy of the
    weights) and return it. ``mask_branch=False`` drops the If and the bias (every call
    must then be unpadded: for measurements only). ``elem_type``: the attention's float type (the If
    branches declare their output's)."""
    if in_place:
        lowered = model
    else:
        lowered = onnx.ModelProto()
        lowered.CopyFrom(model)
    new_nodes: list[onnx.NodeProto] = []
    conditions: dict[str, str] = {}  # mask tensor -> its "all zero" boolean, computed once
    key_padding = key_padding_biases(lowered) if mask_branch else set()
    key_masks: dict[str, str] = {}  # per-key mask bias -> its (B, L) int32 key_padding_mask, computed once
    merged = "onnxport_attention/merged_shape"
    if attention_nodes(lowered):
        new_nodes.append(_const_i64(merged, [0, 0, -1]))
    for i, node in enumerate(lowered.graph.node):
        if not (node.domain == DOMAIN and node.op_type == OP_TYPE):
            new_nodes.append(node)
            continue
        prefix = f"{node.name or 'attention'}_{i}/fused"
        q, k, v, bias = node.input
        for name, x in (("q", q), ("k", k), ("v", v)):
            new_nodes.extend(_to_3d(x, f"{prefix}/{name}", merged))
        q3, k3, v3 = (f"{prefix}/{name}/3d" for name in ("q", "k", "v"))
        if not mask_branch:
            new_nodes.append(_mha(prefix, q3, k3, v3, "", node.output[0], node))
            continue
        if bias not in conditions:
            c = f"onnxport_attention/{len(conditions)}"
            new_nodes += [
                helper.make_node("Abs", [bias], [f"{c}/abs"]),
                helper.make_node("ReduceMax", [f"{c}/abs"], [f"{c}/max"], keepdims=0),
                helper.make_node("Constant", [], [f"{c}/zero"], value=helper.make_tensor(
                    f"{c}/zero", TensorProto.FLOAT, [], [0.0])),
                helper.make_node("CastLike", [f"{c}/zero", f"{c}/max"], [f"{c}/zero_t"]),
                helper.make_node("Equal", [f"{c}/max", f"{c}/zero_t"], [f"{c}/unmasked"]),
            ]
            conditions[bias] = f"{c}/unmasked"
        else_out = f"{prefix}/masked_out"
        if bias in key_padding:
            if bias not in key_masks:
                c = f"onnxport_attention/key_mask_{len(key_masks)}"
                new_nodes += [
                    _const_i64(f"{c}/bl", [0, -1]),
                    helper.make_node("Reshape", [bias, f"{c}/bl"], [f"{c}/flat"]),  # (B, 1, 1, L) -> (B, L)
                    helper.make_node("Constant", [], [f"{c}/zero"], value=helper.make_tensor(
                        f"{c}/zero", TensorProto.FLOAT, [], [0.0])),
                    helper.make_node("CastLike", [f"{c}/zero", f"{c}/flat"], [f"{c}/zero_t"]),
                    helper.make_node("Equal", [f"{c}/flat", f"{c}/zero_t"], [f"{c}/kept"]),
                    helper.make_node("Cast", [f"{c}/kept"], [f"{c}/mask"], to=TensorProto.INT32),
                ]
                key_masks[bias] = f"{c}/mask"
            else_nodes = [_mha(f"{prefix}/masked", q3, k3, v3, key_masks[bias], else_out, node, key_padding=True)]
        else:
            else_nodes = _bias_branch(prefix, q, q3, k3, v3, bias, else_out, node)
        then_out = f"{prefix}/unmasked_out"
        then_graph = helper.make_graph(
            [_mha(f"{prefix}/unmasked", q3, k3, v3, "", then_out, node)], f"{prefix}_unmasked", [],
            [helper.make_tensor_value_info(then_out, elem_type, None)])
        else_graph = helper.make_graph(else_nodes, f"{prefix}_masked", [],
                                       [helper.make_tensor_value_info(else_out, elem_type, None)])
        new_nodes.append(helper.make_node("If", [conditions[bias]], [node.output[0]], name=f"{prefix}/If",
                                          then_branch=then_graph, else_branch=else_graph))
    del lowered.graph.node[:]
    lowered.graph.node.extend(new_nodes)
    attach_function(lowered)  # drops the now unused function (and the domain import if nothing else uses it)
    set_opset(lowered, "com.microsoft", 1)
    return lowered


def _bias_branch(prefix: str, q: str, q3: str, k3: str, v3: str, bias: str, out: str,
                 node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The masked branch's nodes for a general mask bias: expanded to (B, 1|N, S, L) as attention_bias."""
    # (B, 1|N, 1|S, L) -> (B, 1|N, S, L): the kernel takes no broadcast over the query axis.
    return [
            helper.make_node("Shape", [q], [f"{prefix}/q_shape"]),
            helper.make_node("Shape", [bias], [f"{prefix}/bias_shape"]),
            _const_i64(f"{prefix}/ax2", [2]),
            _const_i64(f"{prefix}/ax01", [0, 1]),
            _const_i64(f"{prefix}/ax3", [3]),
            helper.make_node("Gather", [f"{prefix}/bias_shape", f"{prefix}/ax01"], [f"{prefix}/bn"], axis=0),
            helper.make_node("Gather", [f"{prefix}/q_shape", f"{prefix}/ax2"], [f"{prefix}/s"], axis=0),
            helper.make_node("Gather", [f"{prefix}/bias_shape", f"{prefix}/ax3"], [f"{prefix}/l"], axis=0),
            helper.make_node("Concat", [f"{prefix}/bn", f"{prefix}/s", f"{prefix}/l"], [f"{prefix}/bias_to"],
                             axis=0),
            helper.make_node("Expand", [bias, f"{prefix}/bias_to"], [f"{prefix}/bias_full"]),
            _mha(f"{prefix}/masked", q3, k3, v3, f"{prefix}/bias_full", out, node),
    ]


# Where ONNX Runtime finds the external weights of a model handed over as bytes (a lowered graph).
EXTERNAL_WEIGHTS_FOLDER = "session.model_external_initializers_file_folder_path"


def lower_custom_ops(model: onnx.ModelProto, *, rotary: bool = True, attention: bool = True) -> onnx.ModelProto:
    """``model`` with its custom nodes as ONNX Runtime's fused kernels (com.microsoft RotaryEmbedding and
    MultiHeadAttention), as the runtime serves it on CPU and CUDA. ``model`` itself is rewritten (pass a graph
    read for this purpose; its external weights may stay on disk, see ``EXTERNAL_WEIGHTS_FOLDER``)."""
    from . import rotary_op

    if rotary and rotary_op.rotary_nodes(model):
        model = rotary_op.lower_to_contrib(model)
    if attention and attention_nodes(model):
        model = lower_to_contrib(model, in_place=True)
    return model
