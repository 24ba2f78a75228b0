"""``export(checkpoint_dir, out_dir, framework, task)``: an HF-format checkpoint to an ONNX directory.

Stages (each logged on the ``onnxport`` logger): read config -> check task ->
build the io spec (``io_spec.py``) -> front-end conversion (``front_end.py`` describes the
contract, ``pt.py`` / ``tf.py`` / ``flax.py`` keep it) -> artifact clean-up
(``artifact.py``) -> save + ONNX checker -> validation (``validate.py``) ->
config, tokenizer files and ``onnxport.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import ExportError
from .front_end import RANDOM_INIT_SEED, ExportJob, front_end
from .tokenizer_files import TOKENIZER_FILES

logger = logging.getLogger("onnxport")

DEFAULT_OPSET = 17

# The export's description beside the model (io spec, versions, validation, files).
SPEC_FILE = "onnxport.json"


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
    from .artifact import overlapping

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


def export_file_names(out_dir: str) -> set[str]:
    """Names in ``out_dir`` that belong to an export (replaced by a new one); anything else is the user's.

    The files every export may write, plus those the directory's ``onnxport.json`` lists (an int8 or
    older export's own files)."""
    from ..layout import LAYOUT_NAMES

    names = {*LAYOUT_NAMES, SPEC_FILE, "config.json", *TOKENIZER_FILES}
    try:
        with open(os.path.join(out_dir, SPEC_FILE), encoding="utf-8") as fh:
            listed = json.load(fh).get("files", [])
        names.update(n.split("/")[0] for n in listed if isinstance(n, str))  # onnx/model.onnx -> onnx
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no readable onnxport.json: the fixed names only
    return names


