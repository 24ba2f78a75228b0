"""PyTorch front end: ``torch.onnx.export`` of the onnxport reference models.

Uses the TorchScript exporter (``dynamo=False``): it needs no extra package
(the dynamo exporter needs onnxscript), handles the models' dynamic shapes
(past length, choices) through tracing, and lets a ``torch.autograd.Function``
with a ``symbolic`` emit exactly one ``onnxport.RotaryEmbedding`` node per
rotary application. The reference encoder calls that function only inside the
export's ``tracing(rotary_op=...)`` block (``reference_models.tracing``); eager
runs are untouched.

Memory: the checkpoint is read a tensor at a time into the model, and the
weights never pass through an in-memory ModelProto (``_lean_export``): they go
from the model's tensors to external data in the workdir, which
``artifact.save`` streams into the artifact. XLM-R base peaks at ~2 GiB of RSS
(validation included) where a plain ``torch.onnx.export`` takes ~4.5 GiB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import ExportError
from .front_end import (RANDOM_INIT_SEED, Converted, ExportJob, call_with_spec, check_attention_count, check_opset,
                        export_tracing, load_reference_model, native_runner)
from .graph_edits import rename_tensors
from ..artifact import attention_op
from ..artifact.rotary_op import DOMAIN, OP_TYPE, VERSION

logger = logging.getLogger("onnxport")

# Opsets the TorchScript exporter writes and our graphs need (LayerNormalization is 17+;
# 14+ keeps the decomposed form valid). torch 2.x stops at 20.
MIN_OPSET, MAX_OPSET = 14, 20
# The converted model's weights of 1 KiB and more, as external data in the export's workdir.
RAW_DATA_FILE = "raw.onnx_data"


def convert(job: ExportJob) -> Converted:
    """The front-end contract (``front_end.py``): raw ONNX model + a native runner."""
    from ..reference_models.pt import model_class

    check_opset(job, MIN_OPSET, MAX_OPSET, "PyTorch exporter")

    def build(cls):
        torch.manual_seed(RANDOM_INIT_SEED)  # weights the checkpoint lacks (allow_missing_weights) are reproducible
        return cls(job.config).eval()

    # Tensors are read one at a time as they are copied in, not as a whole state dict beside the model.
    model, random_weights = load_reference_model(job, model_class, build, lazy=True)
    wrapper = _IOWrapper(model, job.spec).eval()

    path = os.path.join(job.workdir, "raw.onnx")
    example = tuple(torch.from_numpy(np.ascontiguousarray(job.example[name])) for name in job.spec.input_names)
    weights: dict[str, torch.Tensor] = {}
    with export_tracing(job.spec, RotaryEmbeddingFunction.apply, AttentionFunction.apply), _lean_export(weights), \
            warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints: shapes are traced, values checked by validation
        torch.onnx.export(
            wrapper,
            example,
            path,
            dynamo=False,
            input_names=job.spec.input_names,
            output_names=job.spec.output_names,
            dynamic_axes=job.spec.dynamic_axes(),
            opset_version=job.opset,
            do_constant_folding=True,
            export_params=True,
            keep_initializers_as_inputs=False,
            training=torch.onnx.TrainingMode.EVAL,
            custom_opsets={DOMAIN: VERSION},  # onnxport.Attention in every family, RotaryEmbedding too in RoFormer
        )
    raw = onnx.load(path)  # without captured weights (another torch), they are in the file, external when > 2 GB
    if weights:
        _attach_initializers(raw, weights, job.workdir)
    # Parameters traced through the wrapper are named ``model.<HF name>``; keep the HF names.
    rename_tensors(raw.graph, {i.name: i.name[len("model."):] for i in raw.graph.initializer
                               if i.name.startswith("model.")})
    check_attention_count(raw, job)

    @torch.no_grad()
    def call(*args):
        return wrapper(*args)

    from .native_chunks import query_chunks, splits_queries

    run_native = native_runner(job.spec, call, lambda array, tensor: torch.from_numpy(array),
                               lambda out: out.detach().cpu().numpy(),
                               (lambda rows: query_chunks(model, rows)) if splits_queries(model) else None)
    return Converted(model=raw, run_native=run_native, versions={"torch": torch.__version__},
                     random_weights=random_weights)


class _IOWrapper(nn.Module):
    """Positional io_spec inputs -> the model's HF keyword call -> outputs in io_spec order."""

    def __init__(self, model, spec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, *args):
        return call_with_spec(self.model, self.spec, args)


