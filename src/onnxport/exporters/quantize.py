"""int8 quantization of an export directory: a recipe search gated against its fp32 model.

``quantize(export_dir, out_dir)`` writes a complete export directory (int8
``model.onnx``, ``config.json``, tokenizer files, ``onnxport.json`` with a
``quantization`` block) that ``onnxport.runtime`` loads like any other.

Recipes (``RECIPES``; ``BASE_RECIPES`` maps each base name to a :class:`Recipe`), all built with
``onnxruntime.quantization``:

* ``dynamic`` / ``dynamic-per-channel``: int8 symmetric weights, one scale per tensor / per output column;
  uint8 activations quantized per call (``quantize_dynamic``).
  The GEMMs of a dynamic model that read one input (Q/K/V) are merged into one (``int8_graph``; outputs
  bit-identical, ``merged_gemms`` in the report).
* ``dynamic-u8u8`` / ``dynamic-per-channel-u8u8``: the same with uint8 weights. On x86 without VNNI the s8
  recipes need ``reduce_range`` (7-bit weights); u8 x u8 kernels keep all 8 bits there. Searched on such
  CPUs only (elsewhere full-range s8 already runs exactly).
* ``static-qdq`` / ``-entropy`` / ``-percentile``: QuantizeLinear/DequantizeLinear pairs (``quantize_static``,
  ``QuantFormat.QDQ``), per-channel weights, activation ranges calibrated on the calibration inputs with
  onnxruntime's MinMax, Entropy or Percentile calibrator (the histogram ones get equal-shape rows).
* ``static-qdq-smooth``: SmoothQuant activation smoothing first (``extra_options["SmoothQuant"]``), which
  onnxruntime delegates to neural-compressor's ONNX adaptor; where that is not installed the search records
  the recipe as skipped with the reason and pinning it raises.
* each of them ``-keep-fp32``: the same with MatMuls left in fp32. Each MatMul (all of them up to
  ``MEASURE_ALL_UP_TO``, else the first and last layer and everything outside the layers) is quantized alone
  and its loss on the gate measured; nodes are then kept one by one, the most gate loss per unit of int8 time
  saved (the weight's size) first, each model built and gated, until the gate passes or more than
  ``MAX_KEPT_SHARE`` of the MatMul work would be fp32.

Without ``recipe`` the search gates every base recipe; when none passes it runs the keep-fp32 search on the
closest (``KEEP_SEARCH_BASES``, up to ``KEEP_SEARCH_MAX_BASES`` while none passes), times those that pass with
ONNX Runtime on the gate inputs and keeps the fastest (within 5 %, timing noise, the one farthest inside the
gate). When nothing passes, ``closest_advice`` says which came closest, by how much, and what to do.

Options that make the quantizers work on every onnxport graph without hand-fed settings:

* only ``MatMul`` is quantized, and only where B is a constant weight
  (``MatMulConstBOnly``): the Q/K/V/O, FFN and head projections. Attention's
  activation x activation products stay fp32, and every other node — RoFormer's
  ``onnxport.RotaryEmbedding`` function nodes, LayerNorm, Softmax, contrib ops of
  optimized graphs (Attention, SkipLayerNormalization) — is left as it is.
  ``DefaultTensorType=FLOAT`` lets the quantizers through graphs whose contrib-op
  outputs shape inference cannot type.
* ``reduce_range`` (7-bit weights) only on x86 CPUs without VNNI (AVX512-VNNI,
  AVX-VNNI or AMX), where the u8 x s8 multiply-add can saturate; VNNI CPUs and ARM
  keep the full u8s8 range. The CPU features and the choice are recorded.

The gate runs fp32 and int8 through ONNX Runtime, on the calibration texts tokenized by the export's own
tokenizer when given (``calibration``), else on inputs made from the IO spec (``io_spec.make_inputs``:
several shapes and seeds, padded rows), and measures what the task's users read (``GATES``; the default per
task in ``TASK_GATES``): fill-mask the arg-max at masked positions of the texts, token-classification every
real token's label, text-classification the label, question-answering the answer span, feature-extraction
the cosine per returned vector. Every output's cosine and top-1 over all real rows is reported beside.
Below ``min_cosine`` or ``min_top1`` the call raises :class:`QuantizationError` and leaves nothing servable
behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..artifact import io_spec
from ..artifact.records import ALL_FIELDS, Record
from .._quiet import logger_level
from ..errors import InputError
from . import int8_graph
from ..errors import QuantizationError  # noqa: F401  (re-exported: the old import path keeps working)

logger = logging.getLogger("onnxport")

DEFAULT_MIN_COSINE = 0.999
DEFAULT_MIN_TOP1 = 0.99
OP_TYPES = ("MatMul",)
# Validation inputs: (batch, sequence) pairs cycled over seeds; sequences are capped by the position table.
VALIDATION_SHAPES = ((8, 16), (8, 48), (8, 128), (4, 32))
VALIDATION_SETS = 12
CALIBRATION_BATCH = 16
KEEP_FP32 = "-keep-fp32"


@dataclass(frozen=True)
class Recipe:
    """How one base recipe builds its int8 model."""
    mode: str  # "dynamic" (quantize_dynamic) or "static" (quantize_static, QDQ)
    per_channel: bool
    calibration: Optional[str] = None  # static: onnxruntime's CalibrationMethod name
    weights: str = "s8"  # "s8": u8 activations x s8 weights (7-bit without VNNI); "u8": u8 x u8, full 8 bits
    smooth: bool = False  # SmoothQuant activation smoothing before static QDQ (needs neural-compressor)


BASE_RECIPES = {
    "dynamic": Recipe("dynamic", False),
    "dynamic-per-channel": Recipe("dynamic", True),
    "dynamic-u8u8": Recipe("dynamic", False, weights="u8"),
    "dynamic-per-channel-u8u8": Recipe("dynamic", True, weights="u8"),
    "static-qdq": Recipe("static", True, "MinMax"),
    "static-qdq-entropy": Recipe("static", True, "Entropy"),
    "static-qdq-percentile": Recipe("static", True, "Percentile"),
    "static-qdq-smooth": Recipe("static", True, "MinMax", smooth=True),
}
RECIPES = tuple(BASE_RECIPES) + tuple(name + KEEP_FP32 for name in BASE_RECIPES)
# Recipes whose measured latency is within this factor of the fastest count as equally fast.
SPEED_TIE = 1.05
# Inputs per single-node sensitivity measurement: enough rows to rank the nodes, few enough to stay quick.
SENSITIVITY_BATCHES = 4
# Up to this many weight MatMuls every one is measured alone; above it only the likeliest (sensitivity_candidates).
MEASURE_ALL_UP_TO = 40
# The keep-fp32 search runs on the base recipes closest to the gate: this many, more only while none passes.
KEEP_SEARCH_BASES = 2
KEEP_SEARCH_MAX_BASES = 3
# A keep-fp32 model with more than this share of the weight MatMuls' work in fp32 saves too little to be worth it.
MAX_KEPT_SHARE = 0.5
# Rows the histogram calibrators see (one run each, all padded to the longest): their collection is the slow part.
HISTOGRAM_ROWS = 128
# fill-mask gate: the share of each calibration text's real tokens replaced by the mask token.
MASK_RATE = 0.15
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
RECORDED_FLAGS = VNNI_FLAGS + ("amx_tile", "amx_bf16", "avx512f", "avx512_bf16", "avx2")

# What each gate compares with fp32 (--gate); the default follows the task (TASK_GATES).
GATES = {
    "masked-tokens": "fill-mask: top-1 agreement at the masked positions (15% of the calibration texts' tokens "
                     "replaced by the mask token); cosine of the logits over all positions",
    "tokens": "token-classification: the label of every real token; cosine of the logits",
    "label": "text-classification, rerank, multiple-choice: the predicted label per text; cosine of the logits (scores)",
    "span": "question-answering: the answer span (best start <= end pair, up to 30 tokens) per example; "
            "cosine of the start / end logits",
    "cosine": "feature-extraction: mean cosine per returned vector (per token, and the pooled one); no top-1",
    "all-outputs": "every output: arg-max agreement at every row and cosine over all elements",
}
TASK_GATES = {"fill-mask": "masked-tokens", "token-classification": "tokens", "text-classification": "label",
              "rerank": "label",  # a cross-encoder's graph is a sequence classifier's
              "multiple-choice": "label", "question-answering": "span", "feature-extraction": "cosine"}
GATE_TASKS = {"masked-tokens": ("fill-mask",), "tokens": ("token-classification",),
              "label": ("text-classification", "rerank", "multiple-choice"), "span": ("question-answering",)}
SPAN_MAX_LENGTH = 30

Text = Union[str, tuple]


@dataclass
class OutputAgreement:
    output: str
    cosine: float  # over every (unpadded) element of the output
    min_row_cosine: float  # worst single prediction row
    top1_agreement: float  # fraction of rows whose arg-max over the last axis matches fp32
    rows: int
    max_abs_diff: float


@dataclass
class GateResult:
    """The gate's figures: what the task's users read, int8 against fp32 (``GATES``)."""
    gate: str
    top1_agreement: Optional[float]  # None where the gate has no top-1 (cosine)
    cosine: float
    rows: int  # predictions the top-1 is over: masked positions, tokens, texts or spans (vectors for cosine)
    min_row_cosine: float
    positions: str = "all"  # fill-mask: "masked" (positions masked in the texts) or "all" (no mask token / no texts)
    all_positions_top1: Optional[float] = None  # fill-mask: top-1 over every real position, reported beside

    def passes(self, min_cosine: float, min_top1: float) -> bool:
        return self.cosine >= min_cosine and (self.top1_agreement is None or self.top1_agreement >= min_top1)

    def shortfall(self, min_cosine: float, min_top1: float) -> float:
        """How far from passing, in gate budgets (1 - threshold); <= 0 passes."""
        gaps = [(min_cosine - self.cosine) / max(1e-9, 1.0 - min_cosine)]
        if self.top1_agreement is not None:
            gaps.append((min_top1 - self.top1_agreement) / max(1e-6, 1.0 - min_top1))
        return max(gaps)


@dataclass
class RecipeTrial:
    """One recipe the search built and gated (or skipped, with the reason)."""
    recipe: str
    kept_fp32: list[str]
    top1_agreement: Optional[float]
    cosine: Optional[float]  # None when skipped
    passed: bool
    latency_ms: Optional[float] = None  # median over the timed gate batches, when it passed
    kept_share: float = 0.0  # share of the weight MatMuls' multiply-adds left in fp32
    steps: int = 0  # keep-fp32: models built and gated while adding nodes one by one
    skipped: Optional[str] = None
    shortfall: Optional[float] = 0.0  # gate budgets short of passing (<= 0: passed); None when skipped


@dataclass
class QuantizationReport(Record):
    # onnxport.json's quantization record: the fields, then the verdicts derived from them
    RECORD_KEYS = (ALL_FIELDS, "cosine", "top1_agreement", "passed", "validated")

    out_dir: str
    model_path: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    op_types: list[str]
    quantized_nodes: int
    custom_nodes: int
    fp32_bytes: int
    int8_bytes: int
    min_cosine: float
    min_top1: float
    outputs: list[OutputAgreement] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    recipe: str = "dynamic"
    kept_fp32: list[str] = field(default_factory=list)
    gate_inputs: str = "generated"  # "calibration": the user's texts; "generated": from the IO spec
    gate_texts: int = 0  # texts the gate ran on (calibration inputs)
    calibration: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    search: list[RecipeTrial] = field(default_factory=list)
    gate: Optional[GateResult] = None
    weight_matmuls: int = 0  # weight MatMuls of the fp32 model
    kept_share: float = 0.0
    speedup: Optional[float] = None  # fp32 / int8 latency on the gate inputs, measured in the search
    advice: str = ""  # when it failed: what came closest and what the user can do
    merged_gemms: int = 0  # dynamic: weight GEMMs merged into one with a shared input (Q/K/V), outputs unchanged

    @property
    def main(self) -> Optional[OutputAgreement]:
        return self.outputs[0] if self.outputs else None

    @property
    def cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=float("nan"))

    @property
    def top1_agreement(self) -> float:
        return min((o.top1_agreement for o in self.outputs), default=float("nan"))

    @property
    def validated(self) -> bool:
        return bool(self.outputs)

    @property
    def passed(self) -> bool:
        if not self.validated:
            return True
        if self.gate is not None:
            return self.gate.passes(self.min_cosine, self.min_top1)
        return _passes(self.outputs, self.min_cosine, self.min_top1)

    def table(self) -> str:
        kept = (f", {len(self.kept_fp32)} of {self.weight_matmuls or self.quantized_nodes + len(self.kept_fp32)} "
                f"kept in fp32 ({self.kept_share:.0%} of the work)" if self.kept_fp32 else "")
        speed = f"; {self.speedup:.2f}x fp32 speed on the gate inputs" if self.speedup else ""
        lines = [
            f"int8 recipe {self.recipe}: {self.quantized_nodes} MatMul weights quantized{kept} "
            f"({self.weight_type}, per_channel={self.per_channel}, reduce_range={self.reduce_range}), "
            f"{self.custom_nodes} custom nodes kept; {self.fp32_bytes / 2**20:.1f} MiB -> "
            f"{self.int8_bytes / 2**20:.1f} MiB{speed}",
        ]
        if len(self.search) > 1:
            lines.append("recipes tried: " + "; ".join(_trial_text(t) for t in self.search))
        lines.append(f"gate inputs: {self.gate_inputs}" + (f" ({self.gate_texts} texts)" if self.gate_texts else ""))
        if self.gate is not None:
            g = self.gate
            top1 = f"top-1 {g.top1_agreement:.2%} over {g.rows} " if g.top1_agreement is not None else ""
            beside = (f"; top-1 over all positions {g.all_positions_top1:.2%} (reported, not gated)"
                      if g.all_positions_top1 is not None else "")
            lines.append(f"gate {g.gate} ({GATES[g.gate].split(':')[0]}): {top1}"
                         f"{'predictions, ' if top1 else ''}cosine {g.cosine:.6f}, worst row cosine "
                         f"{g.min_row_cosine:.6f}{' (masked positions)' if g.positions == 'masked' else ''}{beside}")
        lines.append(f"{'output':<20} {'rows':>7} {'cosine':>10} {'min row cos':>12} {'top-1 agree':>12} "
                     f"{'max abs diff':>13}")
        for o in self.outputs:
            lines.append(f"{o.output:<20} {o.rows:>7} {o.cosine:>10.6f} {o.min_row_cosine:>12.6f} "
                         f"{o.top1_agreement:>11.2%} {o.max_abs_diff:>13.3e}")
        if self.validated:
            verdict = "passed" if self.passed else "FAILED"
            top1 = f", top-1 >= {self.min_top1:.2%}" if self.gate is None or self.gate.top1_agreement is not None else ""
            lines.append(f"thresholds: cosine >= {self.min_cosine}{top1}: {verdict}")
        return "\n".join(lines)


def _passes(outputs: Sequence[OutputAgreement], min_cosine: float, min_top1: float) -> bool:
    return all(o.cosine >= min_cosine and o.top1_agreement >= min_top1 for o in outputs)


def _trial_text(t: RecipeTrial) -> str:
    if t.skipped:
        return f"{t.recipe} skipped ({t.skipped})"
    kept = f" ({len(t.kept_fp32)} in fp32, {t.steps} steps)" if t.recipe.endswith(KEEP_FP32) else ""
    top1 = f"top-1 {t.top1_agreement:.2%} " if t.top1_agreement is not None else ""
    return (f"{t.recipe}{kept} {top1}cosine {t.cosine:.5f} {'passed' if t.passed else 'failed'}"
            + (f" {t.latency_ms:.2f} ms" if t.latency_ms else ""))


# ----------------------------------------------------------------------------- CPU features
def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[set[str]]:
    """The CPU's feature flags on Linux x86; None where they cannot be read."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_vnni(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[bool]:
    """True/False from the CPU flags on Linux x86; None where that cannot be read."""
    flags = cpu_flags(cpuinfo_path)
    return None if flags is None else bool(flags & set(VNNI_FLAGS))


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def default_reduce_range(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """7-bit weights only on x86 without VNNI (u8 x s8 pairs can overflow int16 in pmaddubsw there)."""
    if not _is_x86():
        return False
    return cpu_has_vnni(cpuinfo_path) is False


def cpu_features(reduce_range: bool, chosen_by: str, cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """What onnxport.json records about the CPU the int8 model was tuned for."""
    flags = cpu_flags(cpuinfo_path)
    return {"machine": platform.machine(),
            "flags": sorted(flags & set(RECORDED_FLAGS)) if flags is not None else None,
            "vnni": None if flags is None else bool(flags & set(VNNI_FLAGS)),
            "reduce_range": reduce_range, "reduce_range_chosen_by": chosen_by}


# ----------------------------------------------------------------------------- calibration texts
def read_calibration_texts(path: str | os.PathLike) -> list[Text]:
    """Texts of a calibration file: one text a line, or JSONL objects with ``text`` (and ``text_pair``).

    A file whose first non-blank line starts with ``{`` is read as JSONL. Blank lines are skipped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"Calibration file {path!r} does not exist or is not a file; pass a text file "
                         "(one text a line) or JSONL with a \"text\" field.")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [(number, line.strip()) for number, line in enumerate(fh, 1)]
    except UnicodeDecodeError as err:
        raise InputError(f"Calibration file {path!r} is not UTF-8 text ({err}).") from err
    lines = [(number, line) for number, line in lines if line]
    if not lines:
        raise InputError(f"Calibration file {path!r} is empty; it needs at least one text.")
    if not lines[0][1].startswith("{"):
        return [line for _, line in lines]
    texts: list[Text] = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not a JSON object ({err.msg}); JSONL calibration files hold one "
                             "object with a \"text\" field per line.") from err
        text = record.get("text") if isinstance(record, dict) else None
        pair = record.get("text_pair") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text or (pair is not None and not isinstance(pair, str)):
            raise InputError(f"{path}:{number}: each JSONL line needs a non-empty string \"text\" (and optionally a "
                             "string \"text_pair\").")
        texts.append((text, pair) if pair else text)
    return texts


def _load_texts(source: Union[str, os.PathLike, Sequence[Text]]) -> list[Text]:
    if isinstance(source, (str, os.PathLike)):
        return read_calibration_texts(source)
    texts = list(source)
    if not texts:
        raise InputError("The calibration texts are empty; pass at least one text.")
    return texts


def tokenized_inputs(export_dir: str, spec, texts: Sequence[Text], batch: int = CALIBRATION_BATCH,
                     width: Optional[int] = None) -> list[dict[str, np.ndarray]]:
    """Model inputs from ``texts`` with the export's tokenizer: batches of similar length, right-padded to their
    longest row (or to ``width``) and truncated to the model's ``max_sequence_length``."""
    from ..tokenizers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(export_dir)
    except Exception as err:  # missing or damaged tokenizer files: the texts cannot become ids
        raise QuantizationError(f"Cannot load the tokenizer of {export_dir} to tokenize the calibration texts "
                                f"({err}); calibrate an export that has its tokenizer files.") from err
    limit = spec.max_sequence_length or 512
    firsts = [t[0] if isinstance(t, tuple) else t for t in texts]
    seconds = [t[1] if isinstance(t, tuple) else None for t in texts]
    pairs = any(s is not None for s in seconds)
    encoded = tokenizer(firsts, text_pair=seconds if pairs else None, truncation=True,
                        max_length=min(limit, width) if width else limit)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else spec.pad_token_id
    names = set(spec.input_names)
    out = []
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        length = width or max(len(encoded["input_ids"][i]) for i in rows)
        ids = np.full((len(rows), length), pad_id, np.int64)
        mask = np.zeros((len(rows), length), np.int64)
        types = np.zeros((len(rows), length), np.int64)
        for j, i in enumerate(rows):
            n = len(encoded["input_ids"][i])
            ids[j, :n], mask[j, :n] = encoded["input_ids"][i], 1
            if "token_type_ids" in encoded:
                types[j, :n] = encoded["token_type_ids"][i]
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if spec.task == "multiple-choice":  # each text is one choice of its own question
            feeds = {k: v[:, None, :] for k, v in feeds.items()}
        feeds.update(io_spec.empty_past(spec, len(rows)))  # an empty cache: the texts are the whole sequence
        out.append({k: v for k, v in feeds.items() if k in names})
    return out


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._feeds, None)


# ----------------------------------------------------------------------------- building one recipe
def smoothing_unavailable() -> Optional[str]:
    """Why SmoothQuant cannot run here (onnxruntime hands it to neural-compressor), or None when it can."""
    import importlib.util

    try:
        found = importlib.util.find_spec("neural_compressor") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else ("onnxruntime's SmoothQuant needs neural-compressor's ONNX adaptor "
                               "(neural_compressor.adaptor.ox_utils), which is not installed")


def _build(recipe: str, source: str, target: str, nodes: Sequence[str], *, reduce_range: bool, external: bool,
           calibration_feeds: Sequence[dict], calibration_cache: Optional[str] = None) -> None:
    """Write ``recipe``'s int8 model of ``source``, with the MatMul ``nodes`` quantized, to ``target``.

    The nodes are named explicitly because the QDQ quantizer ignores ``MatMulConstBOnly``: left to itself it
    quantizes attention's activation x activation MatMuls and a tied decoder too."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    r = BASE_RECIPES[recipe.removesuffix(KEEP_FP32)]
    options = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
    if r.smooth:
        options["SmoothQuant"] = True
    # u8 weights: u8 x u8 kernels add in int32 (no int16 saturation), so the full 8 bits are kept on any CPU.
    weight_type = QuantType.QUInt8 if r.weights == "u8" else QuantType.QInt8
    common = dict(op_types_to_quantize=list(OP_TYPES), per_channel=r.per_channel,
                  reduce_range=reduce_range and r.weights == "s8", weight_type=weight_type,
                  use_external_data_format=external, nodes_to_quantize=list(nodes), extra_options=options)
    try:
        # The quantizers warn on the root logger about pre-processing; the histogram calibrators print progress.
        with logger_level(None, logging.ERROR), contextlib.redirect_stdout(io.StringIO()):
            if r.mode == "dynamic":
                quantize_dynamic(source, target, **common)
                _merge_shared_input_gemms(target, external)
            else:
                if r.calibration != "MinMax":
                    calibration_feeds = uniform_rows(calibration_feeds, limit=HISTOGRAM_ROWS)
                quantize_static(source, target, _FeedReader(calibration_feeds), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8,
                                calibrate_method=getattr(CalibrationMethod, r.calibration),
                                calibration_cache_path=None if r.smooth else calibration_cache, **common)
    except Exception as err:  # ORT raises plain exceptions from deep inside its graph walk
        raise QuantizationError(f"onnxruntime's quantizer ({recipe}) failed on {source}: {err}") from err


def _merge_shared_input_gemms(path: str, external: bool) -> int:
    """Rewrite a dynamic int8 model so the GEMMs reading one quantized input run as one (``int8_graph``): the
    searched, gated and shipped model is the faster graph, its outputs the same."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    model = onnx.load(path, load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    load_external_data_for_model(model, os.path.dirname(path) or ".")
    merged = int8_graph.fuse_shared_input_gemms(model)
    if merged:
        for location in locations:  # onnx appends to an existing data file: start from none
            os.remove(os.path.join(os.path.dirname(path), location))
        onnx.save_model(model, path, save_as_external_data=external, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data")
    return merged


TOKEN_INPUTS = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "position_ids": 0}


def uniform_rows(feeds: Sequence[dict[str, np.ndarray]], pad_id: int = 1,
                 limit: Optional[int] = None) -> list[dict[str, np.ndarray]]:
    """The feeds one row at a time, right-padded to the longest: onnxruntime's histogram calibrators (Entropy,
    Percentile) stack every run's activations into one array, so every run must have the same shape. With
    ``limit``, that many rows spread evenly over the feeds (which are sorted by length)."""
    width = max(f["input_ids"].shape[-1] for f in feeds)
    out = []
    for f in feeds:
        for row in range(f["input_ids"].shape[0]):
            feed = {}
            for name, value in f.items():
                value = value[row:row + 1]
                if name in TOKEN_INPUTS:
                    fill = pad_id if TOKEN_INPUTS[name] is None else TOKEN_INPUTS[name]
                    pad = [(0, 0)] * (value.ndim - 1) + [(0, width - value.shape[-1])]
                    value = np.pad(value, pad, constant_values=fill)
                feed[name] = value
            out.append(feed)
    if limit is not None and len(out) > limit:
        out = [out[i] for i in np.linspace(0, len(out) - 1, limit).round().astype(int)]
    return out


def _calibration_cache(workdir: str, recipe: str) -> str:
    """One range cache per calibration method: the per-node builds reuse their recipe's ranges."""
    return os.path.join(workdir, f"calibration-{BASE_RECIPES[recipe.removesuffix(KEEP_FP32)].calibration}.json")


def weight_matmuls(model) -> list[str]:
    """Names of the MatMul nodes whose B is a constant weight (the ones a recipe quantizes), in graph order."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES and len(n.input) > 1 and n.input[1] in constants]


def _quantized_count(model) -> int:
    """Integer MatMuls of a dynamic model, or MatMuls fed a dequantized weight in a QDQ model."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return int8_graph.merged_gemms(model) + sum(
        1 for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
        or n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in dequantized)


