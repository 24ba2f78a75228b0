"""TensorFlow front end: tf2onnx conversion of a ``tf.function`` over the onnxport TF reference models.

The model is traced once into a ``tf.function`` whose input signature is the io
spec (every ``str`` dimension ``None``, ids int64), then handed to
``tf2onnx.convert.from_function``. Four things need care:

* **Weights.** tf2onnx would freeze every variable into a constant inside the graph it
  optimises, then re-serialise those constants after each of its ~24 optimiser passes
  (and deep-copy the graph before each): a one-layer, 50k-vocabulary, 768-wide RoFormer
  took 90 s and 17 GB, a base model was killed for lack of memory, and TF's frozen
  GraphDef cannot pass 2 GB anyway. So the weights enter the traced function as extra
  inputs (each module's variable attributes read the input tensors while tracing), and
  become initializers -- named by their HF parameter names, ``.T`` where TF stores the
  transpose (Linear kernels) -- after conversion. Tied weights are one variable, so one
  input and one initializer.

* **The rotary op.** While tracing, the export's ``tracing(rotary_op=...)`` replaces each
  ``apply_rotary(x, sin, cos)`` by one ``tf.numpy_function`` node taking
  ``(x, cos, sin)`` -- an opaque op that TF's grappler and tf2onnx's optimisers
  cannot split, fold or fuse with its neighbours, so each rotary application
  survives as exactly one node. A tf2onnx custom-op handler then turns exactly
  those nodes (checked by their registration token) into ``onnxport.RotaryEmbedding``.
  The numpy function is never executed: native runs do not use the hook.
* **Input checks.** The encoder's graph-mode value asserts (``TraceOptions.graph_input_checks``)
  are switched off while tracing: the runtime checks inputs against the io spec,
  and Assert nodes do not belong in the artifact.
* **Names and determinism.** Two conversions of one model differ in node order and
  names (which of two equal sub-expressions grappler / tf2onnx keep, counter-numbered
  constants). The graph is put in a canonical order and renamed from its structure
  (``_canonical_graph``), so the same checkpoint exported twice gives byte-identical
  files; weights that are checkpoint parameters carry their HF names. Graph inputs and
  outputs take the io spec's names, order and symbolic dimension names.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import ExportError
from .front_end import (RANDOM_INIT_SEED, Converted, ExportJob, call_with_spec, check_attention_count, check_opset,
                        export_tracing, load_reference_model, native_runner)
from .graph_edits import apply_tensor_spec, initializer_digest, rename_tensors, replace_values
from ..artifact import attention_op
from ..artifact.rotary_op import DOMAIN, OP_TYPE, VERSION

logger = logging.getLogger("onnxport")

# tf2onnx 1.17 writes default-domain opsets up to 18 (its opset -> IR table stops there);
# the rotary function body needs 13+, and we keep the same floor as the PyTorch front end.
MIN_OPSET, MAX_OPSET = 14, 18

# tf.numpy_function(stateful=False) traces to this TF op type.
_MARKER_OP = "PyFuncStateless"
# tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS (read by tf2onnx.convert for its optimiser loop).
_CATCH_ERRORS_ENV = "TF2ONNX_CATCH_ERRORS"


def convert(job: ExportJob) -> Converted:
    """The front-end contract (``front_end.py``): raw ONNX model + a native runner."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnx
    import tensorflow as tf
    import tf2onnx

    from ..reference_models.tf import model_class
    from ..reference_models.tf.layers import variables_read_as

    check_opset(job, MIN_OPSET, MAX_OPSET, f"TensorFlow exporter (tf2onnx {tf2onnx.__version__})")

    def build(cls):
        tf.keras.utils.set_random_seed(RANDOM_INIT_SEED)  # weights the checkpoint lacks are reproducible
        return cls(job.config)

    model, random_weights = load_reference_model(job, model_class, build)

    spec = job.spec
    signature = [
        tf.TensorSpec([None if isinstance(d, str) else d for d in t.shape], tf.as_dtype(t.dtype), name=f"input_{i}")
        for i, t in enumerate(spec.inputs)
    ]
    # Weights enter the traced function as inputs, not as frozen constants (see the module docstring).
    weights = _weights(model)
    weight_signature = [tf.TensorSpec(w.variable.shape, w.variable.dtype, name=f"weight_{i}")
                        for i, w in enumerate(weights)]

    @tf.function(input_signature=signature + weight_signature, autograph=False)
    def serving(*args):
        inputs, tensors = args[: len(signature)], args[len(signature):]
        with variables_read_as(model, {id(w.variable): t for w, t in zip(weights, tensors)}):
            return call_with_spec(model, spec, inputs, training=False)

    tokens: set[str] = set()
    attention_tokens: dict[str, tuple[int, float]] = {}  # marker token -> (num_heads, scale)
    # Trace and convert inside the block: tf2onnx looks the concrete function up again and must see the
    # same trace (rotary markers, no asserts). ``serving`` is a fresh tf.function, so no trace of it
    # outlives the block; run_native runs the full model eagerly.
    with export_tracing(spec, _rotary_marker(tokens), _attention_marker(attention_tokens)), _tf2onnx_settings():
        concrete = serving.get_concrete_function()
        input_tensors = [t for t in concrete.inputs if t.dtype != tf.resource]
        output_tensors = list(concrete.outputs)
        if len(input_tensors) != len(spec.inputs) + len(weights) or len(output_tensors) != len(spec.outputs):
            raise ExportError(f"Traced {len(input_tensors)} inputs / {len(output_tensors)} outputs, expected "
                              f"{len(spec.inputs)} + {len(weights)} weights / {len(spec.outputs)}.")
        if job.family.rotary and not tokens:
            raise ExportError("Tracing the RoFormer model produced no rotary applications; the export hook did not fire.")
        # tf2onnx's custom handler tuple: (handler, [onnx op type the node becomes, *handler args]).
        handlers = {_MARKER_OP: (_marker_handler, [OP_TYPE, frozenset(tokens), dict(attention_tokens)])}
        raw, _ = tf2onnx.convert.from_function(
            serving,
            input_signature=signature + weight_signature,
            opset=job.opset,
            custom_op_handlers=handlers,
            extra_opset=[onnx.helper.make_opsetid(DOMAIN, VERSION)],
        )
    # from_function converts with continue_on_error: an op without a tf2onnx handler (e.g. Erfc) or a
    # failed handler only logs and leaves the TF op in the graph, so check the result here.
    leftover = sorted({n.op_type for n in raw.graph.node
                       if (n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type))
                       or n.domain not in ("", "ai.onnx", DOMAIN)})
    rotary = sum(n.domain == DOMAIN and n.op_type == OP_TYPE for n in raw.graph.node)
    if leftover or rotary != len(tokens):
        raise ExportError(f"tf2onnx could not convert the model completely: TensorFlow ops without an ONNX "
                          f"conversion: {', '.join(leftover) or 'none'}; {rotary} of {len(tokens)} rotary "
                          f"applications became {DOMAIN}.{OP_TYPE} nodes.")
    check_attention_count(raw, job)
    tf_names = [t.name for t in input_tensors]
    weight_names = _weights_to_initializers(raw, tf_names[len(spec.inputs):], weights)
    _rename_io(raw, spec, tf_names[: len(spec.inputs)], [t.name for t in output_tensors])
    _drop_unused_domains(raw)
    _canonical_graph(raw, weight_names)

    run_native = native_runner(spec, lambda *args: call_with_spec(model, spec, args, training=False),
                               lambda array, tensor: tf.constant(array), lambda out: out.numpy())
    return Converted(model=raw, run_native=run_native,
                     versions={"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
                     random_weights=random_weights)


# ----------------------------------------------------------------------------- weights as graph inputs
@dataclass
class _Weight:
    name: str  # initializer name: the HF parameter name, "+.T" when TF stores it transposed (Linear kernels)
    variable: object  # tf.Variable


def _weights(model) -> list[_Weight]:
    """Each distinct variable once (tied ones share), in checkpoint order, with its initializer name."""
    seen: set[int] = set()
    weights = []
    for name, param in model.named_parameters():
        if id(param.variable) in seen:
            continue
        seen.add(id(param.variable))
        weights.append(_Weight(f"{name}.T" if param.transposed else name, param.variable))
    return weights


def _weights_to_initializers(model, tf_names: list[str], weights: list[_Weight]) -> dict[str, str]:
    """The weight graph inputs become initializers holding the variables' values; returns {input name: HF name}."""
    from onnx import numpy_helper

    graph = model.graph
    names = {_tensor_name(model, n, inputs=True): w for n, w in zip(tf_names, weights)}
    kept = [v for v in graph.input if v.name not in names]
    if len(kept) != len(graph.input) - len(names):
        raise ExportError("tf2onnx did not keep every weight as a graph input.")
    replace_values(graph.input, kept)
    for onnx_name, weight in names.items():
        graph.initializer.append(numpy_helper.from_array(weight.variable.numpy(), onnx_name))
    return {onnx_name: weight.name for onnx_name, weight in names.items()}


# ----------------------------------------------------------------------------- the rotary op
def _rotary_marker(tokens: set[str]):
    """The hook: one opaque TF op per rotary application, inputs in the ONNX op's order (x, cos, sin)."""
    import tensorflow as tf

    def hook(x, sin, cos):
        y = tf.numpy_function(_never_run, [x, cos, sin], Tout=x.dtype, stateful=False, name="onnxport_rotary")
        token = y.op.get_attr("token")
        tokens.add(token.decode() if isinstance(token, bytes) else token)
        # The op's output has unknown shape to TF; restore x's (tf2onnx's handlers downstream use the rank).
        return tf.ensure_shape(y, x.shape)

    return hook


def _never_run(*inputs):  # pragma: no cover - the marker ops only exist in the traced export graph
    raise RuntimeError("An onnxport export marker was executed; it only exists for tf2onnx.")


def _attention_marker(tokens: dict[str, tuple[int, float]]):
    """The attention hook: one opaque TF op per attention, inputs in the ONNX op's order (q, k, v, mask_bias);
    its attributes are kept beside its token."""
    import tensorflow as tf

    def hook(query, key, value, mask_bias, num_heads, scale):
        y = tf.numpy_function(_never_run, [query, key, value, mask_bias], Tout=query.dtype, stateful=False,
                              name="onnxport_attention")
        token = y.op.get_attr("token")
        tokens[token.decode() if isinstance(token, bytes) else token] = (int(num_heads), float(scale))
        # (batch, rows, heads * head_dim): heads and head_dim are static.
        return tf.ensure_shape(y, [None, None, query.shape[1] * query.shape[3]])

    return hook


def _marker_handler(ctx, node, name, args):
    """tf2onnx custom-op handler: our marker ops -> ``onnxport.RotaryEmbedding(x, cos, sin)`` or
    ``onnxport.Attention(q, k, v, mask_bias)``, nothing else."""
    rotary_tokens, attention_tokens = args
    token = node.get_attr_str("token")
    if token not in rotary_tokens and token not in attention_tokens:
        raise ExportError(f"The traced graph holds a foreign Python op {node.name} ({token}); cannot export it.")
    for attr in list(node.attr):
        del node.attr[attr]
    node.domain = DOMAIN
    ctx.set_dtype(node.output[0], ctx.get_dtype(node.input[0]))
    if token in rotary_tokens:
        node.type = OP_TYPE
        ctx.set_shape(node.output[0], ctx.get_shape(node.input[0]))
        return node
    num_heads, scale = attention_tokens[token]
    node.type = attention_op.OP_TYPE
    node.set_attr("num_heads", num_heads)
    node.set_attr("scale", scale)
    q_shape = ctx.get_shape(node.input[0])
    hidden = q_shape[1] * q_shape[3] if q_shape and len(q_shape) == 4 and min(q_shape[1], q_shape[3]) > 0 else -1
    ctx.set_shape(node.output[0], [-1, -1, hidden])
    return node


@contextlib.contextmanager
def _tf2onnx_settings() -> Iterator[None]:
    """tf2onnx quiet (errors only unless onnxport's logger is in debug), and its optimisers without
    ``catch_errors``: with it, tf2onnx deep-copies the whole graph, weights included, before each
    optimiser pass (a 1-layer, 50k-vocab, 768-wide RoFormer took 17 GB and 90 s; without, ~2 GB and
    ~20 s). An optimiser failure then raises instead of being skipped silently, which we prefer."""
    names = ("tf2onnx", "tensorflow")
    saved = {n: logging.getLogger(n).level for n in names}
    saved_env = os.environ.get(_CATCH_ERRORS_ENV)
    if not logger.isEnabledFor(logging.DEBUG):
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
    os.environ[_CATCH_ERRORS_ENV] = "FALSE"
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        if saved_env is None:
            os.environ.pop(_CATCH_ERRORS_ENV, None)
        else:
            os.environ[_CATCH_ERRORS_ENV] = saved_env


# ----------------------------------------------------------------------------- graph signature
def _rename_io(model, spec, tf_inputs: list[str], tf_outputs: list[str]) -> None:
    """Graph inputs/outputs -> the io spec's names, order and symbolic dimension names."""
    graph = model.graph
    in_map = {_tensor_name(model, n, inputs=True): new for n, new in zip(tf_inputs, spec.input_names)}
    out_map = {_tensor_name(model, n, inputs=False): new for n, new in zip(tf_outputs, spec.output_names)}
    missing = [n for n in (*in_map, *out_map) if n not in {v.name for v in (*graph.input, *graph.output)}]
    if missing:
        raise ExportError(f"tf2onnx did not produce the graph tensors {missing}.")
    rename_tensors(graph, {**in_map, **out_map})
    for values, names, tensors in ((graph.input, in_map, spec.inputs), (graph.output, out_map, spec.outputs)):
        by_name = {v.name: v for v in values}
        ordered = [by_name[old] for old in names]
        for value, tensor in zip(ordered, tensors):
            apply_tensor_spec(value, tensor, "tf2onnx")
        replace_values(values, ordered)


def _tensor_name(model, tf_name: str, inputs: bool) -> str:
    """tf2onnx keeps TF tensor names (``input_0:0``) for inputs; outputs may have been renamed to ``output_i``."""
    names = {v.name for v in (model.graph.input if inputs else model.graph.output)}
    return tf_name if tf_name in names else tf_name.split(":")[0]


def _canonical_graph(model, initializer_names: dict[str, str]) -> None:
    """Give the graph an order and names that depend only on what it computes.

    Two conversions of one model can differ in node order and names (which of two equal
    sub-expressions grappler / tf2onnx keep, constant names from counters). Each tensor gets
    a structural signature (op, attributes, signatures of its inputs; initializers by content),
    nodes are topologically sorted with ties broken by signature, then renamed by position.
    Weights take the names in ``initializer_names`` (HF names); other constants ``const_<k>``.
    """
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    tensor_sig: dict[str, str] = {"": ""}
    for value in graph.input:
        tensor_sig[value.name] = "input:" + value.name
    init_key = {init.name: initializer_names.get(init.name) or initializer_digest(init) for init in graph.initializer}
    tensor_sig.update({name: "init:" + key for name, key in init_key.items()})
    node_sig = []
    for node in graph.node:  # ONNX graphs are stored in a topological order
        h = hashlib.sha256(f"{node.domain}::{node.op_type}".encode())
        for attr in sorted(node.attribute, key=lambda a: a.name):
            h.update(attr.SerializeToString(deterministic=True))
        for name in node.input:
            h.update(b"|" + tensor_sig[name].encode())
        sig = h.hexdigest()
        node_sig.append(sig)
        for j, out in enumerate(node.output):
            tensor_sig[out] = f"{sig}:{j}"

    # Kahn's algorithm, smallest signature first.
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    waiting = [len({producer[n] for n in node.input if n in producer}) for node in graph.node]
    consumers: dict[int, set[int]] = {}
    for i, node in enumerate(graph.node):
        for p in {producer[n] for n in node.input if n in producer}:
            consumers.setdefault(p, set()).add(i)
    ready = [(node_sig[i], i) for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for c in consumers.get(i, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (node_sig[c], c))
    if len(order) != len(graph.node):
        raise ExportError("The converted graph has a cycle.")

    rename: dict[str, str] = {}
    used = set(keep)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    nodes = [graph.node[i] for i in order]
    for k, node in enumerate(nodes):
        for name in node.input:
            if name in init_key and name not in rename:
                rename[name] = fresh(initializer_names.get(name, f"const_{len(rename)}"))
        node.name = f"{node.op_type}_{k}"
        for j, out in enumerate(node.output):
            if out and out not in keep:
                rename[out] = fresh(f"{node.op_type}_{k}" + (f":{j}" if j else ""))
    for node in nodes:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    # In place (no copy of the weights): drop unused initializers, rename, sort by name.
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in rename:
            del graph.initializer[i]
    for init in graph.initializer:
        init.name = rename[init.name]
    graph.initializer.sort(key=lambda init: init.name)
    new_nodes = [type(n)() for n in nodes]
    for dst, src in zip(new_nodes, nodes):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # intermediate shapes: onnx shape inference recomputes them
    graph.doc_string = ""  # tf2onnx writes the traced function's numbered name here


def _drop_unused_domains(model) -> None:
    """tf2onnx always imports ai.onnx.ml; keep only domains the graph's nodes use (plus the default one)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [imp for imp in model.opset_import if imp.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
