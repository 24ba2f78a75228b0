"""``export(checkpoint_dir, out_dir, framework, task)``: an HF-format checkpoint to an ONNX directory.

``export()`` reads as its stages, each a function below that reads alone and hands the next a small frozen
value (logged on the ``onnxport`` logger; ``ExportReport.seconds`` times them):

1. ``read_checkpoint`` -> ``Checkpoint``: config.json, the family, the task (a sentence-transformers directory,
   ``modules.json`` at its root, is read by ``sentence_stack.py``: its Transformer module is the checkpoint);
2. ``plan_graph`` -> ``GraphPlan``: the IO spec (``artifact/io_spec.py``) and the example inputs;
3. ``convert`` -> the ONNX proto and a ``Conversion``: the front end (``front_end.py`` describes the contract,
   ``pt.py`` / ``tf.py`` / ``flax.py`` keep it); a sentence-embeddings graph gets its pooling modules appended
   (``sentence_head.py``);
4. ``clean_up`` -> ``CleanGraph``: the framework-independent clean-up (``onnx_file.py``), fp16 when asked;
5. ``save_and_check`` -> ``SavedModel``: the ONNX file(s) and the full ONNX checker;
6. ``validate_against_native`` -> ``ValidationReport``: ONNX Runtime vs the native model (``validate.py``);
7. ``write_files_and_spec``: config.json, the tokenizer files and ``onnxport.json`` (``artifact/spec_file.py``).

``validate_export`` (``onnxport validate``) runs stage 6 again on an export directory.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import __version__
from ..artifact import io_spec
from ..artifact import layout
from ..artifact.files import export_file_names
from ..artifact.io_spec import TASKS, IOSpec, task_for_head
from ..artifact.cross_encoder import RECORD_KEY as CROSS_ENCODER_KEY
from ..artifact.spec_file import SPEC_FILE, read_export_dir, write_spec_file
from ..checkpoints import weight_names
from ..configs import AutoConfig
from ..errors import ExportError, InputError, ModelFileError, TaskError, ValidationError
from ..families import family_of
from ..sentence_stack import SentenceStack, is_sentence_transformers_dir, read_sentence_stack, transformer_directory
from . import validate as validation
from .front_end import RANDOM_INIT_SEED, ExportJob, front_end
from .tokenizer_files import write_tokenizer
from .validate import ValidationReport

logger = logging.getLogger("onnxport")

DEFAULT_OPSET = 17


@dataclass
class ExportReport:
    out_dir: str
    model_path: str
    framework: str
    task: str
    with_past: bool
    opset: int
    spec: Any
    files: list[str]
    validation: Optional[Any]  # validate.ValidationReport
    seconds: dict[str, float]
    custom_nodes: int
    dtype: str = "fp32"

    @property
    def max_abs_diff(self) -> Optional[float]:
        return None if self.validation is None else self.validation.max_abs_diff


def _check_out_dir(checkpoint_dir: str, out_dir: str, force: bool) -> None:
    """Refuse, before anything is written, an OUT that overlaps the checkpoint or holds files without ``force``."""
    from .onnx_file import overlapping  # onnx: loaded by the first export, not by `import onnxport.exporters`

    if overlapping(checkpoint_dir, out_dir):
        raise ExportError(
            f"Output directory {out_dir!r} and checkpoint directory {checkpoint_dir!r} are the same or one is "
            "inside the other; exporting would overwrite or delete checkpoint files. Choose an output directory "
            "outside the checkpoint."
        )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"Output path {out_dir!r} exists and is not a directory; choose a directory path.")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise ExportError(
            f"Output directory {out_dir!r} exists and is not empty; choose another one or pass force=True "
            "(--force) to replace the export files in it."
        )


def _task_from_architectures(config, family, checkpoint_dir: str) -> str:
    """The task of the checkpoint's own head (``architectures`` in config.json), e.g. ForMaskedLM -> fill-mask; a
    sentence-transformers CrossEncoder's sequence classifier -> rerank (checked before anything reads
    modules.json: sentence-transformers 5 writes one for cross-encoders too)."""
    from .cross_encoder import is_cross_encoder

    for arch in config.architectures or ():
        head = arch[len(family.class_prefix):] if arch.startswith(family.class_prefix) else ""
        if head == TASKS["rerank"].head and is_cross_encoder(checkpoint_dir, config):
            return "rerank"
        if any(t.head == head for t in TASKS.values()):
            return task_for_head(head)
    raise ExportError(f"Cannot infer the task from the checkpoint's architectures; pass task=, one of {', '.join(TASKS)}.")


def export(
    checkpoint_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    framework: str = "pt",
    task: Optional[str] = None,
    opset: Optional[int] = None,
    with_past: bool = False,
    validate: bool = True,
    force: bool = False,
    atol: Optional[float] = None,
    external_data_threshold: Optional[int] = None,
    allow_missing_weights: bool = False,
    copy_tokenizer: bool = True,
    dtype: str = "fp32",
    with_pooler: Optional[bool] = None,
    validate_length: Optional[int] = None,
    validation_memory: Optional[int | str] = None,
) -> ExportReport:
    """Export ``checkpoint_dir`` for ``task`` from ``framework`` into ``out_dir``; see the module docstring.

    ``dtype="fp16"`` writes a half-precision graph for GPU hosts (``fp16.py``: fp16 weights, LayerNorm /
    softmax / attention mask in fp32, float32 outputs, float16 cache), validated against the fp32 native model.

    ``out_dir`` is written all or nothing: the export is built and validated in a directory beside it
    (``.onnxport-tmp-*``, same filesystem) and swapped in at the end, so a failed export — conversion error,
    ``ValidationError``, interruption — leaves ``out_dir`` exactly as it was (absent if it was absent).
    A non-empty ``out_dir`` is refused unless ``force=True``, which replaces the export files in it (those
    of ``export_file_names``: model, external data, config, tokenizer files, ``onnxport.json`` and whatever
    the old ``onnxport.json`` lists) and keeps every other file and folder (your notes, results) as they were,
    like ``save_pretrained`` into a directory that holds other files. An ``out_dir`` that is the checkpoint
    directory, inside it or containing it is refused before anything is written.

    Weights the checkpoint lacks are refused unless ``allow_missing_weights``; then they are initialised from
    ``RANDOM_INIT_SEED`` and listed in ``onnxport.json`` (``random_weights``). A feature-extraction export of a
    checkpoint without a pooler (a masked-LM checkpoint) leaves ``pooler_output`` out unless ``with_pooler=True``.

    Validation runs within the machine's memory (``validate.plan_validation``): its cases are planned from an
    estimate of their peak (the native model's and ONNX Runtime's) against ``validation_memory`` (bytes or
    "6GiB"; default $ONNXPORT_VALIDATION_MEMORY, else 80% of MemAvailable); the longest case runs to the end
    of the position table (``validate_length`` tokens when given) at batch 1 when batch 2 would be large, the
    PyTorch model's attention in chunks of query rows; what cannot fit is refused (ExportError) before the
    checkpoint is converted. ``report.validation.plan`` (and ``onnxport.json``) says what ran at which length.
    """
    from . import onnx_file  # onnx: loaded by the first export, not by `import onnxport.exporters`

    options = _checked_options(checkpoint_dir, out_dir, framework, task, opset, with_past, validate, force, atol,
                               external_data_threshold, allow_missing_weights, copy_tokenizer, dtype, with_pooler,
                               validate_length, validation_memory)
    clock = _StageClock()
    checkpoint = read_checkpoint(options)
    converter = front_end(options.framework)  # the framework is installed: checked before anything is built
    _check_out_dir(options.checkpoint_dir, options.out_dir, options.force)
    plan = plan_graph(options, checkpoint)
    clock.lap("read")

    # Everything is written and validated in a directory beside OUT, then swapped in: a failure at any
    # stage leaves OUT as it was. User files in OUT (not export files) are carried across.
    owned = export_file_names(options.out_dir)
    with onnx_file.staged_directory(options.out_dir, owned.__contains__, ExportError) as build_dir, \
            tempfile.TemporaryDirectory(prefix="onnxport-export-") as workdir:
        model, conversion = convert(options, checkpoint, plan, converter, workdir)
        clock.lap("convert")
        graph = clean_up(model, options, checkpoint, plan, workdir)
        clock.lap("finalize")
        saved = save_and_check(model, options, build_dir, workdir)
        del model  # ONNX Runtime validates from the saved file: the proto is not held beside its copy
        clock.lap("save")
        report_validation = None
        if options.validate:
            report_validation = validate_against_native(options, graph, conversion, saved)
            clock.lap("validate")
        names = write_files_and_spec(options, checkpoint, graph, conversion, saved, report_validation, build_dir)
        clock.lap("write")

    model_path = os.path.join(options.out_dir, layout.model_file(options.dtype))
    files = [os.path.join(options.out_dir, name) for name in names]
    report = ExportReport(options.out_dir, model_path, options.framework, checkpoint.task, options.with_past,
                          options.opset, graph.spec, files, report_validation, clock.seconds, graph.custom_nodes,
                          options.dtype)
    logger.info("exported %s in %.1fs (%s)", model_path, sum(clock.seconds.values()), clock.seconds)
    return report


# -- the stages' values: what one stage hands the next ----------------------------------------------------
@dataclass(frozen=True)
class ExportOptions:
    """``export()``'s arguments, checked and normalised (paths as strings, the default opset, the dtype's name)."""

    checkpoint_dir: str
    out_dir: str
    framework: str
    task: Optional[str]  # None: the checkpoint's own head decides (read_checkpoint)
    opset: int
    with_past: bool
    validate: bool
    force: bool
    atol: Optional[float]
    external_data_threshold: Optional[int]
    allow_missing_weights: bool
    copy_tokenizer: bool
    dtype: str  # "fp32" or "fp16"
    with_pooler: Optional[bool]  # None: as the checkpoint holds pooler weights or not (plan_graph)
    validate_length: Optional[int] = None  # the longest validation case's tokens (None: the position table's)
    validation_memory: Optional[int] = None  # bytes validation may use (None: $ONNXPORT_VALIDATION_MEMORY / meminfo)


@dataclass(frozen=True)
class Checkpoint:
    """What ``read_checkpoint`` found: the config (set up for the task), the family, the task; for a
    sentence-transformers directory its module stack, and the Transformer module's directory (``model_dir``:
    config, weights, tokenizer), else ``model_dir`` is the checkpoint directory."""

    config: Any  # onnxport.configs.EncoderConfig
    family: Any  # onnxport.families.Family
    task: str
    cross_encoder: Optional[Any] = None  # rerank: artifact.cross_encoder.CrossEncoderRecord
    model_dir: str = ""
    sentence: Optional[SentenceStack] = None


@dataclass(frozen=True)
class GraphPlan:
    """What ``plan_graph`` decided: the graph's signature and the example inputs the front end traces with."""

    spec: IOSpec
    example: dict[str, np.ndarray]
    # What the front end traces: ``spec`` itself, or for sentence-embeddings the encoder (feature-extraction
    # without pooler) that sentence_head.append extends to ``spec``.
    trace_spec: Optional[IOSpec] = None
    validation: Optional[Any] = None  # validate.ValidationPlan (None without validation, or fp16's own cases)


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` kept besides the graph: versions, weights initialised at random, and what validation
    compares against (the native outputs, or for fp16 the native runner; None without validation)."""

    versions: dict[str, str]
    random_weights: tuple[str, ...]
    native: Optional[Any]  # validate.NativeOutputs | validate.NativeRunner


@dataclass(frozen=True)
class CleanGraph:
    """What ``clean_up`` made of the graph: its IO spec (the cache float16 in fp16 exports), the rotary nodes it
    holds, and the fp16 pass's report."""

    spec: IOSpec
    custom_nodes: int  # onnxport.RotaryEmbedding nodes
    precision: Optional[Any]  # fp16.Fp16Report
    attention_nodes: int = 0  # onnxport.Attention nodes


@dataclass(frozen=True)
class SavedModel:
    """What ``save_and_check`` wrote into the build directory: the model's path and the files' names."""

    path: str
    files: tuple[str, ...]


class _StageClock:
    """Seconds per stage, for ``ExportReport.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


# -- the stages, in order ----------------------------------------------------------------------------------
def _checked_options(checkpoint_dir, out_dir, framework, task, opset, with_past, validate, force, atol,
                     external_data_threshold, allow_missing_weights, copy_tokenizer, dtype,
                     with_pooler, validate_length=None, validation_memory=None) -> ExportOptions:
    """The arguments as ``ExportOptions``; the cheap checks first, so mistakes fail before any heavy import."""
    from . import fp16  # onnx: loaded by the first export

    if task is not None:
        io_spec.get_task(task)
    dtype = fp16.canonical_dtype(dtype)
    if validate_length is not None and (isinstance(validate_length, bool) or not isinstance(validate_length, int)
                                        or validate_length < 1):
        raise InputError(f"validate_length must be a positive number of tokens, got {validate_length!r}.")
    if validation_memory is not None:
        validation_memory = validation.parse_memory(validation_memory)
    return ExportOptions(os.fspath(checkpoint_dir), os.fspath(out_dir), framework, task,
                         DEFAULT_OPSET if opset is None else int(opset), with_past, validate, force, atol,
                         external_data_threshold, allow_missing_weights, copy_tokenizer, dtype, with_pooler,
                         validate_length, validation_memory)


def _is_cross_encoder_dir(checkpoint_dir: str) -> bool:
    """A CrossEncoder directory: sentence-transformers 5 writes a modules.json for it too, but it is a sequence
    classifier (task rerank), not an embedding stack."""
    from .cross_encoder import is_cross_encoder

    if not os.path.isfile(os.path.join(checkpoint_dir, "config.json")):
        return False
    return is_cross_encoder(checkpoint_dir, AutoConfig.from_pretrained(checkpoint_dir))


def read_checkpoint(options: ExportOptions) -> Checkpoint:
    """Stage 1, read config and task: config.json, the family, the task (given, or the checkpoint's head), checked
    for the family and ``with_past``; a text-generation export gets a causal decoder with a cache."""
    logger.info("[1/7] reading %s", options.checkpoint_dir)
    if not os.path.isdir(options.checkpoint_dir):
        raise ExportError(f"Checkpoint directory {options.checkpoint_dir!r} does not exist.")
    model_dir, sentence = options.checkpoint_dir, None
    if is_sentence_transformers_dir(options.checkpoint_dir) and not _is_cross_encoder_dir(options.checkpoint_dir):
        if options.task in (None, "sentence-embeddings"):
            sentence = read_sentence_stack(options.checkpoint_dir)
            model_dir = sentence.transformer_dir
        else:  # another task exports the Transformer module alone
            model_dir = transformer_directory(options.checkpoint_dir)
    elif options.task == "sentence-embeddings":
        raise TaskError(f"{options.checkpoint_dir} has no modules.json: sentence-embeddings exports a "
                        "sentence-transformers model directory (SentenceTransformer.save writes one). For a plain "
                        "transformers checkpoint use --task feature-extraction.")
    config = AutoConfig.from_pretrained(model_dir)
    family = family_of(config)
    task = "sentence-embeddings" if sentence else options.task or _task_from_architectures(config, family, model_dir)
    io_spec.check_task(task, family, options.with_past, config)
    cross_encoder = None
    if task == "rerank":  # how CrossEncoder.predict scores: refused here when onnxport cannot apply it
        from .cross_encoder import cross_encoder_record

        cross_encoder = cross_encoder_record(options.checkpoint_dir, config)
    if task == "text-generation" and not config.is_decoder:
        logger.info("text-generation: setting is_decoder=True (causal self-attention)")
        config.is_decoder = True
    if task == "text-generation":
        config.use_cache = True
    return Checkpoint(config, family, task, cross_encoder, model_dir, sentence)


def plan_graph(options: ExportOptions, checkpoint: Checkpoint) -> GraphPlan:
    """Stage 2, the IO spec: the graph's inputs and outputs (``artifact/io_spec.py``), and example inputs of the
    export-time shape (``validate.EXAMPLE_SHAPE``, within the position table)."""
    with_pooler = options.with_pooler
    if with_pooler is None:  # only what the checkpoint holds: no random pooler by default
        with_pooler = any(name.split(".").count("pooler") for name in weight_names(checkpoint.model_dir))
    config = checkpoint.config
    if checkpoint.sentence is not None:  # the encoder is traced; its pooling modules are appended after
        spec = io_spec.build_io_spec(checkpoint.task, config, sentence_dimension=checkpoint.sentence.dimension)
        trace_spec = io_spec.build_io_spec("feature-extraction", config, pooler=False)
    else:
        spec = trace_spec = io_spec.build_io_spec(checkpoint.task, config, options.with_past, pooler=with_pooler)
    shape = validation.EXAMPLE_SHAPE
    past = shape["past"] if options.with_past else 0
    sequence = min(shape["sequence"], config.max_sequence_length - past)
    example = io_spec.make_inputs(trace_spec, shape["batch"], sequence, past=past, num_choices=shape["num_choices"],
                                  seed=0)
    return GraphPlan(spec, example, trace_spec, _plan_validation(options, config, spec, splits_queries=None))


def _plan_validation(options: ExportOptions, config, spec: IOSpec, splits_queries: Optional[bool]):
    """The validation plan (``validate.plan_validation``) of an fp32 export, refused here — before the checkpoint
    is converted — when it cannot fit. ``splits_queries`` None: as the framework's native runner will (PyTorch:
    unless attention scores depend on position differences, ``native_chunks.py``)."""
    if not options.validate or options.dtype != "fp32":
        return None
    if splits_queries is None:
        splits_queries = options.framework == "pt" and config.position_embedding_type not in (
            "relative_key", "relative_key_query")
    budget, source = validation.memory_budget(options.validation_memory)
    plan = validation.plan_validation(spec, config, options.framework, budget, source, options.validate_length,
                                      splits_queries)
    logger.info("%s", plan.describe())
    return plan


def convert(options: ExportOptions, checkpoint: Checkpoint, plan: GraphPlan, converter, workdir: str):
    """Stage 3, the front end: the framework's reference model traced to ONNX (``front_end.py`` states the
    contract; ``pt.py`` / ``tf.py`` / ``flax.py`` keep it). Returns the raw ``onnx.ModelProto`` and a
    ``Conversion``; for fp32 the native outputs validation needs are taken here and the framework model let go,
    so it shares memory neither with the artifact being written nor with ONNX Runtime's copy of the weights."""
    family, task = checkpoint.family, checkpoint.task
    logger.info("[2/7] converting %s %s (%s) to ONNX opset %d", family.model_type, task, options.framework, options.opset)
    job = ExportJob(checkpoint.model_dir, checkpoint.config, family, plan.trace_spec or plan.spec, options.opset,
                    plan.example, workdir, options.allow_missing_weights)
    converted = converter.convert(job)
    native = converted.run_native
    if checkpoint.sentence is not None:
        from . import sentence_head

        sentence_head.append(converted.model, checkpoint.sentence, options.opset)
        native = sentence_head.native_runner(checkpoint.sentence, native)
    if options.dtype == "fp32":  # (fp16.validate runs its own cases on the runner)
        cases = plan.validation
        if cases is not None and any(c.query_chunk for c in cases.cases) and not getattr(native, "splits_queries",
                                                                                         False):
            cases = _plan_validation(options, checkpoint.config, plan.spec, splits_queries=False)  # it cannot chunk
        native = validation.native_outputs(plan.spec, native, cases) if options.validate else None
        converted.run_native = None
    model, converted.model = converted.model, None  # the caller holds the one reference
    return model, Conversion(converted.versions, tuple(converted.random_weights), native)


def clean_up(model, options: ExportOptions, checkpoint: Checkpoint, plan: GraphPlan, workdir: str) -> CleanGraph:
    """Stage 4, artifact clean-up, in place (``onnx_file.finalize``: the rotary function, no training ops, weights
    once, IR version, names), the signature checked against the IO spec; the fp16 pass when asked."""
    from ..artifact import attention_op, rotary_op  # onnx: loaded by the first export
    from . import fp16, onnx_file

    logger.info("[3/7] cleaning up the graph")
    family, task = checkpoint.family, checkpoint.task
    onnx_file.finalize(model, producer_version=__version__,
                       graph_name=f"{family.class_prefix}_{task}".replace("-", "_"), base_dir=workdir)
    spec = plan.spec
    _check_signature(model, spec)
    custom_nodes = len(rotary_op.rotary_nodes(model))
    attention_nodes = len(attention_op.attention_nodes(model))
    precision = None
    if options.dtype == "fp16":
        precision = fp16.convert(model, base_dir=workdir)  # weights may be external data there
        spec = fp16.fp16_spec(spec)  # the cache dtypes the runtime feeds and reads
    return CleanGraph(spec, custom_nodes, precision, attention_nodes)


def save_and_check(model, options: ExportOptions, build_dir: str, workdir: str) -> SavedModel:
    """Stage 5, save and check: the model (external data past the threshold) into the build directory, then
    the full ONNX checker with shape inference."""
    from . import onnx_file  # onnx: loaded by the first export

    logger.info("[4/7] saving to %s", options.out_dir)
    threshold = options.external_data_threshold
    threshold = onnx_file.EXTERNAL_DATA_THRESHOLD if threshold is None else threshold
    model_file = layout.model_file(options.dtype)  # onnx/model.onnx (model_fp16.onnx): transformers.js's names
    # weights may be external data in workdir
    written = onnx_file.save(model, build_dir, threshold, base_dir=workdir, file_name=model_file)
    built_model = os.path.join(build_dir, model_file)
    logger.info("[5/7] ONNX checker (full, with shape inference)")
    onnx_file.check(built_model, model, base_dir=workdir)
    return SavedModel(built_model, tuple(os.path.relpath(f, build_dir).replace(os.sep, "/") for f in written))


def validate_against_native(options: ExportOptions, graph: CleanGraph, conversion: Conversion,
                            saved: SavedModel) -> ValidationReport:
    """Stage 6, validate: the saved graph on ONNX Runtime against the native model, on inputs unlike the example
    (``validate.py``; ``fp16.validate`` for fp16). Beyond tolerance is a ValidationError: nothing is written."""
    from . import fp16  # onnx: loaded by the first export

    logger.info("[6/7] validating against the native model")
    check = fp16.validate if options.dtype == "fp16" else validation.validate
    report = check(saved.path, graph.spec, conversion.native, atol=options.atol, raise_on_failure=False)
    if not report.passed:
        out_dir = options.out_dir
        raise ValidationError(
            "The exported model differs from the native model beyond tolerance:\n"
            f"{report.table()}\nNothing was written to {out_dir}"
            f"{' (it is as it was)' if os.path.isdir(out_dir) else ''}; export with validate=False "
            "(--no-validate) to keep the graph for inspection, or pass a larger atol (--atol) if the "
            "differences are expected."
        )
    return report


def write_files_and_spec(options: ExportOptions, checkpoint: Checkpoint, graph: CleanGraph, conversion: Conversion,
                         saved: SavedModel, report_validation: Optional[ValidationReport], build_dir: str) -> list[str]:
    """Stage 7, write files and spec: config.json (``architectures`` naming the exported head), the tokenizer
    (copied, completed and checked against the checkpoint's: ``tokenizer_files.py``) and ``onnxport.json``.
    Returns the names of every file of the export."""
    from ..artifact import attention_op, rotary_op  # onnx: loaded by the first export

    logger.info("[7/7] writing config, tokenizer files and %s", SPEC_FILE)
    config, family, spec = checkpoint.config, checkpoint.family, graph.spec
    names = list(saved.files)
    config.architectures = [family.class_prefix + spec.head]
    config.save_pretrained(build_dir)
    layout.write_transformers_js_config(build_dir, options.dtype)  # which graph transformers.js loads
    names.append("config.json")
    tokenizer = None
    if options.copy_tokenizer:
        tokenizer = write_tokenizer(checkpoint.model_dir, build_dir, config, family)
        names += tokenizer["files"]
    metadata = {
        "onnxport_version": __version__,
        "framework": options.framework,
        "task": checkpoint.task,
        "with_past": options.with_past,
        "model_type": family.model_type,
        "architecture": family.class_prefix + spec.head,
        "opset": options.opset,
        "dtype": options.dtype,
        **({"precision": graph.precision.to_dict()} if graph.precision is not None else {}),
        "custom_ops": [{"domain": op.DOMAIN, "op_type": op.OP_TYPE, "version": op.VERSION, "count": count}
                       for op, count in ((rotary_op, graph.custom_nodes), (attention_op, graph.attention_nodes))
                       if count],
        "io_spec": spec.to_dict(),
        "validation": None if report_validation is None else report_validation.to_dict(),
        "versions": _versions(conversion.versions),
        "files": sorted(names),
        "source": {"checkpoint": os.path.abspath(options.checkpoint_dir)},
        "tokenizer": tokenizer,
        "random_weights": sorted(conversion.random_weights),
        "random_seed": RANDOM_INIT_SEED,
        **({"sentence_transformers": checkpoint.sentence.to_record()} if checkpoint.sentence is not None else {}),
    }
    if checkpoint.cross_encoder is not None:
        metadata[CROSS_ENCODER_KEY] = checkpoint.cross_encoder.to_dict()
    write_spec_file(build_dir, metadata)
    names.append(SPEC_FILE)
    return names


# -- `onnxport validate EXPORT_DIR [CHECKPOINT]`: the validate stage again, on an export directory ------------
def validate_export(export_dir: str, checkpoint_dir: str | None = None, atol: float | None = None,
                    framework: str | None = None, validate_length: int | None = None,
                    validation_memory: int | str | None = None) -> ValidationReport:
    """Re-run the native-vs-ONNX Runtime comparison of an export directory: the same cases as at export
    (batch 1 and > 1, padding, token types, the longest allowed length), against the checkpoint it came from.

    ``checkpoint_dir`` defaults to the one recorded in ``onnxport.json``; ``framework`` to the export's."""
    from . import fp16  # onnx: loaded by the first export or validation

    meta, spec = read_export_dir(export_dir)
    checkpoint_dir = checkpoint_dir or (meta.get("source") or {}).get("checkpoint")
    if not checkpoint_dir:
        raise InputError(f"{export_dir}/onnxport.json records no checkpoint; pass the CHECKPOINT directory it was "
                         "exported from (onnxport validate EXPORT_DIR CHECKPOINT).")
    if not os.path.isdir(checkpoint_dir):
        raise InputError(f"Checkpoint directory {checkpoint_dir!r} does not exist; pass the directory the export "
                         "was made from (onnxport validate EXPORT_DIR CHECKPOINT).")
    model_path = layout.model_path(export_dir)  # either layout
    if not os.path.isfile(model_path):
        raise ModelFileError(f"No {os.path.relpath(model_path, export_dir)} in {export_dir}; re-export the checkpoint.")
    config = AutoConfig.from_pretrained(export_dir)  # as exported (is_decoder for text-generation, ...)
    framework = framework or meta.get("framework", "pt")
    options = _checked_options(checkpoint_dir, export_dir, framework, None, None, spec.with_past, True, False, atol,
                               None, False, False, meta.get("dtype", "fp32"), None, validate_length,
                               validation_memory)
    plan = _plan_validation(options, config, spec, splits_queries=None)  # refused before the model is loaded
    if io_spec.get_task(spec.task).sentence_stack:  # the encoder of the Transformer module, then the ST math
        from . import sentence_head

        stack = read_sentence_stack(checkpoint_dir)
        encoder = io_spec.build_io_spec("feature-extraction", config, pooler=False)
        runner = sentence_head.native_runner(
            stack, validation.native_runner(framework, stack.transformer_dir, config, encoder))
    else:
        runner = validation.native_runner(framework, checkpoint_dir, config, spec)
    if meta.get("dtype") == "fp16":
        return fp16.validate(model_path, spec, runner, atol=atol, raise_on_failure=False)
    if plan is not None and any(c.query_chunk for c in plan.cases) and not getattr(runner, "splits_queries", False):
        plan = _plan_validation(options, config, spec, splits_queries=False)
    native = validation.native_outputs(spec, runner, plan)
    del runner  # the framework model, before ONNX Runtime loads its copy of the weights
    return validation.validate(model_path, spec, native, atol=atol, raise_on_failure=False)


def _check_signature(model, spec) -> None:
    """The graph's inputs/outputs are the io spec's, in order: the contract every front end keeps."""
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != spec.input_names or got_out != spec.output_names:
        raise ExportError(
            f"The converted graph's signature does not match the io spec:\n inputs {got_in} vs {spec.input_names}\n"
            f" outputs {got_out} vs {spec.output_names}"
        )


def _versions(front_end_versions: dict[str, str]) -> dict[str, str]:
    import onnx  # loaded by the first export, not by `import onnxport.exporters`

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    versions.update(front_end_versions)
    return dict(sorted(versions.items()))


def load_spec(export_dir: str | os.PathLike) -> IOSpec:
    """The io spec of an export directory, read and checked by ``read_export_dir``."""
    return read_export_dir(export_dir)[1]


__all__ = ["DEFAULT_OPSET", "SPEC_FILE", "ExportReport", "export", "export_file_names", "load_spec"]
