"""Native model vs ONNX Runtime on fresh inputs: a per-output table of max abs differences.

The inputs differ from the export example in batch, sequence length (and number
of choices / past length), and include padding, so a graph that baked in an
example shape, or ignores the mask, fails here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..artifact.io_spec import IOSpec, empty_past, make_inputs
from ..artifact.records import Record
from ..errors import ExportError, InputError, ValidationError  # noqa: F401  (re-exported: the old import path keeps working)

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
VALIDATION_CHOICES = max(s["num_choices"] for s in VALIDATION_SHAPES)  # multiple-choice rows per example, at most

NativeRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


# -- the validation plan: what each case costs in memory, and what fits ---------------------------------------
# The longest case at the end of a long position table (8,194 positions: bge-m3) is what costs: attention scores
# are (rows x heads x length x length) fp32 per layer, 3.2 GB at 8,192 tokens and 12 heads. The plan estimates
# every case's peak on both sides (the native model, then ONNX Runtime) before anything is allocated, runs the
# longest in the form that costs least (batch 1, the native attention in chunks of query rows) and refuses, with
# what to do, what still cannot fit.
MEMORY_ENV = "ONNXPORT_VALIDATION_MEMORY"  # e.g. "6GiB": the budget, instead of what /proc/meminfo says
AVAILABLE_SHARE = 0.8  # of MemAvailable: headroom for the page cache the export writes and for other processes
LONG_CASE_SCORES = 1 << 30  # the longest case keeps batch 2 while its graph's scores stay under this, batch 1 above
CHUNK_SCORES = 256 << 20  # native attention in chunks of query rows whose score tensor stays under this
# Live (rows x heads x query x key) fp32 tensors at the peak, per side (measured: test_validation_plan.py):
# the reference models hold the scores and the probabilities, and the layer loop still holds the previous
# layer's probabilities; a chunked run returns none; ONNX Runtime's graph holds the scores (the mask added in
# place) and the softmax output.
NATIVE_SCORE_COPIES = {"pt": 3, "tf": 3, "flax": 3}
CHUNKED_SCORE_COPIES = 2
GRAPH_SCORE_COPIES = 2
GIB = 1 << 30


def parse_memory(text: str | int) -> int:
    """Bytes from ``123456``, ``512M``, ``6G``, ``6GiB``, ``1.5GB`` (binary units throughout)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        import re

        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
        if not match:
            raise InputError(f"A memory size must be bytes or a number with K, M, G or T (e.g. 6GiB), got {text!r}.")
        value = int(float(match.group(1)) * 1024 ** "bkmgt".index((match.group(2) or "b").lower()))
    if value <= 0:
        raise InputError(f"A memory size must be positive, got {text!r}.")
    return value