_LAYER_INDEX = re.compile(r"layers?[._/]?(\d+)")


def sensitivity_candidates(names: Sequence[str]) -> list[str]:
    """The nodes worth measuring one by one: first and last encoder layer, and everything outside the layers
    (embedding projection, head projections). Names without a recognisable layer index: all of them."""
    index = {n: int(m.group(1)) if (m := _LAYER_INDEX.search(n)) else None for n in names}
    layers = [i for i in index.values() if i is not None]
    if not layers:
        return list(names)
    ends = {min(layers), max(layers)}
    return [n for n in names if index[n] is None or index[n] in ends]


def weight_sizes(model) -> dict[str, int]:
    """Elements of each weight MatMul's constant B: its multiply-adds per token, so the time int8 saves there."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None:
                shapes[n.output[0]] = list(value.dims)
    nodes = {n.name: n for n in model.graph.node}
    return {name: int(np.prod(shapes.get(nodes[name].input[1], [1]))) for name in weight_matmuls(model)}


def node_sensitivity(recipe: str, source: str, spec, gate_feeds: Sequence[dict], workdir: str, *,
                     reduce_range: bool, calibration_feeds: Sequence[dict], candidates: Sequence[str],
                     calibration_cache: Optional[str] = None, gate: str = "all-outputs",
                     positions: Optional[Sequence[np.ndarray]] = None) -> dict[str, tuple[float, float]]:
    """Per candidate node: (top-1 loss, cosine loss) of the gate when that node alone is quantized."""
    # Spread over the gate inputs (batched by length): short and long texts alike.
    step = max(1, len(gate_feeds) // SENSITIVITY_BATCHES)
    feeds = list(gate_feeds[::step][:SENSITIVITY_BATCHES])
    where = list(positions[::step][:SENSITIVITY_BATCHES]) if positions is not None else None
    fp32 = _session(source)
    names = spec.result_names
    reference = [dict(zip(names, fp32.run(names, f))) for f in feeds]
    out = {}
    for node in candidates:
        path = os.path.join(workdir, "one-node.onnx")
        _build(recipe, source, path, [node], reduce_range=reduce_range, external=False,
               calibration_feeds=calibration_feeds, calibration_cache=calibration_cache)
        int8 = _session(path)
        got = [dict(zip(names, int8.run(names, f))) for f in feeds]
        result = gate_result(gate, reference, got, feeds, spec, where)
        out[node] = (max(0.0, 1.0 - result.top1_agreement) if result.top1_agreement is not None else 0.0,
                     max(0.0, 1.0 - result.cosine))
    return out


def keep_order(sensitivity: dict[str, tuple[float, float]], sizes: dict[str, int], min_cosine: float,
               min_top1: float) -> list[str]:
    """The order in which to keep nodes in fp32: most gate loss per unit of int8 time saved first.

    A node's loss is its single-node top-1 and cosine losses in gate budgets (1 - threshold); its time saved is
    its weight's size (multiply-adds per token). Nodes whose quantization alone costs nothing are never kept."""
    budget = (max(1e-6, 1.0 - min_top1), max(1e-9, 1.0 - min_cosine))
    loss = {n: top1 / budget[0] + cos / budget[1] for n, (top1, cos) in sensitivity.items()}
    ranked = [n for n in sensitivity if loss[n] > 0]
    return sorted(ranked, key=lambda n: loss[n] / max(1, sizes.get(n, 1)), reverse=True)