def _task_from_architectures(config, family) -> str:
    """The task of the checkpoint's own head (``architectures`` in config.json), e.g. ForMaskedLM -> fill-mask."""
    from .io_spec import TASKS, task_for_head

    for arch in config.architectures or ():
        head = arch[len(family.class_prefix):] if arch.startswith(family.class_prefix) else ""
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
    """
    from .. import __version__, layout
    from ..configs import AutoConfig
    from ..families import family_of
    from . import artifact, fp16, io_spec, rotary_op
    from . import validate as validation

    checkpoint_dir, out_dir = os.fspath(checkpoint_dir), os.fspath(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    # Cheap checks first, so mistakes fail before any heavy import.
    if task is not None:
        io_spec.get_task(task)
    dtype = fp16.canonical_dtype(dtype)
    logger.info("[1/7] reading %s", checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise ExportError(f"Checkpoint directory {checkpoint_dir!r} does not exist.")
    config = AutoConfig.from_pretrained(checkpoint_dir)
    family = family_of(config)
    task = task or _task_from_architectures(config, family)
    io_spec.check_task(task, family, with_past, config)
    converter = front_end(framework)
    _check_out_dir(checkpoint_dir, out_dir, force)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if task == "text-generation" and not config.is_decoder:
        logger.info("text-generation: setting is_decoder=True (causal self-attention)")
        config.is_decoder = True
    if task == "text-generation":
        config.use_cache = True
    if with_pooler is None:  # only what the checkpoint holds: no random pooler by default
        from ..checkpoints import weight_names

        with_pooler = any(name.split(".").count("pooler") for name in weight_names(checkpoint_dir))
    spec = io_spec.build_io_spec(task, config, with_past, pooler=with_pooler)
    shape = validation.EXAMPLE_SHAPE
    past = shape["past"] if with_past else 0
    sequence = min(shape["sequence"], config.max_sequence_length - past)
    example = io_spec.make_inputs(spec, shape["batch"], sequence, past=past, num_choices=shape["num_choices"], seed=0)
    stage("read")

    # Everything is written and validated in a directory beside OUT, then swapped in: a failure at any
    # stage leaves OUT as it was. User files in OUT (not export files) are carried across.
    owned = export_file_names(out_dir)
    with artifact.staged_directory(out_dir, owned.__contains__, ExportError) as build_dir, \
            tempfile.TemporaryDirectory(prefix="onnxport-export-") as workdir:
        logger.info("[2/7] converting %s %s (%s) to ONNX opset %d", family.model_type, task, framework, opset)
        job = ExportJob(checkpoint_dir, config, family, spec, opset, example, workdir, allow_missing_weights)
        converted = converter.convert(job)
        native = converted.run_native
        if dtype == "fp32":  # (fp16.validate runs its own cases on the runner)
            # Validation's native outputs now, then drop the framework model: it need not share memory
            # with the artifact being written, nor with ONNX Runtime's copy of the weights.
            native = validation.native_outputs(spec, native) if validate else None
            converted.run_native = None
        stage("convert")

        logger.info("[3/7] cleaning up the graph")
        model = artifact.finalize(converted.model, producer_version=__version__,
                                  graph_name=f"{family.class_prefix}_{task}".replace("-", "_"), base_dir=workdir)
        converted.model = None  # `model` is the same proto
        _check_signature(model, spec)
        custom_nodes = len(rotary_op.rotary_nodes(model))
        precision = None
        if dtype == "fp16":
            precision = fp16.convert(model, base_dir=workdir)  # weights may be external data there
            spec = fp16.fp16_spec(spec)  # the cache dtypes the runtime feeds and reads
        stage("finalize")

        logger.info("[4/7] saving to %s", out_dir)
        threshold = artifact.EXTERNAL_DATA_THRESHOLD if external_data_threshold is None else external_data_threshold
        model_file = layout.model_file(dtype)
        # weights may be external data in workdir
        written = artifact.save(model, build_dir, threshold, base_dir=workdir, file_name=model_file)
        built_model = os.path.join(build_dir, model_file)
        logger.info("[5/7] ONNX checker (full, with shape inference)")
        artifact.check(built_model, model, base_dir=workdir)
        del model
        stage("save")

        report_validation = None
        if validate:
            logger.info("[6/7] validating against the native model")
            check = fp16.validate if dtype == "fp16" else validation.validate
            report_validation = check(built_model, spec, native, atol=atol, raise_on_failure=False)
            stage("validate")
            if not report_validation.passed:
                raise validation.ValidationError(
                    "The exported model differs from the native model beyond tolerance:\n"
                    f"{report_validation.table()}\nNothing was written to {out_dir}"
                    f"{' (it is as it was)' if os.path.isdir(out_dir) else ''}; export with validate=False "
                    "(--no-validate) to keep the graph for inspection, or pass a larger atol (--atol) if the "
                    "differences are expected."
                )

        logger.info("[7/7] writing config, tokenizer files and %s", SPEC_FILE)
        names = [os.path.relpath(f, build_dir).replace(os.sep, "/") for f in written]
        config.architectures = [family.class_prefix + spec.head]
        config.save_pretrained(build_dir)
        layout.write_transformers_js_config(build_dir, dtype)
        names.append("config.json")
        tokenizer = None
        if copy_tokenizer:  # copied, completed and checked against the checkpoint's (tokenizer_files.py)
            from .tokenizer_files import write_tokenizer

            tokenizer = write_tokenizer(checkpoint_dir, build_dir, config, family)
            names += tokenizer["files"]
        metadata = {
            "onnxport_version": __version__,
            "framework": framework,
            "task": task,
            "with_past": with_past,
            "model_type": family.model_type,
            "architecture": family.class_prefix + spec.head,
            "opset": opset,
            "dtype": dtype,
            **({"precision": precision.to_dict()} if precision is not None else {}),
            "custom_ops": [{"domain": rotary_op.DOMAIN, "op_type": rotary_op.OP_TYPE, "version": rotary_op.VERSION,
                            "count": custom_nodes}] if custom_nodes else [],
            "io_spec": spec.to_dict(),
            "validation": None if report_validation is None else report_validation.to_dict(),
            "versions": _versions(converted.versions),
            "files": sorted(names),
            "source": {"checkpoint": os.path.abspath(checkpoint_dir)},
            "tokenizer": tokenizer,
            "random_weights": sorted(converted.random_weights),
            "random_seed": RANDOM_INIT_SEED,
        }
        with open(os.path.join(build_dir, SPEC_FILE), "w", encoding="utf-8") as fh:
            json.dump(metadata, fh, indent=2, sort_keys=True)
            fh.write("\n")
        names.append(SPEC_FILE)
        stage("write")

    model_path = os.path.join(out_dir, model_file)
    files = [os.path.join(out_dir, name) for name in names]
    report = ExportReport(out_dir, model_path, framework, task, with_past, opset, spec, files,
                          report_validation, seconds, custom_nodes, dtype)
    logger.info("exported %s in %.1fs (%s)", model_path, sum(seconds.values()), seconds)
    return report


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
    import onnx

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    versions.update(front_end_versions)
    return dict(sorted(versions.items()))


def load_spec(export_dir: str | os.PathLike):
    """The io spec of an export directory (for the runtime)."""
    from .io_spec import IOSpec

    with open(os.path.join(os.fspath(export_dir), SPEC_FILE), encoding="utf-8") as fh:
        return IOSpec.from_dict(json.load(fh)["io_spec"])


__all__ = ["DEFAULT_OPSET", "SPEC_FILE", "ExportReport", "export", "export_file_names", "load_spec"]
