"""Native model vs ONNX Runtime on fresh inputs: a per-output table of max abs differences.

The inputs differ from the export example in batch, sequence length (and number
of choices / past length), and include padding, so a graph that baked in an
example shape, or ignores the mask, fails here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..artifact.io_spec import IOSpec, empty_past, make_inputs
from ..artifact.records import Record
from ..errors import InputError, ValidationError  # noqa: F401  (re-exported: the old import path keeps working)

logger = logging.getLogger("onnxport")

# fp32 tolerances, in one place. Logits and hidden states of the exported graph must
# match the native framework within DEFAULT_ATOL (the project's bar for parity).
DEFAULT_ATOL = 1e-4
TOLERANCES: dict[str, float] = {"default": DEFAULT_ATOL}

# Shapes the exporters trace with, and the different ones validation runs.
EXAMPLE_SHAPE = {"batch": 2, "sequence": 8, "past": 3, "num_choices": 2}
# Batch 1 unpadded, a padded batch with token types in a second segment (pairs), and the longest input the
# position table allows ("sequence": None), each unlike the export example.
VALIDATION_SHAPES = (
    {"name": "single", "batch": 1, "sequence": 7, "past": 2, "num_choices": 3, "seed": 99, "pad": False},
    {"name": "fresh", "batch": 3, "sequence": 11, "past": 5, "num_choices": 4, "seed": 1234, "pad": True},
    {"name": "longest", "batch": 2, "sequence": None, "past": 4, "num_choices": 2, "seed": 7, "pad": True},
)

NativeRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Row(Record):
    RECORD_KEYS = ("case", "output", "shape", "max_abs_diff", "atol", "ok")

    case: str
    output: str
    shape: tuple[int, ...]
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.atol)


@dataclass
class ValidationReport(Record):
    RECORD_KEYS = ("passed", "max_abs_diff", "rows")

    rows: list[Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.rows), default=0.0)

    def table(self) -> str:
        lines = [f"{'case':<12} {'output':<24} {'shape':<20} {'max abs diff':>12}  {'atol':>8}  ok"]
        for r in self.rows:
            lines.append(
                f"{r.case:<12} {r.output:<24} {str(r.shape):<20} {r.max_abs_diff:>12.3e}  {r.atol:>8.0e}  "
                f"{'yes' if r.ok else 'NO'}"
            )
        return "\n".join(lines)


def tolerance_for(output: str, atol: float | None = None) -> float:
    if atol is not None:
        if not isinstance(atol, (int, float)) or not atol >= 0:  # NaN fails too
            raise InputError(f"atol must be a number >= 0, got {atol!r}.")
        return atol
    return TOLERANCES.get(output, TOLERANCES["default"])


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def ort_session(model_path: str, providers=("CPUExecutionProvider",), fused: bool = False):
    """A session on the saved graph as written, or (``fused``) with its custom nodes lowered to ONNX Runtime's
    fused kernels as the runtime serves it on CPU (``attention_op.lower_custom_ops``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not fused:
        return ort.InferenceSession(model_path, options, providers=list(providers))
    import os

    import onnx

    from ..artifact import attention_op

    graph = attention_op.lower_custom_ops(onnx.load(model_path, load_external_data=False))
    options.add_session_config_entry(attention_op.EXTERNAL_WEIGHTS_FOLDER, os.path.dirname(os.path.abspath(model_path)))
    return ort.InferenceSession(graph.SerializeToString(), options, providers=list(providers))


def _has_attention_nodes(model_path: str) -> bool:
    import onnx

    from ..artifact import attention_op

    return bool(attention_op.attention_nodes(onnx.load(model_path, load_external_data=False)))


@dataclass
class NativeOutputs:
    """The native model's outputs on the validation cases, taken before ONNX Runtime loads the artifact
    so that the exporter can free the framework model (and its copy of the weights) first."""

    cases: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]]  # (case, feeds, outputs)


