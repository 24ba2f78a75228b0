"""Flax/JAX front end: jax2onnx conversion of the onnxport Flax reference models.

The traced function is the public model call (``model(**inputs, params=...)``, the same call
``run_native`` makes), with the io spec's inputs as positional arguments and the spec's outputs
returned in order. jax2onnx traces it with symbolic dimensions (``jax.export.symbolic_shape``)
named as the io spec names them, so batch, sequence, choices and past length stay dynamic.

Three things are specific to JAX:

* Rotary: while converting (``tracing(rotary_op=...)``), the Flax encoder's ``apply_rotary`` binds
  a custom JAX primitive (``onnxport_rotary_embedding``) instead of the formula; a jax2onnx primitive
  plugin lowers each binding to exactly one ``onnxport.RotaryEmbedding(x, cos, sin)`` node. The
  primitive also has an eager implementation and an XLA lowering (the op's formula), so a
  ``jax.jit`` trace that somehow kept it still computes the right numbers.
* Integer inputs: jax2onnx traces with 64-bit types disabled unless every float becomes
  float64 too (``enable_double_precision``), and the models index with int32 anyway. So the
  graph is traced with int32 ids/masks and then its integer inputs are declared int64 (the io
  spec's dtype) followed by one ``Cast`` to int32 each. No global JAX setting is changed.
  Values are token ids, type ids and 0/1 masks, far inside int32.
* Names: graph inputs/outputs and their dimension names are set from the io spec after
  conversion (jax2onnx names sums of symbols in its own way, e.g. for ``past + sequence``).
  Weight initializers (jax2onnx's ``const_N``) are renamed to checkpoint names by content.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

from .._quiet import logger_level
from ..errors import ExportError
from .front_end import (RANDOM_INIT_SEED, Converted, ExportJob, call_with_spec, check_attention_count, check_opset,
                        export_tracing, load_reference_model, native_runner)
from .graph_edits import apply_tensor_spec, array_digest, rename_tensors
from ..artifact import attention_op
from ..artifact.rotary_op import DOMAIN, OP_TYPE, VERSION

logger = logging.getLogger("onnxport")

# jax2onnx writes opsets up to 23; below 17 its LayerNorm / reduction lowerings are not exercised here,
# and 23 is the highest the artifact's IR-version bound (ONNX Runtime 1.31) allows.
MIN_OPSET, MAX_OPSET = 17, 23

ROTARY_PRIMITIVE_NAME = "onnxport_rotary_embedding"
ATTENTION_PRIMITIVE_NAME = "onnxport_attention"
_INT_DTYPES = ("int64", "int32")


# ----------------------------------------------------------------------------- the rotary primitive
def _rotary_formula(x, cos, sin):
    """The op's defining formula (rotary_op docstring), equal to the encoder's apply_rotary."""
    import jax.numpy as jnp

    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    y_even = x_even * cos - x_odd * sin
    y_odd = x_odd * cos + x_even * sin
    return jnp.stack([y_even, y_odd], axis=-1).reshape(x.shape)


def _make_rotary_primitive():
    import jax
    from jax.extend.core import Primitive
    from jax.interpreters import mlir

    primitive = Primitive(ROTARY_PRIMITIVE_NAME)
    primitive.def_impl(_rotary_formula)
    primitive.def_abstract_eval(lambda x, cos, sin: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(primitive, mlir.lower_fun(_rotary_formula, multiple_results=False))
    return primitive


@functools.cache
def _rotary_primitive():
    """The primitive, created (and its jax2onnx plugin registered) once, on first use: importing this module
    stays cheap."""
    primitive = _make_rotary_primitive()
    _register_rotary_plugin(primitive)
    return primitive


def _register_rotary_plugin(primitive) -> None:
    """A jax2onnx leaf plugin: each binding of the primitive -> one onnxport.RotaryEmbedding node."""
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin, register_primitive

    @register_primitive(
        jaxpr_primitive=ROTARY_PRIMITIVE_NAME,
        jax_doc="onnxport.reference_models.flax.encoder.apply_rotary",
        onnx=[{"component": f"{DOMAIN}.{OP_TYPE}", "doc": "onnxport.exporters.rotary_op"}],
        since="onnxport",
        context="primitives.onnxport",
        component="rotary_embedding",
        testcases=[],
    )
    class RotaryEmbeddingPlugin(PrimitiveLeafPlugin):
        _PRIM = primitive

        def lower(self, ctx, eqn) -> None:
            x_var, cos_var, sin_var = eqn.invars
            (out_var,) = eqn.outvars
            x = ctx.get_value_for_var(x_var, name_hint=ctx.fresh_name("rotary_x"))
            cos = ctx.get_value_for_var(cos_var, name_hint=ctx.fresh_name("rotary_cos"))
            sin = ctx.get_value_for_var(sin_var, name_hint=ctx.fresh_name("rotary_sin"))
            out_spec = ctx.get_value_for_var(out_var, name_hint=ctx.fresh_name("rotary_out"))
            y = ctx.builder.RotaryEmbedding(
                x, cos, sin, _domain=DOMAIN, _version=VERSION, _outputs=[out_spec.name]
            )
            y.type = out_spec.type if out_spec.type is not None else x.type
            _stamp_type_and_shape(y, tuple(out_var.aval.shape))
            _ensure_value_metadata(ctx, y)
            ctx.bind_value_for_var(out_var, y)


def _bind_rotary(x, sin, cos):
    """apply_rotary's arguments (x, sin, cos) -> one binding of the primitive (inputs x, cos, sin)."""
    return _rotary_primitive().bind(x, cos, sin)


