"""PyTorch-style layers over TensorFlow, for the TF reference encoder and heads.

Attributes carry the HF PyTorch parameter names and ``Module.named_parameters()`` yields checkpoint keys, so
one key mapping serves all three frameworks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Union

import numpy as np
import tensorflow as tf

Length = Union[int, tf.Tensor]  # a size known at trace time (int) or only at run time (scalar tensor)


# ----------------------------------------------------------------------------- building blocks
class _InitSettings:
    std = 0.02


_INIT = _InitSettings()


@contextlib.contextmanager
def initializer_range(std: float):
    """Standard deviation for the normal initialisers of the modules built inside this block."""
    previous, _INIT.std = _INIT.std, std
    try:
        yield
    finally:
        _INIT.std = previous


def _normal(shape: tuple[int, ...]) -> tf.Tensor:
    return tf.random.normal(shape, stddev=_INIT.std, dtype=tf.float32)


@dataclass
class Parameter:
    """One checkpoint tensor: a variable, and whether TF stores it transposed (Linear kernels)."""

    variable: tf.Variable
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        shape = tuple(self.variable.shape.as_list())
        return shape[::-1] if self.transposed else shape

    def numpy(self) -> np.ndarray:
        value = self.variable.numpy()
        return np.ascontiguousarray(value.T) if self.transposed else value.copy()

    def assign(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=self.variable.dtype.as_numpy_dtype)
        self.variable.assign(value.T if self.transposed else value)


class Module(tf.Module):
    """A ``tf.Module`` whose parameters are listed under the PyTorch module-tree names.

    Children are found in attribute order; attributes starting with ``_`` are private.
    """

    def _own_parameters(self) -> dict[str, Parameter]:
        return {}

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, param in self._own_parameters().items():
            yield prefix + name, param
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, child in enumerate(value):
                    yield from child.named_parameters(f"{prefix}{name}.{i}.")


@contextlib.contextmanager
def variables_read_as(model: tf.Module, tensors: Mapping[int, tf.Tensor]) -> Iterator[None]:
    """Within the block, every module attribute in ``model``'s tree that holds a variable whose ``id`` is
    a key of ``tensors`` holds that tensor instead; the variables are back when the block exits.

    For tracing with the weights as function inputs (``onnxport.exporters.tf``: tf2onnx would freeze
    each captured variable into a constant). Use it on a model no one else calls meanwhile: the swap
    is on the instances, not local to a context."""
    slots, seen, stack = [], set(), [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        for attr, value in vars(module).items():
            if isinstance(value, tf.Variable):
                if id(value) in tensors:
                    slots.append((module, attr, value))
            elif isinstance(value, tf.Module):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, tf.Module))
    try:
        for module, attr, variable in slots:
            object.__setattr__(module, attr, tensors[id(variable)])  # tf.Module tracks attribute writes
        yield
    finally:
        for module, attr, variable in slots:
            object.__setattr__(module, attr, variable)


class Linear(Module):
    """``torch.nn.Linear``; the weight is kept as a TF kernel (in, out) = the checkpoint's (out, in) transposed."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.kernel = tf.Variable(_normal((in_features, out_features)), name="kernel")
        self.bias = tf.Variable(tf.zeros((out_features,)), name="bias") if bias else None

    def _own_parameters(self) -> dict[str, Parameter]:
        params = {"weight": Parameter(self.kernel, transposed=True)}
        if self.bias is not None:
            params["bias"] = Parameter(self.bias)
        return params

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.matmul(x, self.kernel)  # (..., in) @ (in, out), batch dims broadcast
        return y if self.bias is None else y + self.bias


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None) -> None:
        super().__init__()
        init = _normal((num_embeddings, embedding_dim))
        if padding_idx is not None:  # the padding row starts at zero, as in torch
            init = tf.tensor_scatter_nd_update(init, [[padding_idx]], tf.zeros((1, embedding_dim)))
        self.weight = tf.Variable(init, name="weight")

    def _own_parameters(self) -> dict[str, Parameter]:
        return {"weight": Parameter(self.weight)}

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.weight, ids)


class LayerNorm(Module):
    def __init__(self, normalized_shape: int, eps: float) -> None:
        super().__init__()
        self.weight = tf.Variable(tf.ones((normalized_shape,)), name="weight")
        self.bias = tf.Variable(tf.zeros((normalized_shape,)), name="bias")
        self.eps = eps

    def _own_parameters(self) -> dict[str, Parameter]:
        return {"weight": Parameter(self.weight), "bias": Parameter(self.bias)}

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # torch's LayerNorm: biased variance over the last axis.
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + self.eps) * self.weight + self.bias


class Dropout:
    """``torch.nn.Dropout``; active only when called with ``training=True``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return tf.nn.dropout(x, rate=self.rate) if training and self.rate > 0 else x


class Identity:
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return x


def shape_list(x: tf.Tensor) -> list[Length]:
    """Static dimensions where known, dynamic ``tf.shape`` entries elsewhere."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [dynamic[i] if d is None else d for i, d in enumerate(static)]