# ----------------------------------------------------------------------------- gates
def default_gate(task: str) -> str:
    return TASK_GATES.get(task, "all-outputs")


def check_gate(gate: Optional[str], task: str) -> str:
    """The gate to use for ``task``: ``gate`` when it fits the task, else the task's default."""
    if gate is None:
        return default_gate(task)
    if gate not in GATES:
        raise InputError(f"Unknown gate {gate!r}; choose one of {', '.join(GATES)}.")
    if gate in GATE_TASKS and task not in GATE_TASKS[gate]:
        fitting = [g for g in GATES if g not in GATE_TASKS or task in GATE_TASKS[g]]
        raise InputError(f"The {gate} gate measures {', '.join(GATE_TASKS[gate])} outputs; this export is "
                         f"{task}: use one of {', '.join(fitting)}.")
    return gate


def mask_positions(feeds: Sequence[dict[str, np.ndarray]], mask_id: int, special: set[int],
                   rate: float = MASK_RATE, seed: int = 0) -> tuple[list[dict], list[np.ndarray]]:
    """Feeds with ``rate`` of each row's real, non-special tokens (at least one) replaced by ``mask_id``, and the
    masked positions: what a fill-mask user sends."""
    rng = np.random.default_rng(seed)
    out, where = [], []
    for f in feeds:
        ids = f["input_ids"].copy()
        real = (f["attention_mask"] == 1) & ~np.isin(ids, list(special))
        chosen = real & (rng.random(ids.shape) < rate)
        for row in np.flatnonzero(real.any(-1) & ~chosen.any(-1)):  # every text gets a masked position
            chosen[row, rng.choice(np.flatnonzero(real[row]))] = True
        ids[chosen] = mask_id
        out.append({**f, "input_ids": ids})
        where.append(chosen)
    return out, where


