"""fp16 exports for GPU hosts: ``export(..., dtype="fp16")``, ``onnxport export --fp16``.

The pass runs on the finished fp32 graph (after ``artifact.finalize``), so it is
the same for the PyTorch, TensorFlow and Flax front ends (they decompose LayerNorm
differently: LayerNormalization, GlobalAveragePool + Mul(d, d), ReduceSum +
ReduceSumSquare). It is our own pass rather than ``onnxruntime.transformers.float16``:
that tool keeps fp32 only what op/node block lists fed by hand name, so it would need
per-front-end node names, and it has no notion of the attention-mask chain (it clamps
the fill to -65504 and runs the add of the mask to the scores in fp16).

Precision plan (one decision per node, in graph order)
------------------------------------------------------
* Weights are stored in fp16; matmuls, bias adds, GELU (Erf), residual adds,
  reshapes/transposes, rotary (``onnxport.RotaryEmbedding``: its function body is
  written in type-generic ops, so it runs fp16 as is; ONNX Runtime's fused
  ``com.microsoft.RotaryEmbedding`` has fp16 kernels) run in fp16.
* Kept fp32 (``KEEP_FP32_OPS``): LayerNormalization and Softmax (sums of squares and
  exponent sums leave the fp16 range or lose digits), and the statistics of
  decomposed LayerNorms (TF: GlobalAveragePool + Mul(d, d); Flax: ReduceSum /
  ReduceSumSquare; Pow, Sqrt, Reciprocal) together with the elementwise ops that only
  consume those statistics (var + eps, 1/sqrt).
* The attention-mask chain is fp32: every float tensor computed from integer inputs
  and constants alone (Cast of the mask, the causal product, (1 - m) * fill) and every
  node consuming it (the add of the mask to the scores), up to the Softmax; the
  ``onnxport.Attention`` node reads the mask, so it runs in fp32 (Q, K, V cast up; its
  function body and ONNX Runtime's MultiHeadAttention both in float32), its output back to fp16. The fill
  value the native models use (``finfo(float32).min``) is rewritten to ``MASK_FILL``
  (-2**15): finite in fp16, so an execution provider that does run the add in half
  precision (TensorRT with fp16 enabled) gets no -inf and no NaN; exp() of it is 0 in
  fp16 and fp32, so partially masked rows are unchanged. (A row with *no* attended
  key, an all-zero mask, gets softmax(scores) instead of the native model's uniform
  average over keys; such rows carry no information either way.)
* Graph inputs stay int64 ids. Outputs: ``logits`` / hidden states / start-end logits
  are cast back to **float32** (the runtime's postprocess does softmax / argmax / mean
  pooling in numpy, where fp32 is the safe type; the cast costs one small node). The
  decoding cache (``past_key_values.*`` in, ``present.*`` out) is **float16**: it is
  computed in fp16 inside the graph, so an fp32 cache would only double its memory and
  add two casts per layer per step. The io spec records those dtypes; the runtime
  feeds by them.

Validation compares the fp16 graph on ONNX Runtime (CPU) with the fp32 native model
on fresh padded inputs plus a long masked run, with ``FP16_TOLERANCE`` relative to
each output's scale.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..artifact.input_checks import FP16_MAX, to_fp16_checked  # noqa: F401  (runtime inputs; the old import path keeps working)
from ..artifact.io_spec import CACHE_ROLES, make_inputs, role_of
from ..artifact.records import Record
from ..errors import ExportError
from . import validate as checks
from .validate import Row, max_abs_diff

logger = logging.getLogger("onnxport")

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
DTYPE_NAMES = {FP32: "float32", FP16: "float16"}
# export(dtype=...) spellings -> canonical name.
DTYPES = {"fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16"}

# Max abs difference allowed between the fp16 export and the fp32 native model, as a
# fraction of the output's scale (max |native| over the compared tensor, at least 1).
# Measured on the parity suite's tiny random checkpoints (initializer_range 0.2, so
# activations run larger than in trained models), all seven tasks incl. the fp16 cache:
# worst 2.5e-3 on ONNX Runtime CPU, 2.1e-3 under onnx.reference (numpy fp16 arithmetic);
# fp16's rounding step is 4.9e-4. 1e-2 leaves 4x headroom; an ignored attention mask
# measures 2.3e-1, so real defects stay far above the bar.
FP16_TOLERANCE = 1e-2

# The additive attention-mask fill: finite in fp16 with room to add any score |s| < 32736.
MASK_FILL = -(2.0**15)

# Statistics of (decomposed) normalisations: squares and sums leave the fp16 range.
STATISTIC_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "GlobalAveragePool", "Pow", "Sqrt",
                           "Reciprocal"})
KEEP_FP32_OPS = STATISTIC_OPS | {"LayerNormalization", "Softmax", "LogSoftmax", "Range", "CumSum"}
# Outputs bounded whatever the input: they end the fp32 mask chain. onnxport.Attention (it reads the mask, so
# it runs in fp32) returns softmax-weighted averages of the values: bounded by them.
BOUNDED_OPS = frozenset({"Softmax", "LayerNormalization", "Sigmoid", "Tanh", "Erf", "Sin", "Cos", "Attention"})
# Ops that accept a float input of any precision as is (they read its shape or convert it).
TYPE_AGNOSTIC_INPUT_OPS = frozenset({"Shape", "Size", "Cast"})
# Initializers above this many elements are moved out of the copy given to shape inference.
_INFERENCE_INLINE_LIMIT = 1024


@dataclass
class Fp16Report(Record):
    """What the pass did; stored in onnxport.json under ``precision``."""

    dtype: str = "fp16"
    fp16_nodes: int = 0
    fp32_nodes: dict[str, int] = field(default_factory=dict)  # op type -> count of nodes kept fp32
    casts: int = 0
    mask_fill: float = MASK_FILL
    mask_fills_rewritten: int = 0
    clipped_constants: list[str] = field(default_factory=list)
    outputs_dtype: str = "float32"
    cache_dtype: str = "float16"
    tolerance: float = FP16_TOLERANCE


def canonical_dtype(dtype: str) -> str:
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ExportError(f"dtype={dtype!r} is not supported; choose 'fp32' or 'fp16'.") from None


def is_cache(name: str) -> bool:
    """Whether a graph tensor name is a cache input or output (the graph pass sees names, not the spec)."""
    return role_of(name)[0] in CACHE_ROLES


def fp16_spec(spec):
    """The io spec of the fp16 graph: cache tensors float16, and every float input (the pass retypes them:
    a cross-attention decoder's encoder_hidden_states too); everything else as in fp32."""
    def retype(t, every_float: bool = False):
        return dataclasses.replace(t, dtype="float16") if (t.is_cache or every_float) and t.dtype == "float32" else t

    return dataclasses.replace(spec, inputs=tuple(retype(t, True) for t in spec.inputs),
                               outputs=tuple(retype(t) for t in spec.outputs))


# ----------------------------------------------------------------------------- the pass
def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, by ONNX shape inference (through the rotary function body).

    Inference runs on a copy whose large initializers are declared as inputs instead, so
    models near the 2 GB protobuf limit are not serialized twice.
    """
    graph = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    light.graph.name = graph.name
    light.graph.node.extend(graph.node)
    light.graph.input.extend(graph.input)
    light.graph.output.extend(graph.output)
    for init in graph.initializer:
        if int(np.prod(init.dims)) > _INFERENCE_INLINE_LIMIT or init.data_location == TensorProto.EXTERNAL:
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            light.graph.initializer.append(init)
    inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
    types = {init.name: init.data_type for init in graph.initializer}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    untyped = [o for n in graph.node for o in n.output if o and o not in types]
    if untyped:
        raise ExportError(f"fp16: shape inference left {len(untyped)} tensor(s) untyped (e.g. {untyped[:3]}); "
                          "the pass needs every float tensor's type to place casts.")
    return types


class _Constants:
    """Float initializers and Constant-node outputs: converted per consumer dtype, not cast at run time."""

    def __init__(self, graph: onnx.GraphProto, base_dir: str = "") -> None:
        self.base_dir = base_dir  # where initializers stored as external data live
        self.inits = {i.name: i for i in graph.initializer if i.data_type == FP32}
        self.nodes = {n.output[0]: n for n in graph.node
                      if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and self._float_constant(n)}

    @staticmethod
    def _float_constant(node: onnx.NodeProto) -> bool:
        for attr in node.attribute:
            if attr.name == "value":
                return attr.t.data_type == FP32
            if attr.name in ("value_float", "value_floats"):
                return True
        return False

    def __contains__(self, name: str) -> bool:
        return name in self.inits or name in self.nodes

    def size(self, name: str) -> int:
        if name in self.inits:
            return int(np.prod(self.inits[name].dims))
        attr = self.nodes[name].attribute[0]
        return int(np.prod(attr.t.dims)) if attr.name == "value" else (len(attr.floats) or 1)

    def array(self, name: str) -> np.ndarray:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name], self.base_dir)
        attr = self.nodes[name].attribute[0]
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        return np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), dtype=np.float32)


@dataclass
class _Plan:
    dtype: dict[int, int]  # node index -> FP32 | FP16 (nodes touching float tensors)
    home: dict[str, int]  # float non-constant tensor -> the precision it is produced in
    needs: dict[str, set]  # float constant -> precisions its consumers want
    mask_constants: set  # float constants feeding the mask chain (their fill becomes MASK_FILL)


def _plan(graph: onnx.GraphProto, types: dict[str, int], constants: _Constants) -> _Plan:
    """Decide each node's precision, first matching rule wins:

    1. Cast to float keeps its source's precision; from an int/bool source it starts the mask chain (fp32).
    2. KEEP_FP32_OPS and squares Mul(d, d): fp32.
    3. Reads a mask-chain tensor: fp32 (and its output joins the chain, until a BOUNDED_OPS op).
    4. Reads an fp16 tensor: fp16 (fp32 inputs are cast down, e.g. Softmax probabilities into MatMul).
    5. Reads only fp32 tensors: fp32 if they are all statistics (var + eps, 1/sqrt), else fp16 (after LayerNorm).
    6. Reads only constants: fp16 if one is a weight (embedding Gather, position table), else the mask chain.
    Constants take the precision of each consumer (converted once, never cast at run time).
    """
    home: dict[str, int] = {}
    mask: set[str] = set()  # float tensors of the attention-mask chain (values at the fp16 edge)
    stats: set[str] = set()  # outputs of normalisation statistics (squares, sums, 1/sqrt)
    needs: dict[str, set] = {}
    mask_constants: set[str] = set()
    decided: dict[int, int] = {}
    for inp in graph.input:
        if types.get(inp.name) == FP32:
            home[inp.name] = FP16  # the cache comes in fp16 (see fp16_spec)

    def reads_weight(names) -> bool:
        return any(constants.size(i) > 1 for i in names if i in constants)

    for index, node in enumerate(graph.node):
        if node.output and node.output[0] in constants.nodes:
            continue  # float Constant nodes are converted per consumer, not planned
        float_out = [o for o in node.output if o and types.get(o) == FP32]
        agnostic = node.op_type in TYPE_AGNOSTIC_INPUT_OPS
        float_in = [] if agnostic else [i for i in node.input if i and types.get(i) == FP32]
        if not float_in and not float_out:
            continue  # integer / shape arithmetic, Shape of a float tensor
        dynamic = [i for i in float_in if i not in constants]
        square = node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]
        if node.op_type == "Cast":  # to float: keeps its source's precision; from int/bool it starts a chain
            source = node.input[0]
            dt = home.get(source, FP32 if not reads_weight([source]) else FP16)
            dynamic = [source] if source in home else []
            float_in = [] if source in home else [source]
        elif node.op_type in KEEP_FP32_OPS or square:
            dt = FP32
        elif any(i in mask for i in dynamic):
            dt = FP32  # the mask chain and the add of the mask to the scores
        elif any(home[i] == FP16 for i in dynamic):
            dt = FP16
        elif dynamic:  # only fp32 producers: stay fp32 while consuming statistics, else back to fp16
            dt = FP32 if all(i in stats for i in dynamic) else FP16
        else:  # a source node: fp16 when it reads a weight (embedding Gather, position table), else mask-like
            dt = FP16 if reads_weight(float_in) else FP32
        decided[index] = dt
        for o in float_out:
            home[o] = dt
        if dt == FP32 and node.op_type not in BOUNDED_OPS:
            if any(i in mask for i in dynamic) or (not dynamic and not reads_weight(float_in)
                                                   and node.op_type not in STATISTIC_OPS):
                mask.update(float_out)
                mask_constants.update(i for i in float_in if i in constants)
            elif node.op_type in STATISTIC_OPS or square or (dynamic and all(i in stats for i in dynamic)):
                stats.update(float_out)
        if node.op_type != "Cast":
            for i in float_in:
                if i in constants:
                    needs.setdefault(i, set()).add(dt)
    return _Plan(decided, home, needs, mask_constants)


def _to_fp16_array(array: np.ndarray, name: str, report: Fp16Report) -> np.ndarray:
    finite = np.isfinite(array)
    if np.any(np.abs(array[finite]) > FP16_MAX):
        report.clipped_constants.append(name)
        logger.warning("fp16: constant %s holds values beyond the fp16 range; clipped to +-%g", name, FP16_MAX)
        array = np.where(finite, np.clip(array, -FP16_MAX, FP16_MAX), array)
    return array.astype(np.float16)


def _mask_safe(array: np.ndarray) -> np.ndarray:
    """finfo(float32).min-like fills -> MASK_FILL (keeps the sign; infinities stay as they are)."""
    huge = np.isfinite(array) & (np.abs(array) > FP16_MAX)
    return np.where(huge, np.sign(array) * -MASK_FILL, array).astype(np.float32) if huge.any() else array


def _store_constant(graph: onnx.GraphProto, constants: _Constants, name: str, array: np.ndarray,
                    new_name: str) -> Optional[onnx.NodeProto]:
    """Store ``array`` as ``new_name``: in place when the name is unchanged, else beside the original
    (a new initializer, or a new Constant node returned for the caller to place)."""
    tensor = numpy_helper.from_array(array, new_name)
    if name in constants.inits:
        if new_name == name:
            constants.inits[name].CopyFrom(tensor)
        else:
            graph.initializer.append(tensor)
        return None
    if new_name == name:
        node = constants.nodes[name]
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", tensor))
        return None
    return helper.make_node("Constant", [], [new_name], value=tensor, name=f"{new_name}/constant")


def convert(model: onnx.ModelProto, base_dir: Optional[str] = None) -> Fp16Report:
    """Rewrite ``model`` (fp32, finalized) to the fp16 plan, in place. Returns what was done.

    ``base_dir``: the directory external-data initializers are relative to. Converted tensors are
    held in memory (half their fp32 size); those kept fp32 unchanged stay where they are.
    """
    graph = model.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"fp16: control-flow node {node.op_type} ({node.name}) is not supported by this pass.")
    report = Fp16Report()
    types = _tensor_types(model)
    constants = _Constants(graph, base_dir or "")
    plan = _plan(graph, types, constants)

    # Constants are converted, not cast at run time. One stored precision when all consumers agree
    # (the weights: fp16, in place, same name); both precisions under suffixed names otherwise.
    versions: dict[tuple[str, int], str] = {}
    renamed: set[str] = set()
    new_constant_nodes: list[onnx.NodeProto] = []
    for name, wanted in plan.needs.items():
        if wanted == {FP32} and name not in plan.mask_constants:
            versions[(name, FP32)] = name  # e.g. LayerNorm parameters: left untouched (possibly external)
            continue
        array = constants.array(name)
        changed = False
        if name in plan.mask_constants:
            safe = _mask_safe(array)
            changed = safe is not array
            report.mask_fills_rewritten += int(changed)
            array = safe
        for dt in sorted(wanted):
            target = name if len(wanted) == 1 else f"{name}/{DTYPE_NAMES[dt]}"
            versions[(name, dt)] = target
            if dt == FP32 and target == name and not changed:
                continue
            value = _to_fp16_array(array, name, report) if dt == FP16 else array
            node = _store_constant(graph, constants, name, value, target)
            if node is not None:
                new_constant_nodes.append(node)
        if len(wanted) > 1:
            renamed.add(name)
    for name in renamed & set(constants.inits):
        graph.initializer.remove(constants.inits[name])

    def constant_for(name: str, dt: Optional[int]) -> str:
        if dt is None:  # a type-agnostic reader (Shape, Cast): any stored version will do
            return versions.get((name, FP16)) or versions.get((name, FP32)) or name
        return versions[(name, dt)]

    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = list(new_constant_nodes)
    fp32_ops: Counter = Counter()
    for index, node in enumerate(graph.node):
        if node.output and node.output[0] in renamed:
            continue  # a float Constant node now stored under two precision-suffixed names
        dt = plan.dtype.get(index)
        for k, name in enumerate(node.input):
            if not name or types.get(name) != FP32:
                continue
            agnostic = dt is None or node.op_type in TYPE_AGNOSTIC_INPUT_OPS
            if name in constants:
                node.input[k] = constant_for(name, None if agnostic else dt)
            elif not agnostic and plan.home[name] != dt:
                key = (name, dt)
                if key not in casts:
                    casts[key] = f"{name}/to_{DTYPE_NAMES[dt]}"
                    nodes.append(helper.make_node("Cast", [name], [casts[key]], to=dt, name=casts[key]))
                node.input[k] = casts[key]
        if dt == FP16:
            _retarget_float_attributes(node)
            report.fp16_nodes += 1
        elif dt == FP32:
            fp32_ops[node.op_type] += 1
        nodes.append(node)

    # Graph outputs: fp32 results, fp16 cache; graph inputs: fp16 cache.
    for out in graph.output:
        if types.get(out.name) != FP32:
            continue
        want = FP16 if is_cache(out.name) else FP32
        have = plan.home.get(out.name, FP32)
        if have != want:
            inner = f"{out.name}/{DTYPE_NAMES[have]}"
            for node in nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            nodes.append(helper.make_node("Cast", [inner], [out.name], to=want, name=f"{out.name}/cast"))
            casts[(out.name, want)] = out.name
        out.type.tensor_type.elem_type = want
    for inp in graph.input:
        if types.get(inp.name) == FP32:
            inp.type.tensor_type.elem_type = FP16
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # fp32 intermediate types are stale; ORT and the checker infer them again
    report.casts = len(casts)
    report.fp32_nodes = dict(sorted(fp32_ops.items()))
    logger.info("fp16: %d nodes fp16, %d kept fp32 (%s), %d casts, %d mask fill(s) -> %g",
                report.fp16_nodes, sum(fp32_ops.values()), report.fp32_nodes, report.casts,
                report.mask_fills_rewritten, MASK_FILL)
    return report


def _retarget_float_attributes(node: onnx.NodeProto) -> None:
    """Attributes that name the float type of the node's output: float32 -> float16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FP32:
            attr.i = FP16
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FP32:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))


