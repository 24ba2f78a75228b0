"""Edits the front ends make to a converted graph before ``artifact.finalize``: renames, the io spec's
names and dimensions on the graph signature, and content digests (weights found and ordered by value)."""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import numpy as np

from ..errors import ExportError


def rename_tensors(graph, rename: Mapping[str, str]) -> None:
    """Rename tensors wherever nodes, initializers and value_info name them (the graph's inputs and outputs
    are the caller's to name: they are the signature)."""
    if not rename:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]
    for tensor in (*graph.initializer, *graph.value_info):
        tensor.name = rename.get(tensor.name, tensor.name)


def replace_values(values, new_values: Iterable) -> None:
    """Set a repeated ValueInfoProto field (graph.input / graph.output) to ``new_values``, which may be its
    own elements (copied first: clearing the field would otherwise invalidate them)."""
    import onnx

    copies = []
    for value in new_values:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(value)
        copies.append(copy)
    del values[:]
    values.extend(copies)


def apply_tensor_spec(value, tensor, converter: str) -> None:
    """Give a graph input/output the io spec's name, element type check and dimensions: every ``str``
    dimension the spec's symbolic name, every fixed one its value (a different fixed value is an error)."""
    import onnx

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
    if value.type.tensor_type.elem_type != elem:
        raise ExportError(f"{converter} gave {value.name!r} ONNX type {value.type.tensor_type.elem_type}, "
                          f"the io spec says {tensor.dtype}.")
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(tensor.shape):
        raise ExportError(f"{converter} gave {value.name!r} rank {len(dims)}, the io spec says {tensor.shape}.")
    for dim, want in zip(dims, tensor.shape):
        if not isinstance(want, str) and dim.HasField("dim_value") and dim.dim_value != want:
            raise ExportError(f"{converter} gave {value.name!r} a dimension {dim.dim_value}, the io spec says "
                              f"{tensor.shape}.")
        dim.Clear()
        if isinstance(want, str):
            dim.dim_param = want
        else:
            dim.dim_value = want
    value.name = tensor.name


def array_digest(array: np.ndarray) -> str:
    """A digest of an array's dtype, shape and values: equal arrays, equal digests."""
    array = np.asarray(array)
    h = hashlib.sha256(f"{array.dtype.str}:{array.shape}:".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def initializer_digest(init) -> str:
    """``array_digest`` of an initializer's value."""
    from onnx import numpy_helper

    return array_digest(numpy_helper.to_array(init))