def available_memory(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (None where /proc/meminfo is unreadable: not Linux)."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget(override: str | int | None = None, meminfo: str = "/proc/meminfo") -> tuple[int | None, str]:
    """(bytes validation may use, where the figure came from): ``override``, else $ONNXPORT_VALIDATION_MEMORY,
    else AVAILABLE_SHARE of MemAvailable; (None, ...) when none is known (no refusal then)."""
    if override is not None:
        return parse_memory(override), "validation_memory"
    if os.environ.get(MEMORY_ENV, "").strip():
        return parse_memory(os.environ[MEMORY_ENV]), f"${MEMORY_ENV}"
    available = available_memory(meminfo)
    if available is None:
        return None, "unknown (no /proc/meminfo MemAvailable)"
    return int(available * AVAILABLE_SHARE), f"{AVAILABLE_SHARE:.0%} of MemAvailable {available / GIB:.1f} GiB"


@dataclass(frozen=True)
class Geometry:
    """What the estimate reads off a config."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    parameter_bytes: int  # fp32 weights, one copy

    @classmethod
    def of(cls, config) -> "Geometry":
        h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        width = getattr(config, "embedding_width", h) or h
        tables = (config.vocab_size + config.max_position_embeddings + (config.type_vocab_size or 0)) * width
        per_layer = 4 * h * h + 2 * h * inter + 9 * h + inter
        if getattr(config, "add_cross_attention", False):
            per_layer += 4 * h * h
        head = 2 * h * h  # a pooler and a head's dense layer (a masked-LM's decoder is the tied word embeddings)
        params = tables + (width * h if width != h else 0) + layers * per_layer + head
        return cls(layers, h, config.num_attention_heads, inter, 4 * params)


@dataclass
class CasePlan(Record):
    RECORD_KEYS = ("name", "batch", "sequence", "past", "query_chunk", "native_bytes", "graph_bytes", "note")

    name: str
    batch: int
    sequence: int
    past: int
    query_chunk: int | None  # native attention over this many query rows at a time (None: all at once)
    native_bytes: int  # estimated peak of the native model's run (its weights included)
    graph_bytes: int  # estimated peak of ONNX Runtime's run (its weights and the native outputs held included)
    note: str = ""

    @property
    def peak_bytes(self) -> int:
        return max(self.native_bytes, self.graph_bytes)

    def describe(self) -> str:
        chunks = f"; native attention in chunks of {self.query_chunk} query rows" if self.query_chunk else ""
        past = f" after {self.past} cached" if self.past else ""
        return (f"{self.name}: batch {self.batch} x {self.sequence} tokens{past}{chunks}; estimated peak native "
                f"{self.native_bytes / GIB:.2f} GiB, ONNX Runtime {self.graph_bytes / GIB:.2f} GiB"
                + (f" ({self.note})" if self.note else ""))


@dataclass
class ValidationPlan(Record):
    RECORD_KEYS = ("longest_sequence", "budget_bytes", "budget_source", "framework", "cases")

    cases: list[CasePlan]
    budget_bytes: int | None
    budget_source: str
    framework: str

    @property
    def longest_sequence(self) -> int:
        return max(c.sequence + c.past for c in self.cases)

    def describe(self) -> str:
        budget = "no limit known" if self.budget_bytes is None else f"{self.budget_bytes / GIB:.2f} GiB"
        return "\n".join([f"validation plan ({self.framework}; memory budget {budget}: {self.budget_source}):"]
                         + ["  " + c.describe() for c in self.cases])


def _rows_of(spec: IOSpec, batch: int) -> int:
    """Sequences the encoder runs for ``batch`` (multiple-choice: every choice is one)."""
    return batch * VALIDATION_CHOICES if spec.task == "multiple-choice" else batch


def _output_bytes(spec: IOSpec, batch: int, sequence: int, past: int) -> int:
    sizes = {"batch_size": batch, "sequence_length": sequence, "num_choices": VALIDATION_CHOICES,
             "past_sequence_length": past, "past_sequence_length + sequence_length": past + sequence}
    total = 0
    for tensor in spec.outputs:
        count = 1
        for dim in tensor.shape:
            count *= dim if isinstance(dim, int) else sizes.get(dim, sequence + past)
        total += count * 4
    return total


def _activation_bytes(spec: IOSpec, g: Geometry, batch: int, sequence: int, past: int) -> int:
    """A layer's token activations (input, query, key, value, context, output, feed-forward) and the cache."""
    rows = _rows_of(spec, batch)
    tokens = rows * (sequence + past)
    return 4 * tokens * (6 * g.hidden + g.intermediate) + (4 * rows * 2 * past * g.hidden * g.layers)


def scores_bytes(spec: IOSpec, g: Geometry, batch: int, sequence: int, past: int, query_rows: int | None = None) -> int:
    """One (rows x heads x query rows x keys) fp32 score tensor."""
    return 4 * _rows_of(spec, batch) * g.heads * (query_rows or sequence) * (sequence + past)


def estimate_native_bytes(spec: IOSpec, g: Geometry, framework: str, batch: int, sequence: int, past: int,
                          query_chunk: int | None = None) -> int:
    """Peak bytes of the native model's run of one case: its weights, its score tensors at the peak, the
    token activations and the outputs (as numpy)."""
    copies = CHUNKED_SCORE_COPIES if query_chunk else NATIVE_SCORE_COPIES.get(framework, 3)
    return (g.parameter_bytes + copies * scores_bytes(spec, g, batch, sequence, past, query_chunk)
            + _activation_bytes(spec, g, batch, sequence, past) + 2 * _output_bytes(spec, batch, sequence, past))


def estimate_graph_bytes(spec: IOSpec, g: Geometry, batch: int, sequence: int, past: int,
                         native_held: int = 0) -> int:
    """Peak bytes of ONNX Runtime's run of one case: the session's weights, the graph's score tensors at the
    peak, the token activations, its outputs, and the native outputs still held for the comparison."""
    return (g.parameter_bytes + GRAPH_SCORE_COPIES * scores_bytes(spec, g, batch, sequence, past)
            + _activation_bytes(spec, g, batch, sequence, past) + _output_bytes(spec, batch, sequence, past)
            + native_held)


def _case_shapes(spec: IOSpec, length: int | None) -> list[tuple[dict, int, int]]:
    """(shape, sequence, past) of each case: the longest runs to ``length`` (past included), default the table."""
    limit = spec.max_sequence_length or 512  # a hand-written spec without one: BERT-sized models' table
    if length is not None and not 1 <= length <= limit:
        raise InputError(f"The validation length must be between 1 and the model's {limit} positions, got {length}.")
    out = []
    for shape in VALIDATION_SHAPES:
        longest = shape["sequence"] is None
        top = length if longest and length is not None else limit
        past = min(shape["past"], top // 2) if spec.with_past else 0
        sequence = top - past if longest else min(shape["sequence"], limit - past)
        out.append((shape, max(1, sequence), past))
    return out


def _forms(spec: IOSpec, g: Geometry, shape: dict, sequence: int, past: int,
           splits_queries: bool) -> list[tuple[int, int | None, str]]:
    """(batch, query chunk, note) a case may run in, the preferred first: the shape's batch (the longest at
    batch 1 when batch 2's graph scores are large), the native attention whole when its scores are small, else
    in chunks of CHUNK_SCORES, then smaller ones (down to 64 rows), then batch 1 for a longest case at batch 2."""
    batches, note = [shape["batch"]], ""
    if shape["sequence"] is None and shape["batch"] > 1:
        full = GRAPH_SCORE_COPIES * scores_bytes(spec, g, shape["batch"], sequence, past)
        if full > LONG_CASE_SCORES:  # padding in a batch is the "fresh" case's; the longest is about length
            batches, note = [1], f"batch 1: at batch {shape['batch']} the graph's attention scores alone would take " \
                                 f"{full / GIB:.1f} GiB"
        else:
            batches.append(1)
    forms = []
    for batch in batches:
        chunks: list[int | None] = [None]
        if splits_queries:
            rows = max(1, CHUNK_SCORES // scores_bytes(spec, g, batch, sequence, past, query_rows=1))
            chunks = [None] if rows >= sequence else []
            while rows >= 64 or not chunks:
                if rows < sequence:
                    chunks.append(rows)
                rows //= 4
        why = note or ("" if batch == shape["batch"] else f"batch 1: batch {shape['batch']} does not fit the budget")
        forms += [(batch, chunk, why) for chunk in chunks]
    return forms


def _plan_cases(spec: IOSpec, g: Geometry, framework: str, length: int | None, splits_queries: bool,
                budget: int | None) -> list[CasePlan]:
    """Each case in the first form that fits ``budget`` (the last, cheapest, when none does)."""
    cases: list[CasePlan] = []
    held = 0  # native outputs of the earlier cases, held until ONNX Runtime runs
    for shape, sequence, past in _case_shapes(spec, length):
        for batch, chunk, note in _forms(spec, g, shape, sequence, past, splits_queries):
            native = estimate_native_bytes(spec, g, framework, batch, sequence, past, chunk)
            output = _output_bytes(spec, batch, sequence, past)
            graph = estimate_graph_bytes(spec, g, batch, sequence, past, native_held=held + output)
            case = CasePlan(shape["name"], batch, sequence, past, chunk, native, graph, note)
            if budget is None or case.peak_bytes <= budget:
                break
        held += output
        cases.append(case)
    return cases


def plan_validation(spec: IOSpec, config, framework: str, budget: int | None = None, budget_source: str = "",
                    length: int | None = None, splits_queries: bool = False) -> ValidationPlan:
    """The validation cases and the form each runs in, from an estimate of their memory, within ``budget``
    bytes (None: no limit known). ``length``: the longest case's (default the position table's end);
    ``splits_queries``: the native runner can run attention over chunks of query rows (PyTorch).

    Pure: computes, allocates nothing. Raises ExportError, saying what fits, when a case cannot fit."""
    g = Geometry.of(config)
    cases = _plan_cases(spec, g, framework, length, splits_queries, budget)
    plan = ValidationPlan(cases, budget, budget_source or ("given" if budget is not None else "no limit"), framework)
    if budget is None:
        return plan
    over = [c for c in cases if c.peak_bytes > budget]
    if not over:
        return plan
    limit = spec.max_sequence_length or 512
    fits = [n for n in _lengths_to_try(limit)
            if all(c.peak_bytes <= budget for c in _plan_cases(spec, g, framework, n, splits_queries, budget))]
    worst = max(over, key=lambda c: c.peak_bytes)
    if fits:
        shorter = (f"validate up to {fits[-1]} tokens (--validate-length {fits[-1]}; validate_length={fits[-1]} "
                   "in Python), ")
    else:
        shorter = "(no validation length fits: the model's weights alone take "\
                  f"{g.parameter_bytes / GIB:.2f} GiB on each side) "
    raise ExportError(
        f"Validating this export needs more memory than there is: the {worst.name} case (batch {worst.batch} x "
        f"{worst.sequence + worst.past} tokens, {g.heads} heads, {g.layers} layers, {framework}) needs about "
        f"{worst.peak_bytes / GIB:.2f} GiB (native model {worst.native_bytes / GIB:.2f} GiB, ONNX Runtime "
        f"{worst.graph_bytes / GIB:.2f} GiB: the weights, (batch x heads x length x length) attention scores, "
        f"the outputs), over the {budget / GIB:.2f} GiB budget ({plan.budget_source}). Nothing was allocated. "
        f"Either {shorter}or export without validation (--no-validate; validate=False) and check the export "
        f"later with `onnxport validate` on a larger machine, or, if more memory is free than that, say how much "
        f"with ${MEMORY_ENV} (e.g. {MEMORY_ENV}=16GiB).")


def _lengths_to_try(limit: int) -> list[int]:
    """Validation lengths the refusal may suggest, ascending: powers of two and the table's end."""
    lengths, n = [], 16
    while n < limit:
        lengths.append(n)
        n *= 2
    return lengths + [limit]


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
    RECORD_KEYS = ("passed", "max_abs_diff", "longest_sequence", "rows", "plan")

    rows: list[Row] = field(default_factory=list)
    plan: "ValidationPlan | None" = None  # the cases' shapes and forms (None: unplanned, as written)

    @property
    def longest_sequence(self) -> int | None:
        """The longest input validated, in tokens (cached ones included)."""
        return None if self.plan is None else self.plan.longest_sequence

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
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if not a.size:
        return 0.0
    # In float64, a slab at a time: an 8,192-token masked-LM output is 8 GB in fp32 (twice that whole in float64).
    a, b = a.reshape(a.shape[0] if a.ndim > 1 else 1, -1), b.reshape(b.shape[0] if b.ndim > 1 else 1, -1)
    step = max(1, (64 << 20) // (8 * a.shape[1]))
    return float(max(np.max(np.abs(a[i:i + step].astype(np.float64) - b[i:i + step].astype(np.float64)))
                     for i in range(0, a.shape[0], step)))


def release_freed_memory() -> None:
    """Give memory freed by the conversion and the native run back to the system (glibc keeps freed heap pages
    mapped: about 1 GB after a base-size conversion), so ONNX Runtime's peak does not stack on it."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


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
    plan: "ValidationPlan | None" = None  # what the report says was validated at which length


def validation_cases(spec: IOSpec, plan: "ValidationPlan | None" = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(case name, feeds) on inputs unlike the export example: the cases of ``plan`` (``plan_validation``), by
    default the unplanned shapes (the longest at batch 2, the whole position table)."""
    cases = []
    for case in (plan.cases if plan is not None else _unplanned_cases(spec)):
        shape = next(s for s in VALIDATION_SHAPES if s["name"] == case.name)
        inputs = make_inputs(spec, case.batch, case.sequence, past=case.past, num_choices=shape["num_choices"],
                             seed=shape["seed"], pad=shape["pad"])
        cases.append((case.name, {name: inputs[name] for name in spec.input_names}))
        if spec.with_past and case.name == "fresh":  # the first decoding step: nothing cached yet
            first = make_inputs(spec, case.batch, case.sequence, past=0, seed=shape["seed"] + 1)
            first.update(empty_past(spec, case.batch))
            cases.append(("empty-past", {name: first[name] for name in spec.input_names}))
    for _, feeds in cases:  # what the runtime would accept: a failure here is a fault in the cases, not the graph
        spec.check_feeds(feeds)
    return cases


def _unplanned_cases(spec: IOSpec) -> list[CasePlan]:
    """The cases without a plan (no geometry to estimate with): each shape as written, the longest at batch 2."""
    return [CasePlan(shape["name"], shape["batch"], sequence, past, None, 0, 0)
            for shape, sequence, past in _case_shapes(spec, None)]


def native_outputs(spec: IOSpec, run_native: NativeRunner, plan: "ValidationPlan | None" = None) -> NativeOutputs:
    """The native model's outputs on the validation cases; a case the plan runs in query chunks calls
    ``run_native(feeds, query_chunk=rows)`` (a runner that can: ``splits_queries``)."""
    rows_of = {c.name: c.query_chunk for c in plan.cases} if plan is not None else {}
    out = []
    for case, feeds in validation_cases(spec, plan):
        chunk = rows_of.get(case)
        result = run_native(dict(feeds), query_chunk=chunk) if chunk else run_native(dict(feeds))
        out.append((case, feeds, result))
    return NativeOutputs(out, plan)


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
    release_freed_memory()  # the framework model's, before ONNX Runtime's weights and the graph's scores
    report = ValidationReport(plan=expected.plan)
    # The graph as written (what stock ONNX Runtime, onnxruntime-web, onnx.reference run), then, when it has
    # attention nodes, as the runtime serves it (fused kernels; cases named "<case> fused"). One session at a time.
    for fused in (False, True) if _has_attention_nodes(model_path) else (False,):
        session = ort_session(model_path, fused=fused)
        for case, feeds, native_out in expected.cases:
            onnx_out = dict(zip(spec.output_names, session.run(spec.output_names, feeds)))
            report.rows += _rows(spec, onnx_out, native_out, f"{case} fused" if fused else case, atol)
            del onnx_out
        del session
    logger.info("validation (native vs ONNX Runtime):\n%s%s", report.table(),
                "" if expected.plan is None else "\n" + expected.plan.describe())
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

        from .native_chunks import query_chunks, splits_queries

        def run(feeds, query_chunk=None):
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
            scope = query_chunks(model, query_chunk) if query_chunk else contextlib.nullcontext()
            with torch.no_grad(), scope:
                out = model(**spec.model_kwargs(tensors), return_dict=True)
            return {n: v.detach().cpu().numpy() for n, v in zip(spec.output_names, spec.select(out))}

        run.splits_queries = splits_queries(model)
    elif framework == "tf":
        def run(feeds):
            out = model(**spec.model_kwargs(feeds), return_dict=True, training=False)
            return {n: np.asarray(v) for n, v in zip(spec.output_names, spec.select(out))}
    else:
        def run(feeds):
            out = model(**spec.model_kwargs(feeds), return_dict=True)
            return {n: np.asarray(v) for n, v in zip(spec.output_names, spec.select(out))}
    return run
