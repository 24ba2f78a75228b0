"""The sentence-transformers modules after the encoder, as standard ONNX nodes appended to any front end's graph.

The front end exports the Transformer module (feature-extraction, ``last_hidden_state``); ``append`` renames
that output ``token_embeddings`` and adds Pooling (every mode, concatenated in the configured order), the
Dense layers and Normalize, ending in ``sentence_embedding``. The same nodes follow a PyTorch, TensorFlow or
Flax encoder. ``numpy_outputs`` is the same math in numpy, sentence-transformers' formulas written out, that
validation applies to the native encoder's output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..sentence_stack import SentenceStack

HIDDEN = "last_hidden_state"
TOKENS = "token_embeddings"
SENTENCE = "sentence_embedding"
MASK = "attention_mask"


# -- numpy: the reference the graph is validated against ----------------------------------------------------
def numpy_pooling(stack: SentenceStack, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling (padded batches) then Dense / Normalize, in float32."""
    hidden = np.asarray(hidden, np.float32)
    m = np.asarray(mask).astype(np.float32)[..., None]  # (batch, sequence, 1)
    rows = np.arange(hidden.shape[0])
    vectors = []
    for mode in stack.pooling_modes:
        if mode == "cls":  # the first attended token (0 with right padding)
            vectors.append(hidden[rows, np.argmax(mask, axis=1)])
        elif mode == "max":
            vectors.append(np.where(m == 0, -np.inf, hidden).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * m).sum(axis=1)
            count = np.maximum(m.sum(axis=1), np.float32(1e-9))
            vectors.append(total / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = m * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            vectors.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), np.float32(1e-9)))
        elif mode == "lasttoken":  # the last attended token (position 0 when none is)
            last = np.maximum((m[..., 0] * np.arange(1, hidden.shape[1] + 1)).max(axis=1) - 1, 0).astype(np.int64)
            vectors.append((hidden * m)[rows, last])
    x = np.concatenate(vectors, axis=-1).astype(np.float32)
    for kind, layer in stack.steps:
        if kind == "dense":
            x = x @ layer.weight.T + (0 if layer.bias is None else layer.bias)
            x = _numpy_activation(layer.activation, x)
        else:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
    return x.astype(np.float32)


def _numpy_activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "gelu":
        from math import erf, sqrt

        return (0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))).astype(np.float32)
    return x


def native_runner(stack: SentenceStack, encoder_runner: Callable) -> Callable:
    """The native encoder's runner (feeds -> {last_hidden_state}) extended to the sentence outputs."""

    def run(feeds):
        hidden = encoder_runner(feeds)[HIDDEN]
        return {TOKENS: hidden, SENTENCE: numpy_pooling(stack, hidden, feeds[MASK])}

    return run


# -- the graph ----------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, graph, opset: int) -> None:
        self.graph, self.opset, self.count = graph, opset, 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"sentence_head/{hint}_{self.count}"

    def const(self, array, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, output: str | None = None, **attrs) -> str:
        import onnx

        out = output or self.name(hint or op.lower())
        self.graph.node.append(onnx.helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def reduce(self, op: str, x: str, axis: int, keepdims: int) -> str:
        # ReduceSum takes its axes as an input from opset 13, the other reductions from opset 18
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.const(np.array([axis], np.int64), "axes")], keepdims=keepdims)
        return self.node(op, [x], axes=[axis], keepdims=keepdims)

    def gather_rows(self, x: str, index: str) -> str:
        """x (batch, sequence, width) at index (batch,) int64 per row -> (batch, width)."""
        idx = self.node("Unsqueeze", [index, self.const(np.array([1, 2], np.int64), "axes")])  # (batch, 1, 1)
        shape = self.node("Shape", [x])
        width = self.node("Slice", [shape, self.const(np.array([2], np.int64)), self.const(np.array([3], np.int64))])
        batch = self.node("Slice", [shape, self.const(np.array([0], np.int64)), self.const(np.array([1], np.int64))])
        target = self.node("Concat", [batch, self.const(np.array([1], np.int64)), width], axis=0)
        idx = self.node("Expand", [idx, target])
        picked = self.node("GatherElements", [x, idx], axis=1)
        return self.node("Squeeze", [picked, self.const(np.array([1], np.int64), "axes")])