def best_span(start: np.ndarray, end: np.ndarray, real: np.ndarray, max_length: int = SPAN_MAX_LENGTH) -> tuple:
    """(start, end) maximising start_logit + end_logit over real tokens, start <= end < start + max_length."""
    s = np.where(real, start, -np.inf)
    e = np.where(real, end, -np.inf)
    scores = s[:, None] + e[None, :]
    i, j = np.indices(scores.shape)
    scores[(j < i) | (j >= i + max_length)] = -np.inf
    return tuple(int(v) for v in np.unravel_index(np.argmax(scores), scores.shape))


def _real(feeds: dict, length: int) -> Optional[np.ndarray]:
    mask = feeds.get("attention_mask")
    return None if mask is None else mask[..., -length:].astype(bool)


def gate_result(gate: str, reference: Sequence[dict], got: Sequence[dict], feeds: Sequence[dict], spec,
                positions: Optional[Sequence[np.ndarray]] = None) -> GateResult:
    """The ``gate``'s figures for int8 outputs ``got`` against fp32 ``reference`` (one dict per feed).

    ``positions`` (fill-mask): the masked positions of each feed; without them every real position counts."""
    names = spec.result_names
    if gate in ("all-outputs", "cosine"):
        outputs = _agreement_of(reference, got, names, feeds, spec)
        if gate == "all-outputs":
            return GateResult(gate, min(o.top1_agreement for o in outputs), min(o.cosine for o in outputs),
                              min(o.rows for o in outputs), min(o.min_row_cosine for o in outputs))
        rows = [(_cosine(x, y)) for n in names for want, have, f in zip(reference, got, feeds)
                for x, y in zip(_valid_rows(want[n], f, spec), _valid_rows(have[n], f, spec))]
        return GateResult(gate, None, float(np.mean(rows)), len(rows), float(np.min(rows)))
    if gate == "span":
        agree, a, b, row_cos = [], [], [], []
        for want, have, f in zip(reference, got, feeds):
            s0, e0, s1, e1 = want[names[0]], want[names[1]], have[names[0]], have[names[1]]
            real = _real(f, s0.shape[-1])
            for r in range(s0.shape[0]):
                m = real[r] if real is not None else np.ones(s0.shape[-1], bool)
                agree.append(best_span(s0[r], e0[r], m) == best_span(s1[r], e1[r], m))
                x = np.concatenate([s0[r][m], e0[r][m]]).astype(np.float64)
                y = np.concatenate([s1[r][m], e1[r][m]]).astype(np.float64)
                a.append(x), b.append(y), row_cos.append(_cosine(x, y))
        return GateResult(gate, float(np.mean(agree)), _cosine(np.concatenate(a), np.concatenate(b)), len(agree),
                          float(np.min(row_cos)))
    # masked-tokens, tokens, label: arg-max agreement over the selected rows of the main output.
    name = names[0]
    a_all, b_all, sel_a, sel_b = [], [], [], []
    for k, (want, have, f) in enumerate(zip(reference, got, feeds)):
        x, y = want[name], have[name]
        if gate == "label":
            rows_x, rows_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
            a_all.append(rows_x), b_all.append(rows_y), sel_a.append(rows_x), sel_b.append(rows_y)
            continue
        real = _real(f, x.shape[1])
        real = np.ones(x.shape[:2], bool) if real is None else real
        a_all.append(x[real]), b_all.append(y[real])
        chosen = positions[k] if gate == "masked-tokens" and positions is not None else real
        sel_a.append(x[chosen]), sel_b.append(y[chosen])
    a, b = np.concatenate(a_all).astype(np.float64), np.concatenate(b_all).astype(np.float64)
    sa, sb = np.concatenate(sel_a).astype(np.float64), np.concatenate(sel_b).astype(np.float64)
    masked = gate == "masked-tokens" and positions is not None
    return GateResult(
        gate, float(np.mean(sa.argmax(-1) == sb.argmax(-1))), _cosine(a.ravel(), b.ravel()), len(sa),
        float(min(_cosine(x, y) for x, y in zip(sa, sb))), positions="masked" if masked else "all",
        all_positions_top1=float(np.mean(a.argmax(-1) == b.argmax(-1))) if masked else None)


