"""Rewrites of a dynamic int8 graph that leave its numbers as they are and its GEMMs fewer and wider.

``onnxruntime.quantization.quantize_dynamic`` writes, per weight MatMul::

    a_q, a_scale, a_zp = DynamicQuantizeLinear(A)        (one per input tensor, shared by its readers)
    s = Mul(a_scale, b_scale)                             (b_scale: the weight's scale, scalar or per column)
    y = Mul(Cast(MatMulInteger(a_q, B_q, a_zp, b_zp), float), s)
    out = Add(y, bias)                                    (the layer's own bias, when it has one)

Attention's Q, K and V projections read the same tensor: three such chains over one quantized input, three GEMMs
of N = hidden. ``fuse_shared_input_gemms`` turns every group of chains reading the same quantized input into one:
the weights concatenated along N, their scales and zero points spread to one per column (``MatMulInteger`` and
ONNX Runtime's fused ``MatMulIntegerToFloat`` take per-column ones), the biases concatenated, and a ``Split``
giving each former output back. Every column is computed from the same integers with the same scale and bias as
before, so the outputs are unchanged; ONNX Runtime then runs one ``MatMulIntegerToFloat`` of N = 3 x hidden,
whose kernel packs the quantized input once and runs at the wide shapes' rate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class _Chain:
    scales_mul: object  # Mul(a_scale, b_scale)
    matmul: object  # MatMulInteger
    cast: object
    output_mul: object  # Mul(cast, scales)
    add: Optional[object]  # Add(y, bias), when the bias is a constant vector
    weight: np.ndarray
    weight_zero: np.ndarray
    weight_scale: np.ndarray
    bias: Optional[np.ndarray]
    key: tuple = ()  # what chains must share to merge: quantized input, its zero point and scale, K, dtype, bias

    @property
    def nodes(self) -> list:
        return [n for n in (self.scales_mul, self.matmul, self.cast, self.output_mul, self.add) if n is not None]

    @property
    def output(self) -> str:
        return (self.add or self.output_mul).output[0]

    @property
    def columns(self) -> int:
        return self.weight.shape[1]


def _per_column(value: np.ndarray, columns: int) -> Optional[np.ndarray]:
    if value.size == 1:
        return np.full(columns, value.reshape(()), value.dtype)
    return value.reshape(-1) if value.size == columns else None


def _chains(model) -> list[_Chain]:
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(name: str):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in graph_outputs else None

    def constant(name: str) -> Optional[np.ndarray]:
        return numpy_helper.to_array(constants[name]) if name in constants else None

    out = []
    for m in graph.node:
        if m.op_type != "MatMulInteger" or m.domain not in ("", "ai.onnx") or len(m.input) != 4:
            continue
        weight, weight_zero = constant(m.input[1]), constant(m.input[3])
        if weight is None or weight.ndim != 2 or weight_zero is None:
            continue
        cast = only_consumer(m.output[0])
        if cast is None or cast.op_type != "Cast" or cast.attribute[0].i != TensorProto.FLOAT:
            continue
        output_mul = only_consumer(cast.output[0])
        if output_mul is None or output_mul.op_type != "Mul":
            continue
        scales_out = output_mul.input[1] if output_mul.input[0] == cast.output[0] else output_mul.input[0]
        scales_mul = producer.get(scales_out)
        if scales_mul is None or scales_mul.op_type != "Mul" or len(consumers[scales_out]) != 1:
            continue
        a_scale = [i for i in scales_mul.input if i not in constants]
        b_scale = [i for i in scales_mul.input if i in constants]
        if len(a_scale) != 1 or len(b_scale) != 1:
            continue
        columns = weight.shape[1]
        zero, scale = _per_column(weight_zero, columns), _per_column(constant(b_scale[0]), columns)
        if zero is None or scale is None:
            continue
        add, bias = only_consumer(output_mul.output[0]), None
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == output_mul.output[0] else add.input[0]
            value = constant(other)
            if value is not None and value.shape == (columns,):
                bias = value
            else:
                add = None
        else:
            add = None
        out.append(_Chain(scales_mul, m, cast, output_mul, add, weight, zero, scale, bias,
                          key=(m.input[0], m.input[2], a_scale[0], weight.shape[0], weight.dtype.str, bias is not None)))
    return out


def fuse_shared_input_gemms(model) -> int:
    """Merge the int8 GEMM chains that read the same quantized input into one GEMM each (module doc); in place.
    Returns how many GEMMs were removed."""
    from onnx import TensorProto, helper, numpy_helper

    groups: dict[tuple, list[_Chain]] = defaultdict(list)
    for chain in _chains(model):
        groups[chain.key].append(chain)
    graph = model.graph
    removed = 0
    # Nodes by their first output (unique in a graph; message objects are copied on every rebuild).
    replaced: dict[str, list] = {}  # first output of a group's earliest node -> the group's new nodes
    dropped: set[str] = set()
    for key, chains in groups.items():
        if len(chains) < 2:
            continue
        first = chains[0].matmul.name or chains[0].matmul.output[0]
        base = f"{first}{MERGED_SUFFIX}"
        a_q, a_zp, a_scale = key[0], key[1], key[2]
        weight = np.concatenate([c.weight for c in chains], axis=1)
        zeros = np.concatenate([c.weight_zero for c in chains])
        scales = np.concatenate([c.weight_scale for c in chains]).astype(np.float32)
        # One zero point for all columns where they agree (the s8 weights' 0): the kernel's common case.
        zero_init = zeros[:1].reshape(()) if np.all(zeros == zeros[0]) else zeros
        initializers = [numpy_helper.from_array(weight, f"{base}_weight"),
                        numpy_helper.from_array(zero_init, f"{base}_weight_zero_point"),
                        numpy_helper.from_array(scales, f"{base}_weight_scale"),
                        numpy_helper.from_array(np.array([c.columns for c in chains], np.int64), f"{base}_split")]
        nodes = [helper.make_node("Mul", [a_scale, f"{base}_weight_scale"], [f"{base}_scales"], name=f"{base}_scales"),
                 helper.make_node("MatMulInteger", [a_q, f"{base}_weight", a_zp, f"{base}_weight_zero_point"],
                                  [f"{base}_int32"], name=base),
                 helper.make_node("Cast", [f"{base}_int32"], [f"{base}_float"], to=TensorProto.FLOAT,
                                  name=f"{base}_cast"),
                 helper.make_node("Mul", [f"{base}_float", f"{base}_scales"], [f"{base}_scaled"],
                                  name=f"{base}_scale_mul")]
        result = f"{base}_scaled"
        if key[5]:
            bias = np.concatenate([c.bias for c in chains]).astype(chains[0].bias.dtype)
            initializers.append(numpy_helper.from_array(bias, f"{base}_bias"))
            nodes.append(helper.make_node("Add", [result, f"{base}_bias"], [f"{base}_biased"], name=f"{base}_bias_add"))
            result = f"{base}_biased"
        nodes.append(helper.make_node("Split", [result, f"{base}_split"], [c.output for c in chains], axis=-1,
                                      name=f"{base}_split"))
        old = {n.output[0] for c in chains for n in c.nodes}
        # The group's inputs (the quantized input, its scale and zero point, constants) all exist before its
        # earliest node, and every reader of its outputs comes after that node: the new nodes go there.
        earliest = next(n.output[0] for n in graph.node if n.output[0] in old)
        replaced[earliest] = nodes
        dropped |= old
        graph.initializer.extend(initializers)
        removed += len(chains) - 1
    if not removed:
        return 0
    rebuilt = []
    for n in graph.node:
        if n.output[0] in replaced:
            rebuilt.extend(replaced[n.output[0]])
        if n.output[0] not in dropped:
            rebuilt.append(n)
    del graph.node[:]
    graph.node.extend(rebuilt)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    return removed


MERGED_SUFFIX = "_shared_input"


def merged_gemms(model) -> int:
    """GEMMs that ``fuse_shared_input_gemms`` merged away in ``model`` (each merged GEMM's outputs less one)."""
    return sum(len(n.output) - 1 for n in model.graph.node
               if n.op_type == "Split" and n.name.endswith(MERGED_SUFFIX + "_split"))
