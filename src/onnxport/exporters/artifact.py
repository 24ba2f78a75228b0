"""Framework-independent clean-up and saving of an exported ONNX model.

Every front end hands over a raw ``onnx.ModelProto``; this module makes the
artifact the same quality whatever produced it: the rotary function attached,
inference-only (no Dropout), tied weights stored once, an IR version ONNX
Runtime reads, deterministic bytes, external data past the 2 GB protobuf limit.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import rotary_op

logger = logging.getLogger("onnxport")

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"
# Protobuf cannot serialise a message of 2 GiB; keep headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
# Local functions need IR >= 8. We write the lowest IR version the opset allows (8 for opset 17/18),
# never above 11 (opset 23): ONNX Runtime 1.31 reads up to 13, older runtimes less; onnx 1.23 would write 14.
MIN_IR_VERSION, MAX_IR_VERSION = 8, 11
TRAINING_OPS = {"Dropout", "TrainingDropout", "Gradient", "GraphCall"}


def finalize(model: onnx.ModelProto, *, producer_version: str, graph_name: str) -> onnx.ModelProto:
    """In place: function, no training ops, weights once, unused initializers gone, IR version, names."""
    _strip_training_ops(model)
    _dedupe_initializers(model)
    _drop_unused_initializers(model)
    rotary_op.attach_function(model)
    model.ir_version = ir_version_for(model)
    model.producer_name = "onnxport"
    model.producer_version = producer_version
    model.graph.name = graph_name
    model.doc_string = ""
    return model


def ir_version_for(model: onnx.ModelProto) -> int:
    known = [imp for imp in model.opset_import if imp.domain in ("", "ai.onnx", "ai.onnx.ml")]
    needed = helper.find_min_ir_version_for(known, ignore_unknown=True)
    version = max(MIN_IR_VERSION, needed)
    if version > MAX_IR_VERSION:
        raise ValueError(f"Opset needs IR version {version}; ONNX Runtime here reads up to {MAX_IR_VERSION}.")
    return version


def _strip_training_ops(model: onnx.ModelProto) -> None:
    """Dropout is identity at inference: rewire its consumers to its input and drop it."""
    graph = model.graph
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        if node.op_type in TRAINING_OPS:
            raise ValueError(f"The exported graph holds a training-only node {node.op_type} ({node.name}).")
        kept.append(node)
    if not rename:
        return
    graph_outputs = {o.name for o in graph.output}
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph_outputs & set(rename):
        kept.append(helper.make_node("Identity", [rename[out]], [out], name=f"{out}/identity"))
    del graph.node[:]
    graph.node.extend(kept)


def _digest(init: onnx.TensorProto, transpose: bool = False) -> str:
    """Content hash of an initializer (dtype, shape, bytes), or of its transpose (2-D)."""
    dims = list(init.dims)[::-1] if transpose else list(init.dims)
    h = hashlib.sha256(f"{init.data_type}:{dims}:".encode())
    if not transpose and init.HasField("raw_data"):
        h.update(init.raw_data)  # no copy
    else:
        array = numpy_helper.to_array(init)
        h.update(np.ascontiguousarray(array.T if transpose else array).tobytes())
    return h.hexdigest()


def _dedupe_initializers(model: onnx.ModelProto) -> None:
    """Store each weight once: identical initializers merge; a transposed copy (a tied LM decoder that
    constant folding turned into MatMul layout) becomes a Transpose node of the original, folded by ORT at load."""
    graph = model.graph
    inits = [i for i in graph.initializer]
    shapes = {tuple(i.dims) for i in inits}
    by_digest: dict[str, str] = {}
    rename: dict[str, str] = {}
    transposes: list[onnx.NodeProto] = []
    kept = []
    for init in inits:
        if int(np.prod(init.dims)) < 1024:  # small constants: often legitimately repeated, not worth a node
            kept.append(init)
            continue
        digest = _digest(init)
        if digest in by_digest:
            rename[init.name] = by_digest[digest]
            continue
        by_digest[digest] = init.name
        kept.append(init)
    # A later tensor equal to the transpose of an earlier one becomes Transpose(earlier). Only 2-D
    # tensors whose reversed shape also occurs are candidates, so few transposes are hashed.
    transposed_of: dict[str, str] = {}
    final = []
    for init in kept:
        dims = tuple(init.dims)
        candidate = len(dims) == 2 and dims[0] != dims[1] and dims[::-1] in shapes and int(np.prod(dims)) >= 1024
        if candidate:
            source = transposed_of.get(_digest(init))
            if source is not None:
                transposes.append(helper.make_node("Transpose", [source], [init.name], perm=[1, 0],
                                                   name=f"{init.name}/tied_transpose"))
                continue
            transposed_of[_digest(init, transpose=True)] = init.name
        final.append(init)
    if not rename and not transposes:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.initializer[:]
    graph.initializer.extend(final)
    nodes = transposes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def weights_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        if init.HasField("raw_data"):
            total += len(init.raw_data)
        else:
            total += numpy_helper.to_array(init).nbytes
    return total


def save(model: onnx.ModelProto, out_dir: str, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Write model.onnx (+ model.onnx_data when the weights pass the threshold); returns the files written."""
    path = os.path.join(out_dir, MODEL_FILE)
    data_path = os.path.join(out_dir, EXTERNAL_DATA_FILE)
    for stale in (path, data_path):
        if os.path.exists(stale):
            os.remove(stale)
    if weights_bytes(model) > external_data_threshold:
        logger.info("weights pass %d bytes: writing external data to %s", external_data_threshold, EXTERNAL_DATA_FILE)
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE,
            size_threshold=1024,
            convert_attribute=False,
        )
        return [path, data_path]
    onnx.save_model(model, path)
    return [path]


def check(path: str) -> None:
    """Full ONNX checker (with shape inference, through the rotary function) on the saved file."""
    onnx.checker.check_model(path, full_check=True)
