"""``onnxport triton EXPORT_DIR REPO_DIR``: a Triton Inference Server model repository from an export.

Two models, both from the export's ``onnxport.json``:

- ``NAME``: a Python-backend model that takes raw text (``TEXT``; ``TEXT_PAIR`` optional for
  text-classification; ``QUESTION`` + ``CONTEXT`` for question-answering; ``TEXT`` + ``CHOICES``, a JSON
  list, for multiple-choice; ``QUERY`` + ``DOCUMENTS``, a JSON list, for rerank) and answers ``RESULT``, the
  JSON text of ``onnxport.runtime.pipeline``'s result per row; tasks whose results are numbers also answer
  them as an FP32 tensor (``EMBEDDING`` (rows, dim) for feature-extraction and sentence embeddings,
  ``SCORES`` (rows, documents) for rerank, NaN past a row's last document). Triton's dynamic batcher merges requests (all of shape [1]), and the pipeline sorts each
  merged batch by token length, so ragged traffic batches well. The server's Python needs onnxport.
- ``NAME_onnx``: an onnxruntime-backend model whose config comes from the IO spec (names, types, dims -1
  on dynamic axes), for GPU hosts that tokenize on the client; TensorRT fp16 / engine cache optional.

Triton's dynamic batcher only merges requests of equal shape, so raw token tensors of ragged lengths
barely batch on ``NAME_onnx``; text through ``NAME`` does.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ConfigError, ModelFileError, TaskError
from ..artifact import layout
from ..exporters.onnx_file import overlapping, staged_directory
from . import row_fields

TEMPLATE = os.path.join(os.path.dirname(__file__), "triton_model.py")
MODEL_FILE = "model.onnx"  # the onnxruntime backend's default_model_filename in a version folder

TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


@dataclass
class TritonRepository:
    """What ``write_repository`` wrote."""

    repo_dir: str
    text_model: str
    onnx_model: str
    task: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: ["RESULT"])

    def summary(self) -> str:
        return (f"wrote {self.repo_dir}: {self.text_model} (python backend, {self.task}, inputs "
                f"{', '.join(self.inputs)} -> {', '.join(self.outputs)}) and {self.onnx_model} (onnxruntime backend)")


def write_repository(export_dir: str | os.PathLike, repo_dir: str | os.PathLike, name: Optional[str] = None, *,
                     max_batch_size: int = 32, instances: int = 1, max_queue_delay_us: int = 2000,
                     kind: str = "cpu", tensorrt: bool = False, trt_fp16: bool = False,
                     trt_engine_cache_dir: Optional[str] = None, pipeline_kwargs: Optional[Mapping[str, Any]] = None,
                     intra_op_threads: Optional[int] = None, force: bool = False) -> TritonRepository:
    """Write ``REPO_DIR/NAME`` (python backend, text in) and ``REPO_DIR/NAME_onnx`` (onnxruntime backend)."""
    from ..artifact.spec_file import read_export_dir

    export_dir = os.path.abspath(os.fspath(export_dir))
    repo_dir = os.path.abspath(os.fspath(repo_dir))
    name = name or os.path.basename(export_dir.rstrip(os.sep))
    _check_options(name, max_batch_size, instances, max_queue_delay_us, kind, tensorrt, trt_fp16,
                   trt_engine_cache_dir, intra_op_threads)
    _, spec = read_export_dir(export_dir)
    try:
        fields = row_fields(spec.task)
    except TaskError as err:
        raise TaskError(f"{export_dir}: {err} Re-export with one of those tasks.") from None
    _check_tokenizer(export_dir, spec.model_type)
    if not os.path.isfile(layout.model_path(export_dir)):
        raise ModelFileError(f"{export_dir} has no {layout.model_file()}; re-export it with `onnxport export`.")
    pipeline_kwargs = dict(pipeline_kwargs or {})
    try:
        json.dumps(pipeline_kwargs)
    except TypeError as err:
        raise ConfigError(f"pipeline_kwargs must be JSON values ({err}).") from None

    targets = {name: os.path.join(repo_dir, name), f"{name}_onnx": os.path.join(repo_dir, f"{name}_onnx")}
    for target in targets.values():
        if overlapping(export_dir, target):
            raise ConfigError(f"The export {export_dir} and the model directory {target} overlap; write the "
                              "repository elsewhere or pick another --name.")
        if os.path.exists(target) and not force:
            raise ModelFileError(f"{target} already exists; pass --force to replace it.")

    # Both models are built beside their final place and swapped in only when complete (the exporter's
    # staged_directory; every file of a model directory is ours), so a failure leaves a repository as it was.
    whole = lambda entry: True  # noqa: E731
    with staged_directory(targets[name], whole, ModelFileError) as text_dir, \
            staged_directory(targets[f"{name}_onnx"], whole, ModelFileError) as onnx_dir:
        os.makedirs(os.path.join(text_dir, "1"))
        shutil.copytree(export_dir, os.path.join(text_dir, "1", "export"))
        shutil.copy(TEMPLATE, os.path.join(text_dir, "1", "model.py"))
        parameters = {"task": spec.task, "pipeline_batch_size": str(max_batch_size), "provider": "cpu",
                      "pipeline_kwargs": json.dumps(pipeline_kwargs, sort_keys=True)}
        if intra_op_threads:
            parameters["intra_op_threads"] = str(intra_op_threads)
        _write(os.path.join(text_dir, "config.pbtxt"),
               text_model_config(name, spec.task, max_batch_size, instances, max_queue_delay_us, parameters,
                                 numbers_dims=fields.numbers_dims(spec)))

        os.makedirs(os.path.join(onnx_dir, "1"))
        # Triton's name for the graph; its external data keeps the name the graph refers to it by.
        shutil.copy(layout.model_path(export_dir), os.path.join(onnx_dir, "1", MODEL_FILE))
        data = layout.data_path(export_dir)
        if data:
            shutil.copy(data, os.path.join(onnx_dir, "1", os.path.basename(data)))
        _write(os.path.join(onnx_dir, "config.pbtxt"),
               onnx_model_config(f"{name}_onnx", spec, max_batch_size, instances, max_queue_delay_us, kind,
                                 tensorrt, trt_fp16, trt_engine_cache_dir))
    numbers = [fields.numbers_name.upper()] if fields.numbers_name else []
    return TritonRepository(repo_dir, name, f"{name}_onnx", spec.task, [f.upper() for f in fields.all],
                            ["RESULT", *numbers])


def _check_options(name, max_batch_size, instances, max_queue_delay_us, kind, tensorrt, trt_fp16,
                   trt_engine_cache_dir, intra_op_threads) -> None:
    if not name or os.sep in name or name.startswith("."):
        raise ConfigError(f"--name {name!r} is not a model directory name; give a plain name like 'classifier'.")
    for option, value, least in (("--max-batch-size", max_batch_size, 1), ("--instances", instances, 1),
                                 ("--max-queue-delay-us", max_queue_delay_us, 0)):
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"{option} must be an integer >= {least}, got {value!r}.")
    if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
        raise ConfigError(f"--threads must be an integer >= 1, got {intra_op_threads!r}.")
    if kind not in ("cpu", "gpu"):
        raise ConfigError(f"--kind must be 'cpu' or 'gpu', got {kind!r}.")
    if (tensorrt or trt_fp16 or trt_engine_cache_dir) and kind != "gpu":
        raise ConfigError("TensorRT options (--tensorrt, --trt-fp16, --trt-engine-cache) need --kind gpu.")
    if (trt_fp16 or trt_engine_cache_dir) and not tensorrt:
        raise ConfigError("--trt-fp16 and --trt-engine-cache configure TensorRT; add --tensorrt.")


def _check_tokenizer(export_dir: str, model_type: str) -> None:
    from ..tokenizers.diagnosis import tokenizer_problem
    from ..families import FAMILIES
    from ..tokenizers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(export_dir)
    except Exception as err:  # missing, corrupt, or another class's files: the runtime's words for each
        family = FAMILIES.get(model_type)
        why = tokenizer_problem(export_dir, err, family).message if family else f"{export_dir} has no usable tokenizer ({err})"
        raise ModelFileError(f"{why}. The text model tokenizes on the server, so it needs a tokenizer that loads.") from None


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _pbtxt_string(value: str) -> str:
    return json.dumps(value)  # protobuf text format reads JSON's escapes for these (quotes, backslashes, \n)


def _batching(max_queue_delay_us: int) -> str:
    return f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"


def _instances(instances: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {instances}\n    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n  }}\n]\n"


def _parameters(parameters: Mapping[str, str]) -> str:
    return "".join(
        f"parameters {{\n  key: {_pbtxt_string(k)}\n  value: {{ string_value: {_pbtxt_string(v)} }}\n}}\n"
        for k, v in parameters.items()
    )


def _tensor(name: str, data_type: str, dims: list[int], optional: bool = False) -> str:
    text = f"  {{\n    name: {_pbtxt_string(name)}\n    data_type: {data_type}\n    dims: [ {', '.join(map(str, dims))} ]\n"
    return text + ("    optional: true\n" if optional else "") + "  }"


def text_model_config(name: str, task: str, max_batch_size: int, instances: int, max_queue_delay_us: int,
                      parameters: Mapping[str, str], numbers_dims: Optional[list[int]] = None) -> str:
    """config.pbtxt of the Python-backend model: one string per row in, one JSON string per row out, and for
    tasks whose results are numbers (``RowFields.output``) an FP32 tensor of ``numbers_dims`` per row."""
    fields = row_fields(task)
    inputs = [_tensor(f.upper(), "TYPE_STRING", [1]) for f in fields.required]
    inputs += [_tensor(f.upper(), "TYPE_STRING", [1], optional=True) for f in fields.optional]
    inputs_block = ",\n".join(inputs)
    outputs = [_tensor("RESULT", "TYPE_STRING", [1])]
    if fields.numbers_name and numbers_dims:
        outputs.append(_tensor(fields.numbers_name.upper(), "TYPE_FP32", numbers_dims))
    outputs_block = ",\n".join(outputs)
    return (
        f"name: {_pbtxt_string(name)}\nbackend: \"python\"\nmax_batch_size: {max_batch_size}\n"
        f"input [\n{inputs_block}\n]\n"
        f"output [\n{outputs_block}\n]\n"
        + _batching(max_queue_delay_us) + _instances(instances, "cpu") + _parameters(parameters)
    )


def onnx_model_config(name: str, spec, max_batch_size: int, instances: int, max_queue_delay_us: int,
                      kind: str = "cpu", tensorrt: bool = False, trt_fp16: bool = False,
                      trt_engine_cache_dir: Optional[str] = None) -> str:
    """config.pbtxt of the onnxruntime-backend model, from the IO spec.

    Every tensor of an onnxport export leads with the batch axis, which Triton leaves out of ``dims``
    when ``max_batch_size`` > 0; the other dynamic axes (sequence, past length) become -1.
    """
    tensors = (*spec.inputs, *spec.outputs)
    batched = all(t.shape and isinstance(t.shape[0], str) for t in tensors)

    def block(specs) -> str:
        entries = []
        for t in specs:
            if t.dtype not in TRITON_TYPES:
                raise ModelFileError(f"{t.name} has dtype {t.dtype}, which the Triton config cannot declare.")
            shape = t.shape[1:] if batched else t.shape
            entries.append(_tensor(t.name, TRITON_TYPES[t.dtype], [-1 if isinstance(d, str) else int(d) for d in shape]))
        return ",\n".join(entries)

    text = (
        f"name: {_pbtxt_string(name)}\nbackend: \"onnxruntime\"\nmax_batch_size: {max_batch_size if batched else 0}\n"
        f"default_model_filename: \"{MODEL_FILE}\"\n"
        f"input [\n{block(spec.inputs)}\n]\noutput [\n{block(spec.outputs)}\n]\n"
    )
    if batched:
        text += _batching(max_queue_delay_us)
    text += _instances(instances, kind)
    if tensorrt:
        parameters = [("precision_mode", "FP16" if trt_fp16 else "FP32")]
        if trt_engine_cache_dir:
            parameters += [("trt_engine_cache_enable", "true"), ("trt_engine_cache_path", trt_engine_cache_dir)]
        rendered = "".join(f"          parameters {{ key: {_pbtxt_string(k)} value: {_pbtxt_string(v)} }}\n"
                           for k, v in parameters)
        text += ("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
                 f"      {{\n          name: \"tensorrt\"\n{rendered}      }}\n    ]\n  }}\n}}\n")
    return text


# -- command line -------------------------------------------------------------------------------------------
CLI_HELP = "write a Triton Inference Server model repository (text model + onnxruntime model) from an export"
CLI_DESCRIPTION = """\
Writes REPO_DIR/NAME and REPO_DIR/NAME_onnx from an `onnxport export` directory.