# ----------------------------------------------------------------------------- the attention primitive
def _attention_formula(query, key, value, mask_bias, *, num_heads, scale):
    """The op's defining formula (attention_op docstring), heads merged."""
    import jax
    import jax.numpy as jnp

    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key) * scale + mask_bias
    context = jnp.einsum("bhqk,bhkd->bqhd", jax.nn.softmax(scores, axis=-1), value)
    return context.reshape(context.shape[0], context.shape[1], -1)


def _make_attention_primitive():
    import jax
    from jax.extend.core import Primitive
    from jax.interpreters import mlir

    primitive = Primitive(ATTENTION_PRIMITIVE_NAME)
    primitive.def_impl(_attention_formula)

    def abstract(query, key, value, mask_bias, *, num_heads, scale):
        batch, heads, rows, head_dim = query.shape
        return jax.core.ShapedArray((batch, rows, heads * head_dim), query.dtype)

    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, mlir.lower_fun(_attention_formula, multiple_results=False))
    return primitive


@functools.cache
def _attention_primitive():
    """Created (and its jax2onnx plugin registered) once, on first use, like the rotary primitive."""
    primitive = _make_attention_primitive()
    _register_attention_plugin(primitive)
    return primitive


def _register_attention_plugin(primitive) -> None:
    """A jax2onnx leaf plugin: each binding of the primitive -> one onnxport.Attention node."""
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin, register_primitive

    @register_primitive(
        jaxpr_primitive=ATTENTION_PRIMITIVE_NAME,
        jax_doc="onnxport.reference_models.flax.encoder.SelfAttention",
        onnx=[{"component": f"{attention_op.DOMAIN}.{attention_op.OP_TYPE}", "doc": "onnxport.artifact.attention_op"}],
        since="onnxport",
        context="primitives.onnxport",
        component="attention",
        testcases=[],
    )
    class AttentionPlugin(PrimitiveLeafPlugin):
        _PRIM = primitive

        def lower(self, ctx, eqn) -> None:
            (out_var,) = eqn.outvars
            inputs = [ctx.get_value_for_var(var, name_hint=ctx.fresh_name(f"attention_{hint}"))
                      for var, hint in zip(eqn.invars, ("q", "k", "v", "mask"))]
            out_spec = ctx.get_value_for_var(out_var, name_hint=ctx.fresh_name("attention_out"))
            y = ctx.builder.Attention(
                *inputs, _domain=attention_op.DOMAIN, _version=attention_op.VERSION, _outputs=[out_spec.name],
                num_heads=int(eqn.params["num_heads"]), scale=float(eqn.params["scale"]),
            )
            y.type = out_spec.type if out_spec.type is not None else inputs[0].type
            _stamp_type_and_shape(y, tuple(out_var.aval.shape))
            _ensure_value_metadata(ctx, y)
            ctx.bind_value_for_var(out_var, y)