def validation_cases(spec: IOSpec) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(case name, feeds) on inputs unlike the export example."""
    cases = []
    limit = spec.max_sequence_length or 512  # a hand-written spec without one: BERT-sized models' table
    for shape in VALIDATION_SHAPES:
        past = min(shape["past"], limit // 2) if spec.with_past else 0
        sequence = limit - past if shape["sequence"] is None else min(shape["sequence"], limit - past)
        inputs = make_inputs(spec, shape["batch"], sequence, past=past, num_choices=shape["num_choices"],
                             seed=shape["seed"], pad=shape["pad"])
        cases.append((shape["name"], {name: inputs[name] for name in spec.input_names}))
        if spec.with_past and shape["name"] == "fresh":  # the first decoding step: nothing cached yet
            first = make_inputs(spec, shape["batch"], sequence, past=0, seed=shape["seed"] + 1)
            first.update(empty_past(spec, shape["batch"]))
            cases.append(("empty-past", {name: first[name] for name in spec.input_names}))
    for _, feeds in cases:  # what the runtime would accept: a failure here is a fault in the cases, not the graph
        spec.check_feeds(feeds)
    return cases


def native_outputs(spec: IOSpec, run_native: NativeRunner) -> NativeOutputs:
    return NativeOutputs([(case, feeds, run_native(dict(feeds))) for case, feeds in validation_cases(spec)])


def _rows(spec: IOSpec, onnx_out: Mapping[str, np.ndarray], native_out: Mapping[str, np.ndarray], case: str,
          atol: float | None) -> list[Row]:
    return [Row(case, name, tuple(np.shape(onnx_out[name])), max_abs_diff(native_out[name], onnx_out[name]),
                tolerance_for(name, atol)) for name in spec.output_names]


def compare(spec: IOSpec, session, run_native: NativeRunner, inputs: Mapping[str, np.ndarray], case: str,
            atol: float | None = None) -> list[Row]:
    feeds = {name: inputs[name] for name in spec.input_names}
    onnx_out = dict(zip(spec.output_names, session.run(spec.output_names, feeds)))
    return _rows(spec, onnx_out, run_native(dict(feeds)), case, atol)


def validate(model_path: str, spec: IOSpec, native: NativeRunner | NativeOutputs, atol: float | None = None,
             raise_on_failure: bool = True) -> ValidationReport:
    """Compare every output on inputs unlike the export example; raise ValidationError above tolerance.

    ``native``: the native model's runner, or its outputs from ``native_outputs``."""
    expected = native if isinstance(native, NativeOutputs) else native_outputs(spec, native)
    report = ValidationReport()
    # The graph as written (what stock ONNX Runtime, onnxruntime-web, onnx.reference run), then, when it has
    # attention nodes, as the runtime serves it (fused kernels; cases named "<case> fused"). One session at a time.
    for fused in (False, True) if _has_attention_nodes(model_path) else (False,):
        session = ort_session(model_path, fused=fused)
        for case, feeds, native_out in expected.cases:
            onnx_out = dict(zip(spec.output_names, session.run(spec.output_names, feeds)))
            report.rows += _rows(spec, onnx_out, native_out, f"{case} fused" if fused else case, atol)
        del session
    logger.info("validation (native vs ONNX Runtime):\n%s", report.table())
    if raise_on_failure and not report.passed:
        bad = [r for r in report.rows if not r.ok]
        raise ValidationError(
            f"The exported model differs from the native model beyond tolerance in {len(bad)} output(s):\n"
            f"{report.table()}\nThe ONNX file is kept for inspection at {model_path}."
        )
    return report


# -- `onnxport validate EXPORT_DIR [CHECKPOINT]` -----------------------------------------------------------
def native_runner(framework: str, checkpoint_dir: str, config, spec: IOSpec) -> NativeRunner:
    """A reference model of ``framework`` loaded from ``checkpoint_dir`` with the export's ``config``, called
    through the IO spec's adapters: graph feeds in, graph outputs (numpy) out."""
    import importlib

    package = importlib.import_module(f"onnxport.reference_models.{framework}")
    model = package.model_class(spec.model_type, spec.head).from_pretrained(checkpoint_dir, config=config)
    if framework == "pt":
        import torch

        model.eval()

        def run(feeds):
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
            with torch.no_grad():
                out = model(**spec.model_kwargs(tensors), return_dict=True)
            return {n: v.detach().cpu().numpy() for n, v in zip(spec.output_names, spec.select(out))}
    elif framework == "tf":
        def run(feeds):
            out = model(**spec.model_kwargs(feeds), return_dict=True, training=False)
            return {n: np.asarray(v) for n, v in zip(spec.output_names, spec.select(out))}
    else:
        def run(feeds):
            out = model(**spec.model_kwargs(feeds), return_dict=True)
            return {n: np.asarray(v) for n, v in zip(spec.output_names, spec.select(out))}
    return run