def append(model, stack: SentenceStack, opset: int) -> None:
    """In place: ``last_hidden_state`` becomes ``token_embeddings``; Pooling, Dense, Normalize after it give
    ``sentence_embedding`` (batch, stack.dimension)."""
    import onnx

    from ..errors import ExportError
    from .graph_edits import rename_tensors

    graph = model.graph
    outputs = [o.name for o in graph.output]
    if outputs != [HIDDEN]:
        raise ExportError(f"The front end's encoder graph must return {HIDDEN} alone, got {outputs}.")
    rename_tensors(graph, {HIDDEN: TOKENS})
    graph.output[0].name = TOKENS
    b = _Builder(graph, opset)
    f32 = onnx.TensorProto.FLOAT
    hidden = TOKENS
    mask = b.node("Cast", [MASK], to=f32)  # (batch, sequence)
    mask3 = b.node("Unsqueeze", [mask, b.const(np.array([2], np.int64), "axes")])  # (batch, sequence, 1)
    sequence = b.node("Slice", [b.node("Shape", [hidden]), b.const(np.array([1], np.int64)),
                                b.const(np.array([2], np.int64))])
    steps = None  # 1..sequence as float (batch 1, sequence): weightedmean and lasttoken

    def positions() -> str:
        nonlocal steps
        if steps is None:
            length = b.node("Cast", [b.node("Squeeze", [sequence, b.const(np.array([0], np.int64), "axes")])], to=f32)
            one = b.const(np.array(1, np.float32))
            steps = b.node("Range", [one, b.node("Add", [length, one]), one])
            steps = b.node("Unsqueeze", [steps, b.const(np.array([0], np.int64), "axes")])
        return steps

    masked_sum = count = None
    vectors = []
    for mode in stack.pooling_modes:
        if mode == "cls":
            first = b.node("ArgMax", [mask], axis=1, keepdims=0)  # the first attended token
            vectors.append(b.gather_rows(hidden, first))
        elif mode == "max":
            is_pad = b.node("Equal", [mask3, b.const(np.array(0, np.float32))])
            filled = b.node("Where", [is_pad, b.const(np.array(-np.inf, np.float32)), hidden])
            vectors.append(b.reduce("ReduceMax", filled, 1, 0))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if masked_sum is None:
                masked_sum = b.reduce("ReduceSum", b.node("Mul", [hidden, mask3]), 1, 0)  # (batch, width)
                count = b.node("Max", [b.reduce("ReduceSum", mask3, 1, 0), b.const(np.array(1e-9, np.float32))])
            divisor = count if mode == "mean" else b.node("Sqrt", [count])
            vectors.append(b.node("Div", [masked_sum, divisor]))
        elif mode == "weightedmean":
            weights = b.node("Mul", [mask3, b.node("Unsqueeze", [positions(), b.const(np.array([2], np.int64), "axes")])])
            total = b.reduce("ReduceSum", b.node("Mul", [hidden, weights]), 1, 0)
            norm = b.node("Max", [b.reduce("ReduceSum", weights, 1, 0), b.const(np.array(1e-9, np.float32))])
            vectors.append(b.node("Div", [total, norm]))
        elif mode == "lasttoken":
            last = b.reduce("ReduceMax", b.node("Mul", [mask, positions()]), 1, 0)  # 1-based; 0 when none attended
            last = b.node("Max", [b.node("Sub", [last, b.const(np.array(1, np.float32))]),
                                  b.const(np.array(0, np.float32))])
            last = b.node("Cast", [last], to=onnx.TensorProto.INT64)
            vectors.append(b.gather_rows(b.node("Mul", [hidden, mask3]), last))
    x = vectors[0] if len(vectors) == 1 else b.node("Concat", vectors, axis=-1)
    for kind, layer in stack.steps:
        if kind == "dense":
            x = b.node("MatMul", [x, b.const(np.ascontiguousarray(layer.weight.T), "dense_weight")])
            if layer.bias is not None:
                x = b.node("Add", [x, b.const(layer.bias, "dense_bias")])
            x = _activation(b, layer.activation, x)
        else:  # Normalize: x / max(||x||, 1e-12), torch.nn.functional.normalize
            norm = b.node("Sqrt", [b.reduce("ReduceSum", b.node("Mul", [x, x]), 1, 1)])
            x = b.node("Div", [x, b.node("Max", [norm, b.const(np.array(1e-12, np.float32))])])
    b.node("Identity", [x], output=SENTENCE)
    graph.output.append(onnx.helper.make_tensor_value_info(SENTENCE, f32, ["batch_size", stack.dimension]))


def _activation(b: _Builder, name: str, x: str) -> str:
    if name == "tanh":
        return b.node("Tanh", [x])
    if name == "relu":
        return b.node("Relu", [x])
    if name == "sigmoid":
        return b.node("Sigmoid", [x])
    if name == "silu":
        return b.node("Mul", [x, b.node("Sigmoid", [x])])
    if name == "gelu":  # exact (erf) GELU, torch.nn.GELU()'s default
        inner = b.node("Erf", [b.node("Div", [x, b.const(np.array(np.sqrt(2.0), np.float32))])])
        one = b.const(np.array(1, np.float32))
        return b.node("Mul", [b.node("Mul", [x, b.const(np.array(0.5, np.float32))]), b.node("Add", [inner, one])])
    return x