NAME (Python backend) takes raw text and answers with the JSON of onnxport's pipeline per row: inputs TEXT
(+ optional TEXT_PAIR for text-classification), QUESTION + CONTEXT for question-answering, TEXT + CHOICES
(a JSON list) for multiple-choice, QUERY + DOCUMENTS (a JSON list) for rerank; output RESULT, plus the
numbers as FP32 where the task's results are numbers: EMBEDDING (feature-extraction, sentence-embeddings)
and SCORES (rerank: one score per document, NaN past a row's last document). Use it by default: clients send text, the server
tokenizes, and Triton's dynamic batcher plus the pipeline's length-sorted batches serve ragged traffic
well. The server's Python must have onnxport installed (`pip install onnxport`; numpy < 2 for Triton
2.51's Python backend).

NAME_onnx (onnxruntime backend) takes token tensors (input_ids, attention_mask, ...) and returns the
graph's outputs; its config comes from the export's IO spec. Use it on GPU hosts where clients tokenize
themselves and requests have equal lengths (Triton batches only requests of equal shape); --kind gpu
--tensorrt [--trt-fp16] [--trt-engine-cache DIR] turn on TensorRT.
"""


def add_cli_parser(subparsers):
    """Register ``onnxport triton`` on the CLI's subparsers; returns the parser."""
    import argparse

    p = subparsers.add_parser("triton", help=CLI_HELP, description=CLI_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", help="directory written by `onnxport export` (with tokenizer files)")
    p.add_argument("repo_dir", help="Triton model repository to write into (created if missing)")
    p.add_argument("--name", default=None, help="model name (default: the export directory's basename)")
    p.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size of both models (default 32)")
    p.add_argument("--instances", type=int, default=1, help="model instances per model (default 1)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="dynamic batcher's wait for more requests, microseconds (default 2000)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per text-model instance")
    p.add_argument("--pipeline-kwargs", default=None, metavar="JSON",
                   help='options for every pipeline call, e.g. \'{"top_k": 2}\' or \'{"aggregation_strategy": "simple"}\'')
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind of NAME_onnx (default cpu)")
    p.add_argument("--tensorrt", action="store_true", help="NAME_onnx: TensorRT execution accelerator (--kind gpu)")
    p.add_argument("--trt-fp16", action="store_true", help="NAME_onnx: TensorRT in fp16")
    p.add_argument("--trt-engine-cache", default=None, metavar="DIR", help="NAME_onnx: TensorRT engine cache path")
    p.add_argument("--force", action="store_true", help="replace NAME and NAME_onnx if they exist")
    return p


def cli_main(args) -> int:
    """Run ``onnxport triton``; onnxport errors propagate to the CLI's one-line handler."""
    pipeline_kwargs = None
    if args.pipeline_kwargs:
        try:
            pipeline_kwargs = json.loads(args.pipeline_kwargs)
        except ValueError as err:
            raise ConfigError(f"--pipeline-kwargs is not JSON ({err}).") from None
        if not isinstance(pipeline_kwargs, dict):
            raise ConfigError("--pipeline-kwargs must be a JSON object, e.g. '{\"top_k\": 2}'.")
    repository = write_repository(
        args.export_dir, args.repo_dir, args.name, max_batch_size=args.max_batch_size, instances=args.instances,
        max_queue_delay_us=args.max_queue_delay_us, kind=args.kind, tensorrt=args.tensorrt, trt_fp16=args.trt_fp16,
        trt_engine_cache_dir=args.trt_engine_cache, pipeline_kwargs=pipeline_kwargs, intra_op_threads=args.threads,
        force=args.force,
    )
    print(repository.summary())
    return 0


__all__ = ["TritonRepository", "add_cli_parser", "cli_main", "onnx_model_config", "text_model_config",
           "write_repository"]