@contextlib.contextmanager
def _lean_export(weights: dict) -> Iterator[None]:
    """``torch.onnx.export`` (TorchScript) without its copies of the weights: two of its passes are
    wrapped for the duration of the call (each only if this torch has it; the graph is the same either way).

    * Whole-graph shape inference clones every node into a one-node ONNX model whose weights are
      constants, and serialises it: the word-embedding Gather alone costs two copies of that matrix.
      Float tensors of 1 KiB and more are left out of its constants; it needs only their shapes,
      which are in the graph's types.
    * The encoder builds a ModelProto holding every weight, serialises it, and Python parses the bytes
      again: about three copies of the weights (4.5 GiB of RSS for XLM-R base). The pass before it
      hands over the final {initializer name: tensor}: we keep that and give the encoder an empty one,
      so it writes the graph alone, the weights left as trailing graph inputs (``_attach_initializers``).
    """
    from torch import _C

    def shape_inference(original):
        def run(graph, params, opset):
            values = {k: v for k, v in params.items() if not _is_weight(v)}
            return original(graph, values, opset)
        return run

    def deduplicate(original):
        def run(graph, params, training):
            params = original(graph, params, training)
            weights.update(params)
            return {}
        return run

    patched = {name: wrap for name, wrap in (("_jit_pass_onnx_graph_shape_type_inference", shape_inference),
                                             ("_jit_pass_onnx_deduplicate_initializers", deduplicate))
               if hasattr(_C, name)}
    originals = {name: getattr(_C, name) for name in patched}
    for name, wrap in patched.items():
        setattr(_C, name, wrap(originals[name]))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(_C, name, original)


def _is_weight(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.nbytes >= 1024


def _attach_initializers(model: onnx.ModelProto, weights: dict, workdir: str) -> None:
    """The captured weights as initializers, as torch's encoder writes them (in graph-input order, raw
    little-endian bytes); those of 1 KiB and more go to ``workdir/RAW_DATA_FILE`` as external data, one
    tensor at a time, so the proto stays small and each folded constant is freed once written."""
    graph = model.graph
    params = [value.name for value in graph.input if value.name in weights]
    inputs = [value for value in graph.input if value.name not in weights]
    if len(params) != len(weights):
        raise ExportError(f"torch.onnx.export left weights out of the graph: {sorted(set(weights) - set(params))[:5]}")
    del graph.input[:]
    graph.input.extend(inputs)
    with open(os.path.join(workdir, RAW_DATA_FILE), "wb") as fh:
        for name in params:
            tensor = weights.pop(name).detach().contiguous()
            if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the same bytes as int16
                array, data_type = tensor.view(torch.int16).numpy(), onnx.TensorProto.BFLOAT16
            else:
                array = tensor.numpy()
                data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
            init = graph.initializer.add()
            init.dims.extend(array.shape)
            init.data_type = data_type
            init.name = name
            if array.nbytes < 1024:
                init.raw_data = array.tobytes()
                continue
            offset = fh.tell()
            fh.write(array.reshape(-1).view(np.uint8).data)
            for key, value in (("location", RAW_DATA_FILE), ("offset", offset), ("length", array.nbytes)):
                entry = init.external_data.add()
                entry.key, entry.value = key, str(value)
            init.data_location = onnx.TensorProto.EXTERNAL


class RotaryEmbeddingFunction(torch.autograd.Function):
    """Eager math while tracing (so shapes flow on); one ``onnxport.RotaryEmbedding`` node in the graph."""

    @staticmethod
    def forward(ctx, x, sin, cos):
        # The op's defining formula (rotary_op docstring), equal to reference apply_rotary.
        x_even, x_odd = x[..., 0::2], x[..., 1::2]
        y_even = x_even * cos - x_odd * sin
        y_odd = x_odd * cos + x_even * sin
        return torch.stack([y_even, y_odd], dim=-1).reshape_as(x)

    @staticmethod
    def symbolic(g, x, sin, cos):
        y = g.op(f"{DOMAIN}::{OP_TYPE}", x, cos, sin)  # the op's input order is (X, cos, sin)
        y.setType(x.type())
        return y



class AttentionFunction(torch.autograd.Function):
    """Eager math while tracing (so shapes flow on); one ``onnxport.Attention`` node in the graph."""

    @staticmethod
    def forward(ctx, query, key, value, mask_bias, num_heads, scale):
        # The op's defining formula (attention_op docstring), the reference encoder's order of operations.
        scores = torch.matmul(query, key.transpose(-1, -2)) * scale + mask_bias
        context = torch.matmul(torch.softmax(scores, dim=-1), value).permute(0, 2, 1, 3)
        return context.reshape(context.shape[0], context.shape[1], -1)

    @staticmethod
    def symbolic(g, query, key, value, mask_bias, num_heads, scale):
        y = g.op(f"{attention_op.DOMAIN}::{attention_op.OP_TYPE}", query, key, value, mask_bias,
                 num_heads_i=int(num_heads), scale_f=float(scale))
        # (batch, rows, heads * head_dim), the static width known: shapes downstream stay sharp.
        sizes = query.type().varyingSizes() or [None] * 4
        width = sizes[1] * sizes[3] if len(sizes) == 4 and sizes[1] and sizes[3] else None
        y.setType(query.type().with_sizes([sizes[0], sizes[2], width]))
        return y