# ----------------------------------------------------------------------------- validation
def native_runner(run_native: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """The fp32 native model fed the fp16 graph's inputs (fp16 cache upcast to fp32)."""
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_native({k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in inputs.items()})

    return run


def long_masked_run(spec, batch: int = 2, sequence: int = 32, real: int = 2, seed: int = 7) -> dict[str, np.ndarray]:
    """Inputs whose second row attends to ``real`` tokens and masks the rest: a long run of fill values."""
    limit = spec.max_sequence_length or sequence
    past = 3 if spec.with_past else 0
    sequence = max(real + 1, min(sequence, limit - past))
    inputs = make_inputs(spec, batch, sequence, past=past, num_choices=2, seed=seed, pad=False)
    pad = spec.pad_token_id
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ids[1:, ..., real:] = pad
    mask[1:, ..., past + real:] = 0
    if "token_type_ids" in inputs:
        inputs["token_type_ids"][1:, ..., real:] = 0
    return inputs


def relative_rows(case: str, spec, onnx_out: dict, native_out: dict, tolerance: float,
                  atol: Optional[float] = None) -> list:
    """Validation rows with the bar scaled to each output: tolerance * max(1, max |native|)."""
    rows = []
    for name in spec.output_names:
        want = np.asarray(native_out[name], dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        bar = atol if atol is not None else tolerance * scale
        rows.append(Row(case, name, tuple(np.shape(onnx_out[name])), max_abs_diff(want, onnx_out[name]), bar))
    return rows


def validate(model_path: str, spec, run_native, atol: Optional[float] = None, tolerance: float = FP16_TOLERANCE,
             raise_on_failure: bool = True):
    """The fp16 graph on ONNX Runtime (CPU) vs the fp32 native model: validate.py's cases plus a long masked run.

    ``atol`` (absolute) replaces the scaled bar when given."""
    session = checks.ort_session(model_path)
    native = native_runner(run_native)
    cases = checks.validation_cases(spec) + [("long-mask", long_masked_run(spec))]
    report = checks.ValidationReport()
    for case, inputs in cases:
        feeds = {name: inputs[name] for name in spec.input_names}
        got = dict(zip(spec.output_names, session.run(spec.output_names, feeds)))
        report.rows += relative_rows(case, spec, got, native(dict(feeds)), tolerance, atol)
    logger.info("validation (fp32 native vs fp16 ONNX Runtime, bar = %g x output scale):\n%s", tolerance,
                report.table())
    if raise_on_failure and not report.passed:
        raise checks.ValidationError(f"The fp16 model differs from the fp32 native model beyond tolerance:\n"
                                     f"{report.table()}\nThe ONNX file is kept for inspection at {model_path}.")
    return report


__all__ = ["convert", "fp16_spec", "validate", "to_fp16_checked", "native_runner", "long_masked_run", "relative_rows",
           "canonical_dtype", "Fp16Report", "FP16_TOLERANCE", "KEEP_FP32_OPS", "MASK_FILL"]