def _bind_attention(query, key, value, mask_bias, num_heads, scale):
    return _attention_primitive().bind(query, key, value, mask_bias, num_heads=int(num_heads), scale=float(scale))


# ----------------------------------------------------------------------------- convert
def convert(job: ExportJob) -> Converted:
    """The front-end contract (``front_end.py``): raw ONNX model + a native runner."""
    import flax
    import jax
    import jax2onnx

    from ..reference_models.flax import model_class

    check_opset(job, MIN_OPSET, MAX_OPSET, "Flax exporter")
    spec = job.spec
    # Weights come from the checkpoint; missing ones (allow_missing_weights) from the fixed seed.
    model, random_weights = load_reference_model(
        job, model_class, lambda cls: cls(job.config, seed=RANDOM_INIT_SEED, _do_init=False))
    params = model.params

    def forward(*args):
        return call_with_spec(model, spec, args, params=params)

    # The options are read while jax2onnx traces (symbolic shapes), a fresh trace; run_native (outside the
    # block, concrete shapes) runs the full model.
    _rotary_primitive()  # registers the jax2onnx plugins before the trace
    _attention_primitive()
    with export_tracing(spec, _bind_rotary, _bind_attention), \
            logger_level("onnx_ir.serde", logging.ERROR):  # a warning per untyped shape constant, hundreds
        raw = jax2onnx.to_onnx(
            forward,
            _input_structs(spec),
            model_name=f"{job.family.class_prefix}{spec.head}",
            opset=job.opset,
            input_names=spec.input_names,
            output_names=spec.output_names,
        )
    _int64_inputs(raw, spec)
    _io_shapes_from_spec(raw, spec)
    _check_rotary_count(raw, job)
    check_attention_count(raw, job)
    _name_weights(raw, model)

    run_native = native_runner(spec, forward, lambda array, tensor: _to_traced_dtype(array, tensor.dtype), np.asarray)
    versions = {"jax": jax.__version__, "flax": flax.__version__,
                "jax2onnx": getattr(jax2onnx, "__version__", None) or _dist_version("jax2onnx")}
    return Converted(model=raw, run_native=run_native, versions=versions, random_weights=random_weights)


def _to_traced_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    # The graph is traced with int32 ids (see the module docstring); the native call gets the same.
    return np.asarray(array, dtype=np.int32 if dtype in _INT_DTYPES else dtype)


def _symbols(spec) -> dict[str, Any]:
    """Every io-spec dimension name -> a JAX symbolic dimension (sums like "a + b" built from their parts)."""
    import jax

    names: list[str] = []
    for tensor in (*spec.inputs, *spec.outputs):
        for dim in tensor.shape:
            if isinstance(dim, str):
                for part in _parts(dim):
                    if part not in names:
                        names.append(part)
    symbols = dict(zip(names, jax.export.symbolic_shape(", ".join(names)))) if names else {}
    return symbols


def _parts(dim: str) -> list[str]:
    parts = [p.strip() for p in dim.split("+")]
    for part in parts:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            raise ExportError(f"Cannot express the io-spec dimension {dim!r} as a sum of symbols for jax2onnx.")
    return parts


def _input_structs(spec) -> list:
    import jax

    symbols = _symbols(spec)

    def dim(d):
        return sum((symbols[p] for p in _parts(d)), start=0) if isinstance(d, str) else int(d)

    structs = []
    for t in spec.inputs:
        dtype = np.int32 if t.dtype in _INT_DTYPES else np.dtype(t.dtype)
        structs.append(jax.ShapeDtypeStruct(tuple(dim(d) for d in t.shape), dtype))
    return structs