def closest_advice(trials: Sequence[RecipeTrial], gate: Optional[GateResult], min_cosine: float, min_top1: float,
                   *, texts: int, pinned: Optional[str]) -> str:
    """What came closest to the gate, by how much, and what the user can do about it."""
    built = [t for t in trials if not t.skipped]
    if not built:
        return ""
    best = min(built, key=lambda t: t.shortfall)
    parts = []
    if best.top1_agreement is not None:
        short = min_top1 - best.top1_agreement
        parts.append(f"top-1 {best.top1_agreement:.2%} ("
                     + (f"{short * 100:.2f} points short of {min_top1:.2%}" if short > 0 else "passes") + ")")
    short = min_cosine - best.cosine
    parts.append(f"cosine {best.cosine:.5f} (" + (f"{short:.5f} short of {min_cosine}" if short > 0 else "passes")
                 + ")")
    kept = f", {len(best.kept_fp32)} MatMuls in fp32" if best.kept_fp32 else ""
    lines = [f"Closest: {best.recipe}{kept}: " + ", ".join(parts) + "."]
    todo = []
    if gate is not None and gate.top1_agreement is not None and gate.rows:
        flip = 1.0 / gate.rows
        todo.append(f"judge on more text (--calibration: {texts or 'no'} texts now, {gate.rows} predictions, one "
                    f"flip = {flip:.2%})" if texts else
                    "judge on your own texts (--calibration): generated ids are no test of what your users send")
    elif not texts:
        todo.append("judge on your own texts (--calibration)")
    accept = [f"--min-top1 {np.floor(best.top1_agreement * 1e4 + 1e-6) / 1e4:g}"] \
        if best.top1_agreement is not None and best.top1_agreement < min_top1 else []
    if best.cosine < min_cosine:
        accept.append(f"--min-cosine {np.floor(best.cosine * 1e5 + 1e-6) / 1e5:g}")
    if accept:
        todo.append(f"accept it: --recipe {best.recipe} {' '.join(accept)}"
                    + (" (the kept nodes are measured again)" if best.kept_fp32 else ""))
    if pinned:
        todo.append("let the search choose (no --recipe)")
    if gate is not None:
        others = [g for g in GATES if g != gate.gate and (g not in GATE_TASKS)]
        todo.append(f"or judge it another way (--gate {' / '.join(others)})")
    lines.append("What you can do: " + "; ".join(todo) + ".")
    return "\n".join(lines)