# ----------------------------------------------------------------------------- graph fix-ups
def _int64_inputs(model: onnx.ModelProto, spec) -> None:
    """Declare integer graph inputs with the io spec's dtype (int64); cast once to the traced int32."""
    graph = model.graph
    casts = []
    for value in graph.input:
        want = next(t for t in spec.inputs if t.name == value.name).dtype
        elem = value.type.tensor_type.elem_type
        if want != "int64" or elem == TensorProto.INT64:
            continue
        if elem != TensorProto.INT32:
            raise ExportError(f"jax2onnx gave input {value.name!r} element type {elem}, expected int32.")
        inner = f"{value.name}/int32"
        rename_tensors(graph, {value.name: inner})  # its consumers read the cast; the graph input keeps its name
        for out in graph.output:
            if out.name == value.name:  # pragma: no cover - no io spec passes an input through
                raise ExportError(f"Input {value.name!r} is also a graph output.")
        value.type.tensor_type.elem_type = TensorProto.INT64
        casts.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.INT32, name=f"{value.name}/cast"))
    if casts:
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)


def _io_shapes_from_spec(model: onnx.ModelProto, spec) -> None:
    """Graph input/output dimensions named exactly as the io spec names them (fixed ones checked)."""
    graph = model.graph
    for values, tensors in ((graph.input, spec.inputs), (graph.output, spec.outputs)):
        for value, tensor in zip(values, tensors):
            apply_tensor_spec(value, tensor, "jax2onnx")


def _check_rotary_count(model: onnx.ModelProto, job: ExportJob) -> None:
    """Every rotary application became one custom node (q, k, and v with rotary_value, per layer)."""
    if not job.family.rotary:
        return
    per_layer = 3 if getattr(job.config, "rotary_value", False) else 2
    want = per_layer * job.config.num_hidden_layers
    got = sum(n.domain == DOMAIN and n.op_type == OP_TYPE for n in model.graph.node)
    if got != want:
        raise ExportError(
            f"Expected {want} {DOMAIN}.{OP_TYPE} nodes (one per rotary application), the converted graph has {got}."
        )


def _name_weights(model: onnx.ModelProto, native) -> None:
    """Rename jax2onnx's ``const_N`` weight initializers to checkpoint names, found by content.

    Arrays in the checkpoint's layout get their HF name (``roberta.embeddings.word_embeddings.weight``);
    Dense kernels are stored (in, out), the transpose of the HF weight, so they are named ``<module>.kernel``
    (Flax's own name) rather than pretending to be the HF ``.weight``. Unmatched constants keep their names.
    """
    from flax.traverse_util import flatten_dict

    from ..reference_models.flax.modeling import flax_to_hf_name

    by_content: dict[str, str] = {}

    def offer(name: str, array) -> None:
        array = np.asarray(array)
        if array.size >= 16:  # tiny arrays collide with shape constants
            by_content.setdefault(array_digest(array), name)

    for path, value in sorted(flatten_dict(native.params).items()):
        hf_name, transposed = flax_to_hf_name(path)
        offer(hf_name.rsplit(".", 1)[0] + ".kernel" if transposed else hf_name, value)
    for name, value in native.state_dict_numpy().items():  # tied aliases, RoFormer's sinusoidal table
        offer(name, value)

    graph = model.graph
    taken = {i.name for i in graph.initializer} | {n for node in graph.node for n in node.output}
    taken |= {v.name for v in (*graph.input, *graph.output)}
    rename: dict[str, str] = {}
    for init in graph.initializer:
        if not init.HasField("raw_data"):
            continue
        name = by_content.get(array_digest(onnx.numpy_helper.to_array(init)))
        if name and name not in taken and name not in rename.values():
            rename[init.name] = name
    rename_tensors(graph, rename)


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