def _skip_reason(base: str, reduce_range: bool) -> Optional[str]:
    """Why the search leaves ``base`` out here, or None."""
    r = BASE_RECIPES[base]
    if r.weights == "u8" and not reduce_range:
        return "full-range u8 x s8 already runs exactly on this CPU (VNNI, ARM or --no-reduce-range)"
    if r.smooth:
        return smoothing_unavailable()
    return None


def _masked_gate_inputs(export_dir: str, feeds: Sequence[dict]) -> tuple[list[dict], Optional[list[np.ndarray]]]:
    """The fill-mask gate's inputs: the texts with MASK_RATE of their tokens masked, and where; the texts as
    they are (every position gated) when the tokenizer has no mask token."""
    from ..tokenizers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        return list(feeds), None
    special = {getattr(tokenizer, f"{n}_token_id", None) for n in ("bos", "eos", "pad", "cls", "sep", "unk")}
    return mask_positions(feeds, mask_id, {i for i in special if i is not None})


# ----------------------------------------------------------------------------- the search
def quantize(
    export_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    recipe: Optional[str] = None,
    calibration: Union[str, os.PathLike, Sequence[Text], None] = None,
    per_channel: bool = False,
    reduce_range: Optional[bool] = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    min_top1: float = DEFAULT_MIN_TOP1,
    validate: bool = True,
    force: bool = False,
    raise_on_failure: bool = True,
    max_calibration_texts: int = 512,
    gate: Optional[str] = None,
) -> QuantizationReport:
    """Quantize ``export_dir``'s model to int8 into ``out_dir`` (default ``<export_dir>-int8``); see module doc.

    ``recipe`` pins one of ``RECIPES``; without it the search picks the fastest that passes the gate
    (``per_channel=True`` alone pins ``dynamic-per-channel``; ``validate=False`` alone pins ``dynamic``).
    ``calibration`` is a text / JSONL file path or a list of texts (str or (text, text_pair)): they calibrate
    ``static-qdq`` and are the gate's inputs (the first ``max_calibration_texts``). ``gate`` names one of
    ``GATES`` (default: the task's, ``TASK_GATES``).

    ``out_dir`` is written all or nothing (built and gated beside it, then swapped in): a model below the
    thresholds raises ``QuantizationError`` and leaves ``out_dir`` as it was, unless ``raise_on_failure=False``
    asks for the report and the directory anyway (its ``onnxport.json`` then says ``"passed": false``).
    ``force`` replaces the export files of a non-empty ``out_dir`` and keeps the user's other files; an
    ``out_dir`` that is the export, inside it or around it is refused.
    """
    import onnx

    from ..artifact import attention_op, layout, rotary_op
    from ..artifact.files import export_file_names
    from ..artifact.spec_file import SPEC_FILE, read_export_dir, write_spec_file
    from . import onnx_file as artifact

    if recipe is not None and recipe not in RECIPES:
        raise QuantizationError(f"Unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}.")
    if recipe is None and (per_channel or not validate):
        recipe = "dynamic-per-channel" if per_channel else "dynamic"  # nothing to search with, or a pinned option
    if recipe is not None and recipe.endswith(KEEP_FP32) and not validate:
        raise QuantizationError(f"Recipe {recipe} measures which nodes to keep in fp32 on the gate inputs; "
                                "it cannot run without validation.")
    export_dir = os.fspath(export_dir).rstrip(os.sep) or os.sep
    out_dir = os.fspath(out_dir) if out_dir is not None else export_dir + "-int8"
    source = layout.model_path(export_dir)
    if not os.path.isfile(source) or not os.path.isfile(os.path.join(export_dir, SPEC_FILE)):
        raise QuantizationError(f"{export_dir!r} is not an onnxport export directory ({layout.model_file()} + "
                                f"{SPEC_FILE}); "
                                "create one with `onnxport export`.")
    if artifact.overlapping(export_dir, out_dir):
        raise QuantizationError(f"The int8 model needs its own directory: {out_dir!r} is the export {export_dir!r}, "
                                "inside it or around it; pass an --out outside the export.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise QuantizationError(f"Output path {out_dir!r} exists and is not a directory; choose a directory path.")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise QuantizationError(f"Output directory {out_dir!r} exists and is not empty; choose another or pass --force.")
    metadata, spec = read_export_dir(export_dir)
    if metadata.get("quantization"):
        raise QuantizationError(f"{export_dir} is already quantized; quantize the fp32 export instead.")
    if metadata.get("dtype", "fp32") != "fp32":
        raise QuantizationError(f"{export_dir} is a {metadata['dtype']} export; int8 quantization starts from the fp32 "
                                "export (export again without --fp16).")
    gate = check_gate(gate, spec.task)
    if recipe is not None and BASE_RECIPES[recipe.removesuffix(KEEP_FP32)].smooth and smoothing_unavailable():
        raise QuantizationError(f"Recipe {recipe} cannot run here: {smoothing_unavailable()}; choose another "
                                "recipe or let the search choose.")
    texts = _load_texts(calibration)[:max_calibration_texts] if calibration is not None else None
    chosen_by = "given" if reduce_range is not None else "cpu"
    reduce_range = default_reduce_range() if reduce_range is None else bool(reduce_range)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    if texts is not None:
        calibration_feeds = tokenized_inputs(export_dir, spec, texts)
    else:
        calibration_feeds = list(validation_inputs(spec))
    gate_feeds, positions = calibration_feeds, None
    if gate == "masked-tokens" and texts is not None:
        gate_feeds, positions = _masked_gate_inputs(export_dir, calibration_feeds)

    external = layout.data_path(export_dir) is not None
    # Built and gated beside out_dir, then swapped in: a model the gate refuses is never left where
    # `onnxport run` would serve it, and a previous out_dir stays as it was. User files in out_dir survive --force.
    owned = export_file_names(out_dir)
    with artifact.staged_directory(out_dir, owned.__contains__, QuantizationError) as build_dir, \
            tempfile.TemporaryDirectory(prefix="onnxport-quantize-") as workdir:
        fp32_session = _session(source) if validate else None
        names = spec.result_names
        reference = [dict(zip(names, fp32_session.run(names, f))) for f in gate_feeds] if validate else []
        fp32_model = onnx.load(source, load_external_data=False)
        all_weights = weight_matmuls(fp32_model)
        if not all_weights:
            raise QuantizationError(f"{source} has no MatMul with a constant weight; there is nothing to quantize.")
        sizes = weight_sizes(fp32_model)
        del fp32_model
        total_size = max(1, sum(sizes.values()))
        # (trial, model path, per-output agreement, gate figures)
        trials: list[tuple[RecipeTrial, Optional[str], list[OutputAgreement], Optional[GateResult]]] = []

        def trial(name: str, kept: list[str], path: Optional[str] = None):
            path = path or os.path.join(workdir, f"{name}.onnx")
            logger.info("quantizing %s: %s (reduce_range=%s, %d kept in fp32)", source, name, reduce_range, len(kept))
            _build(name, source, path, [n for n in all_weights if n not in kept], reduce_range=reduce_range,
                   external=external, calibration_feeds=calibration_feeds,
                   calibration_cache=_calibration_cache(workdir, name))
            outputs, result = [], None
            if validate:
                int8 = _session(path)
                got = [dict(zip(names, int8.run(names, f))) for f in gate_feeds]
                outputs = _agreement_of(reference, got, names, gate_feeds, spec)
                result = gate_result(gate, reference, got, gate_feeds, spec, positions)
            t = RecipeTrial(recipe=name, kept_fp32=list(kept),
                            top1_agreement=result.top1_agreement if result else None,
                            cosine=result.cosine if result else float("nan"),
                            passed=not validate or result.passes(min_cosine, min_top1),
                            kept_share=round(sum(sizes[n] for n in kept) / total_size, 4),
                            shortfall=result.shortfall(min_cosine, min_top1) if result else 0.0)
            return t, path, outputs, result

        def keep_search(base: str):
            """Keep nodes in fp32 one by one (most gate loss per unit of time saved first), gating each model,
            until the gate passes or the kept work would exceed MAX_KEPT_SHARE; the closest model is returned."""
            candidates = all_weights if len(all_weights) <= MEASURE_ALL_UP_TO else sensitivity_candidates(all_weights)
            sensitivity = node_sensitivity(base, source, spec, gate_feeds, workdir, reduce_range=reduce_range,
                                           calibration_feeds=calibration_feeds, candidates=candidates,
                                           calibration_cache=_calibration_cache(workdir, base), gate=gate,
                                           positions=positions)
            logger.info("single-node losses (top-1, cosine) under %s: %s", base, sensitivity)
            best, kept, steps = None, [], 0
            for node in keep_order(sensitivity, sizes, min_cosine, min_top1):
                if sum(sizes[n] for n in kept + [node]) / total_size > MAX_KEPT_SHARE:
                    break
                kept.append(node)
                steps += 1
                current = trial(base + KEEP_FP32, kept, os.path.join(workdir, f"{base}{KEEP_FP32}-{steps}.onnx"))
                if best is None or current[0].shortfall < best[0].shortfall:
                    if best is not None:
                        os.remove(best[1])
                    best = current
                else:
                    os.remove(current[1])
                if current[0].passed:
                    break
            if best is None and recipe is not None:  # pinned: nothing measurably sensitive, nothing to keep
                best = trial(base + KEEP_FP32, [])
            if best is not None:
                best[0].steps = steps
            return best

        if recipe is not None:
            base = recipe.removesuffix(KEEP_FP32)
            found = keep_search(base) if recipe.endswith(KEEP_FP32) else trial(base, [])
            trials.append(found)
        else:
            for base in BASE_RECIPES:
                why = _skip_reason(base, reduce_range)
                if not why:
                    try:
                        trials.append(trial(base, []))
                        continue
                    except QuantizationError as err:  # one recipe's quantizer failing is no reason to stop
                        why = f"onnxruntime's quantizer failed: {err.__cause__ or err}"
                        logger.info("%s: %s", base, why)
                # None, not NaN / inf: onnxport.json stays standard JSON.
                trials.append((RecipeTrial(base, [], None, None, False, skipped=why, shortfall=None), None, [], None))
            if validate and not any(t[0].passed for t in trials):
                failing = sorted((t for t in trials if not t[0].skipped), key=lambda t: t[0].shortfall)
                for i, base_trial in enumerate(failing[:KEEP_SEARCH_MAX_BASES]):
                    if i >= KEEP_SEARCH_BASES and any(t[0].passed for t in trials):
                        break
                    found = keep_search(base_trial[0].recipe)
                    if found is not None:
                        trials.append(found)
        seconds["search"] = round(time.perf_counter() - clock, 3)

        passing = [t for t in trials if t[0].passed and not t[0].skipped]
        fp32_ms = None
        if validate and passing:
            for t in passing:
                t[0].latency_ms = round(_latency_ms(t[1], gate_feeds), 3)
            fp32_ms = _latency_ms(source, gate_feeds)
            fastest = min(t[0].latency_ms for t in passing)
            # Timings within SPEED_TIE of the fastest are noise on a shared CPU: among those the most accurate
            # wins (a recipe that only just passes on the gate's texts is the likeliest to miss on others).
            passing = [t for t in passing if t[0].latency_ms <= fastest * SPEED_TIE]
            passing.sort(key=lambda t: (-t[0].shortfall, t[0].cosine), reverse=True)
        seconds["quantize"] = round(time.perf_counter() - clock, 3)
        if not any(not t[0].skipped for t in trials):
            raise QuantizationError(f"No int8 recipe could be built for {source}: "
                                    + "; ".join(f"{t[0].recipe}: {t[0].skipped}" for t in trials))
        best, best_path, agreement, best_gate = passing[0] if passing else min(
            (t for t in trials if not t[0].skipped), key=lambda t: t[0].shortfall)

        model = onnx.load(best_path)
        quantized_nodes, merged = _quantized_count(model), int8_graph.merged_gemms(model)
        custom_nodes = len(rotary_op.rotary_nodes(model))
        rotary_op.attach_function(model)  # keep the function bodies beside the kept custom nodes
        attention_op.attach_function(model)
        model.ir_version = min(max(model.ir_version, artifact.MIN_IR_VERSION), artifact.MAX_IR_VERSION)
        model_files = artifact.save(model, build_dir, file_name=layout.model_file("int8"))
        del model

        chosen = BASE_RECIPES[best.recipe.removesuffix(KEEP_FP32)]
        report = QuantizationReport(
            out_dir=out_dir, model_path=os.path.join(out_dir, layout.model_file("int8")),
            weight_type="uint8" if chosen.weights == "u8" else "int8", per_channel=chosen.per_channel,
            reduce_range=reduce_range and chosen.weights == "s8",
            op_types=list(OP_TYPES), quantized_nodes=quantized_nodes, custom_nodes=custom_nodes,
            fp32_bytes=sum(os.path.getsize(f) for f in (source, layout.data_path(export_dir)) if f),
            int8_bytes=sum(os.path.getsize(f) for f in model_files), min_cosine=min_cosine, min_top1=min_top1,
            outputs=agreement, seconds=seconds, recipe=best.recipe, kept_fp32=best.kept_fp32,
            gate_inputs="calibration" if texts is not None else "generated",
            gate_texts=len(texts) if texts is not None else 0,
            calibration={"texts": len(texts) if texts is not None else 0, "method": chosen.calibration or "MinMax",
                         "used": chosen.mode == "static"},
            cpu=cpu_features(reduce_range, chosen_by), search=[t[0] for t in trials], gate=best_gate,
            weight_matmuls=len(all_weights), kept_share=best.kept_share,
            speedup=round(fp32_ms / best.latency_ms, 3) if fp32_ms and best.latency_ms else None,
            merged_gemms=merged,
        )
        if not report.passed:
            report.advice = closest_advice(report.search, best_gate, min_cosine, min_top1,
                                           texts=len(texts) if texts is not None else 0, pinned=recipe)
        seconds["total"] = round(time.perf_counter() - clock, 3)
        logger.debug("%s", report.table())
        if raise_on_failure and not report.passed:
            raise QuantizationError(
                f"The int8 model disagrees with fp32 beyond the thresholds:\n{report.table()}\n{report.advice}\n"
                f"Nothing was written to {out_dir}{' (it is as it was)' if os.path.isdir(out_dir) else ''}."
            )

        # Everything but the model files comes along, so the directory serves like the fp32 one.
        for name in sorted(os.listdir(export_dir)):
            src = os.path.join(export_dir, name)
            if name in (*layout.LAYOUT_NAMES, SPEC_FILE) or not os.path.isfile(src):
                continue
            shutil.copyfile(src, os.path.join(build_dir, name))
        if os.path.isfile(os.path.join(build_dir, "config.json")):
            layout.write_transformers_js_config(build_dir, "int8")
        metadata["quantization"] = report.to_dict()
        metadata["files"] = sorted({os.path.relpath(os.path.join(root, name), build_dir).replace(os.sep, "/")
                                    for root, _, files in os.walk(build_dir) for name in files} | {SPEC_FILE})
        write_spec_file(build_dir, metadata)
    return report


def _session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _latency_ms(path: str, feeds: Sequence[dict], batches: int = 4, repeats: int = 3) -> float:
    """Median wall time of one pass over the first ``batches`` gate inputs (after a warm-up pass)."""
    session = _session(path)
    feeds = list(feeds[:batches])
    for f in feeds:
        session.run(None, f)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for f in feeds:
            session.run(None, f)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def validation_inputs(spec, sets: int = VALIDATION_SETS):
    """Input dicts from the IO spec: several (batch, sequence) shapes and seeds, padded rows included."""
    from ..artifact.io_spec import make_inputs

    limit = spec.max_sequence_length or 512
    for i in range(sets):
        batch, sequence = VALIDATION_SHAPES[i % len(VALIDATION_SHAPES)]
        past = min(3, limit // 4) if spec.with_past else 0
        sequence = max(2, min(sequence, limit - past))
        yield make_inputs(spec, batch, sequence, past=past, num_choices=3, seed=1000 + i)


def _valid_rows(value: np.ndarray, feeds: dict[str, np.ndarray], spec) -> list[np.ndarray]:
    """Prediction rows (arg-max over the last axis) of one output, padded token positions dropped."""
    rows = value.reshape(-1, value.shape[-1]) if value.ndim > 1 else value.reshape(1, -1)
    mask = feeds.get("attention_mask")
    # Token-level outputs (batch, seq, features): keep rows of real tokens only.
    if mask is not None and value.ndim == 3 and spec.task != "multiple-choice":
        m = mask[:, -value.shape[1]:].reshape(-1).astype(bool)
        if m.size == rows.shape[0]:
            rows = rows[m]
    return list(rows.astype(np.float64))


def compare_to_fp32(fp32_path: str, int8_path: str, spec, sets: int = VALIDATION_SETS,
                    inputs: Optional[Sequence[dict[str, np.ndarray]]] = None) -> list[OutputAgreement]:
    """Cosine similarity and top-1 agreement of each non-cache output, int8 vs fp32, on ``inputs`` (default:
    ``sets`` generated input sets)."""
    feeds = list(inputs) if inputs is not None else list(validation_inputs(spec, sets))
    fp32 = _session(fp32_path)
    names = spec.result_names
    reference = [dict(zip(names, fp32.run(names, f))) for f in feeds]
    return _agreement(reference, _session(int8_path), names, feeds, spec)


def _agreement(reference: Sequence[dict], int8, names: Sequence[str], feeds: Sequence[dict],
               spec) -> list[OutputAgreement]:
    got = [dict(zip(names, int8.run(names, f))) for f in feeds]
    return _agreement_of(reference, got, names, feeds, spec)


def _agreement_of(reference: Sequence[dict], got: Sequence[dict], names: Sequence[str], feeds: Sequence[dict],
                  spec) -> list[OutputAgreement]:
    # Rows may differ in length between input sets (e.g. start_logits over positions): keep them as a list.
    rows: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for want, have, f in zip(reference, got, feeds):
        for n in names:
            rows[n][0].extend(_valid_rows(want[n], f, spec))
            rows[n][1].extend(_valid_rows(have[n], f, spec))
    result = []
    for n in names:
        a_rows, b_rows = rows[n]
        a, b = np.concatenate(a_rows), np.concatenate(b_rows)
        result.append(OutputAgreement(
            output=n,
            cosine=_cosine(a, b),
            min_row_cosine=float(min(_cosine(x, y) for x, y in zip(a_rows, b_rows))),
            top1_agreement=float(np.mean([x.argmax() == y.argmax() for x, y in zip(a_rows, b_rows)])),
            rows=len(a_rows),
            max_abs_diff=float(np.max(np.abs(a - b))) if a.size else 0.0,
        ))
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


__all__ = ["quantize", "QuantizationReport", "QuantizationError", "OutputAgreement", "RecipeTrial", "RECIPES",
           "GATES", "TASK_GATES", "GateResult", "gate_result", "keep_order", "closest_advice", "mask_positions",
           "compare_to_fp32", "cpu_has_vnni", "cpu_flags", "cpu_features", "default_reduce_range",
           "read_calibration_texts", "tokenized_inputs", "node_sensitivity",
           "DEFAULT_MIN_COSINE", "DEFAULT_MIN_TOP1"]
