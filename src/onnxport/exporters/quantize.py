"""int8 quantization of an export directory: a recipe search gated against its fp32 model.

``quantize(export_dir, out_dir)`` writes a complete export directory (int8
``model.onnx``, ``config.json``, tokenizer files, ``onnxport.json`` with a
``quantization`` block) that ``onnxport.runtime`` loads like any other.

Recipes (``RECIPES``), all built with ``onnxruntime.quantization``:

* ``dynamic``: int8 symmetric weights, one scale per tensor; uint8 activations
  quantized per call (``quantize_dynamic``).
* ``dynamic-per-channel``: the same with one weight scale per output column.
* ``static-qdq``: QuantizeLinear/DequantizeLinear pairs (``quantize_static``,
  ``QuantFormat.QDQ``), per-channel weights, activation ranges calibrated on the
  calibration inputs with the MinMax calibrator. MinMax was chosen by measurement
  on the trained RoBERTa masked-LM of the tests (held-out top-1 vs fp32: MinMax
  97.86 %, Entropy 97.86 %, Percentile 97.35 %; MinMax is also 3-4x faster).
* each of them ``-keep-fp32``: the same with the nodes that lose the most
  accuracy left in fp32. Those are found by measurement: each candidate MatMul
  (first layer, last layer and everything outside the layers: heads, embedding
  projection) is quantized alone and its top-1 / cosine loss on the gate inputs
  measured; the worst are kept until the rest fit in half the gate's budget.

Without ``recipe`` the search gates the three base recipes, tries the
``-keep-fp32`` variant of those that fail, times the ones that pass with ONNX
Runtime on the gate inputs and keeps the fastest (within 5 %, timing noise, the
most accurate of the fastest).

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

The gate runs fp32 and int8 through ONNX Runtime, on the calibration texts
tokenized by the export's own tokenizer when given (``calibration``), else on
inputs made from the IO spec (``io_spec.make_inputs``: several shapes and seeds,
padded rows), and reports, for every non-cache output, the cosine similarity and
the top-1 agreement (arg-max over the last axis; padded token positions excluded).
Below ``min_cosine`` or ``min_top1`` the call raises :class:`QuantizationError`
and leaves nothing servable behind.
"""

from __future__ import annotations

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
# name -> (mode, per-channel weights)
BASE_RECIPES = {"dynamic": ("dynamic", False), "dynamic-per-channel": ("dynamic", True),
                "static-qdq": ("static", True)}
RECIPES = tuple(BASE_RECIPES) + tuple(name + KEEP_FP32 for name in BASE_RECIPES)
# Recipes whose measured latency is within this factor of the fastest count as equally fast.
SPEED_TIE = 1.05
# Inputs per single-node sensitivity measurement: enough rows to rank the nodes, few enough to stay quick.
SENSITIVITY_BATCHES = 4
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
RECORDED_FLAGS = VNNI_FLAGS + ("amx_tile", "amx_bf16", "avx512f", "avx512_bf16", "avx2")

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
class RecipeTrial:
    """One recipe the search built and gated."""
    recipe: str
    kept_fp32: list[str]
    top1_agreement: float
    cosine: float
    passed: bool
    latency_ms: Optional[float] = None  # median over the timed gate batches, when it passed


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
        return _passes(self.outputs, self.min_cosine, self.min_top1)

    def table(self) -> str:
        kept = f", {len(self.kept_fp32)} kept in fp32" if self.kept_fp32 else ""
        lines = [
            f"int8 recipe {self.recipe}: {self.quantized_nodes} MatMul weights quantized{kept} "
            f"({self.weight_type}, per_channel={self.per_channel}, reduce_range={self.reduce_range}), "
            f"{self.custom_nodes} custom nodes kept; {self.fp32_bytes / 2**20:.1f} MiB -> {self.int8_bytes / 2**20:.1f} MiB",
        ]
        if len(self.search) > 1:
            lines.append("recipes tried: " + "; ".join(
                f"{t.recipe} top-1 {t.top1_agreement:.2%} cosine {t.cosine:.5f} "
                f"{'passed' if t.passed else 'failed'}" + (f" {t.latency_ms:.2f} ms" if t.latency_ms else "")
                for t in self.search))
        lines.append(f"gate inputs: {self.gate_inputs}" + (f" ({self.gate_texts} texts)" if self.gate_texts else ""))
        lines.append(f"{'output':<20} {'rows':>7} {'cosine':>10} {'min row cos':>12} {'top-1 agree':>12} "
                     f"{'max abs diff':>13}")
        for o in self.outputs:
            lines.append(f"{o.output:<20} {o.rows:>7} {o.cosine:>10.6f} {o.min_row_cosine:>12.6f} "
                         f"{o.top1_agreement:>11.2%} {o.max_abs_diff:>13.3e}")
        if self.validated:
            verdict = "passed" if self.passed else "FAILED"
            lines.append(f"thresholds: cosine >= {self.min_cosine}, top-1 >= {self.min_top1:.2%}: {verdict}")
        return "\n".join(lines)


def _passes(outputs: Sequence[OutputAgreement], min_cosine: float, min_top1: float) -> bool:
    return all(o.cosine >= min_cosine and o.top1_agreement >= min_top1 for o in outputs)


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
def _build(recipe: str, source: str, target: str, nodes: Sequence[str], *, reduce_range: bool, external: bool,
           calibration_feeds: Sequence[dict], calibration_cache: Optional[str] = None) -> None:
    """Write ``recipe``'s int8 model of ``source``, with the MatMul ``nodes`` quantized, to ``target``.

    The nodes are named explicitly because the QDQ quantizer ignores ``MatMulConstBOnly``: left to itself it
    quantizes attention's activation x activation MatMuls and a tied decoder too."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    mode, per_channel = BASE_RECIPES[recipe.removesuffix(KEEP_FP32)]
    options = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
    common = dict(op_types_to_quantize=list(OP_TYPES), per_channel=per_channel, reduce_range=reduce_range,
                  weight_type=QuantType.QInt8, use_external_data_format=external,
                  nodes_to_quantize=list(nodes), extra_options=options)
    try:
        with logger_level(None, logging.ERROR):  # the quantizers warn on the root logger about pre-processing
            if mode == "dynamic":
                quantize_dynamic(source, target, **common)
            else:
                quantize_static(source, target, _FeedReader(calibration_feeds), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                                calibration_cache_path=calibration_cache, **common)
    except Exception as err:  # ORT raises plain exceptions from deep inside its graph walk
        raise QuantizationError(f"onnxruntime's quantizer ({recipe}) failed on {source}: {err}") from err


def weight_matmuls(model) -> list[str]:
    """Names of the MatMul nodes whose B is a constant weight (the ones a recipe quantizes), in graph order."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES and len(n.input) > 1 and n.input[1] in constants]


def _quantized_count(model) -> int:
    """Integer MatMuls of a dynamic model, or MatMuls fed a dequantized weight in a QDQ model."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node
               if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
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


def node_sensitivity(recipe: str, source: str, spec, gate_feeds: Sequence[dict], workdir: str, *,
                     reduce_range: bool, calibration_feeds: Sequence[dict], candidates: Sequence[str],
                     calibration_cache: Optional[str] = None) -> dict[str, tuple[float, float]]:
    """Per candidate node: (top-1 loss, cosine loss) of the main output when that node alone is quantized."""
    # Spread over the gate inputs (batched by length): short and long texts alike.
    feeds = list(gate_feeds[::max(1, len(gate_feeds) // SENSITIVITY_BATCHES)][:SENSITIVITY_BATCHES])
    fp32 = _session(source)
    names = spec.result_names
    reference = [dict(zip(names, fp32.run(names, f))) for f in feeds]
    out = {}
    for node in candidates:
        path = os.path.join(workdir, "one-node.onnx")
        _build(recipe, source, path, [node], reduce_range=reduce_range, external=False,
               calibration_feeds=calibration_feeds, calibration_cache=calibration_cache)
        agreement = _agreement(reference, _session(path), names, feeds, spec)
        out[node] = (max(0.0, 1.0 - min(a.top1_agreement for a in agreement)),
                     max(0.0, 1.0 - min(a.cosine for a in agreement)))
    return out


def choose_kept(sensitivity: dict[str, tuple[float, float]], min_cosine: float, min_top1: float) -> list[str]:
    """The worst nodes, kept in fp32 until the remaining single-node losses add up to half the gate's budget."""
    budget = (max(1e-6, 1.0 - min_top1) / 2, max(1e-9, 1.0 - min_cosine) / 2)
    ranked = sorted(sensitivity, key=lambda n: (sensitivity[n][0] / budget[0] + sensitivity[n][1] / budget[1]),
                    reverse=True)
    kept = []
    for node in ranked:
        rest = [sensitivity[n] for n in ranked if n not in kept]
        if sum(r[0] for r in rest) <= budget[0] and sum(r[1] for r in rest) <= budget[1]:
            break
        kept.append(node)
    return kept


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
) -> QuantizationReport:
    """Quantize ``export_dir``'s model to int8 into ``out_dir`` (default ``<export_dir>-int8``); see module doc.

    ``recipe`` pins one of ``RECIPES``; without it the search picks the fastest that passes the gate
    (``per_channel=True`` alone pins ``dynamic-per-channel``; ``validate=False`` alone pins ``dynamic``).
    ``calibration`` is a text / JSONL file path or a list of texts (str or (text, text_pair)): they calibrate
    ``static-qdq`` and are the gate's inputs (the first ``max_calibration_texts``).

    ``out_dir`` is written all or nothing (built and gated beside it, then swapped in): a model below the
    thresholds raises ``QuantizationError`` and leaves ``out_dir`` as it was, unless ``raise_on_failure=False``
    asks for the report and the directory anyway (its ``onnxport.json`` then says ``"passed": false``).
    ``force`` replaces the export files of a non-empty ``out_dir`` and keeps the user's other files; an
    ``out_dir`` that is the export, inside it or around it is refused.
    """
    import onnx

    from ..artifact import layout, rotary_op
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
    texts = _load_texts(calibration)[:max_calibration_texts] if calibration is not None else None
    chosen_by = "given" if reduce_range is not None else "cpu"
    reduce_range = default_reduce_range() if reduce_range is None else bool(reduce_range)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    if texts is not None:
        gate_feeds = tokenized_inputs(export_dir, spec, texts)
    else:
        gate_feeds = list(validation_inputs(spec))
    calibration_feeds = gate_feeds

    external = layout.data_path(export_dir) is not None
    # Built and gated beside out_dir, then swapped in: a model the gate refuses is never left where
    # `onnxport run` would serve it, and a previous out_dir stays as it was. User files in out_dir survive --force.
    owned = export_file_names(out_dir)
    with artifact.staged_directory(out_dir, owned.__contains__, QuantizationError) as build_dir, \
            tempfile.TemporaryDirectory(prefix="onnxport-quantize-") as workdir:
        fp32_session = _session(source) if validate else None
        names = spec.result_names
        reference = [dict(zip(names, fp32_session.run(names, f))) for f in gate_feeds] if validate else []
        all_weights = weight_matmuls(onnx.load(source, load_external_data=False))
        if not all_weights:
            raise QuantizationError(f"{source} has no MatMul with a constant weight; there is nothing to quantize.")
        trials: list[tuple[RecipeTrial, str, list[OutputAgreement]]] = []

        def trial(name: str, kept: list[str]) -> tuple[RecipeTrial, str, list[OutputAgreement]]:
            path = os.path.join(workdir, f"{name}.onnx")
            logger.info("quantizing %s: %s (reduce_range=%s, %d kept in fp32)", source, name, reduce_range, len(kept))
            _build(name, source, path, [n for n in all_weights if n not in kept], reduce_range=reduce_range,
                   external=external, calibration_feeds=calibration_feeds,
                   calibration_cache=os.path.join(workdir, "calibration.json"))
            agreement = _agreement(reference, _session(path), names, gate_feeds, spec) if validate else []
            result = RecipeTrial(recipe=name, kept_fp32=list(kept),
                                 top1_agreement=min((a.top1_agreement for a in agreement), default=float("nan")),
                                 cosine=min((a.cosine for a in agreement), default=float("nan")),
                                 passed=not validate or _passes(agreement, min_cosine, min_top1))
            return result, path, agreement

        def kept_nodes(base: str) -> list[str]:
            sensitivity = node_sensitivity(base, source, spec, gate_feeds, workdir, reduce_range=reduce_range,
                                           calibration_feeds=calibration_feeds,
                                           candidates=sensitivity_candidates(all_weights),
                                           calibration_cache=os.path.join(workdir, "calibration.json"))
            logger.info("single-node losses (top-1, cosine) under %s: %s", base, sensitivity)
            return choose_kept(sensitivity, min_cosine, min_top1)

        for base in ([recipe.removesuffix(KEEP_FP32)] if recipe else list(BASE_RECIPES)):
            if recipe is None or recipe == base or BASE_RECIPES[base][0] == "static":
                trials.append(trial(base, []))  # static: also writes the calibration cache the per-node runs reuse
            if recipe == base or (recipe is None and trials[-1][0].passed):
                continue
            kept = kept_nodes(base)
            if recipe is not None:
                trials.clear()  # the pinned recipe is the keep variant; a static base was built for its cache only
            if kept or recipe is not None:
                trials.append(trial(base + KEEP_FP32, kept))
        seconds["quantize"] = round(time.perf_counter() - clock, 3)

        passing = [t for t in trials if t[0].passed]
        if validate and len(passing) > 1:
            for t in passing:
                t[0].latency_ms = round(_latency_ms(t[1], gate_feeds), 3)
            fastest = min(t[0].latency_ms for t in passing)
            # Timings within SPEED_TIE of the fastest are noise on a shared CPU: among those the most accurate
            # wins (a recipe that only just passes on the gate's texts is the likeliest to miss on others).
            passing = [t for t in passing if t[0].latency_ms <= fastest * SPEED_TIE]
            passing.sort(key=lambda t: (t[0].top1_agreement, t[0].cosine), reverse=True)
        best, best_path, agreement = passing[0] if passing else max(
            trials, key=lambda t: (t[0].top1_agreement, t[0].cosine))

        model = onnx.load(best_path)
        quantized_nodes = _quantized_count(model)
        custom_nodes = len(rotary_op.rotary_nodes(model))
        rotary_op.attach_function(model)  # keep the function body beside the kept custom nodes
        model.ir_version = min(max(model.ir_version, artifact.MIN_IR_VERSION), artifact.MAX_IR_VERSION)
        model_files = artifact.save(model, build_dir, file_name=layout.model_file("int8"))
        del model

        report = QuantizationReport(
            out_dir=out_dir, model_path=os.path.join(out_dir, layout.model_file("int8")), weight_type="int8",
            per_channel=BASE_RECIPES[best.recipe.removesuffix(KEEP_FP32)][1], reduce_range=reduce_range,
            op_types=list(OP_TYPES), quantized_nodes=quantized_nodes, custom_nodes=custom_nodes,
            fp32_bytes=sum(os.path.getsize(f) for f in (source, layout.data_path(export_dir)) if f),
            int8_bytes=sum(os.path.getsize(f) for f in model_files), min_cosine=min_cosine, min_top1=min_top1,
            outputs=agreement, seconds=seconds, recipe=best.recipe, kept_fp32=best.kept_fp32,
            gate_inputs="calibration" if texts is not None else "generated",
            gate_texts=len(texts) if texts is not None else 0,
            calibration={"texts": len(texts) if texts is not None else 0, "method": "MinMax",
                         "used": BASE_RECIPES[best.recipe.removesuffix(KEEP_FP32)][0] == "static"},
            cpu=cpu_features(reduce_range, chosen_by), search=[t[0] for t in trials],
        )
        seconds["total"] = round(time.perf_counter() - clock, 3)
        logger.debug("%s", report.table())
        if raise_on_failure and not report.passed:
            raise QuantizationError(
                f"The int8 model disagrees with fp32 beyond the thresholds:\n{report.table()}\n"
                f"Nothing was written to {out_dir}{' (it is as it was)' if os.path.isdir(out_dir) else ''}; "
                "lower --min-cosine / --min-top1 to accept it"
                + (", or let the search choose (no --recipe)" if recipe is not None else "")
                + (", or judge it on your own texts (--calibration)" if texts is None else "") + "."
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


def _files_bytes(directory: str, names) -> int:
    return sum(os.path.getsize(os.path.join(directory, n)) for n in names if os.path.isfile(os.path.join(directory, n)))


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
    # Rows may differ in length between input sets (e.g. start_logits over positions): keep them as a list.
    rows: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for want, f in zip(reference, feeds):
        got = dict(zip(names, int8.run(names, f)))
        for n in names:
            rows[n][0].extend(_valid_rows(want[n], f, spec))
            rows[n][1].extend(_valid_rows(got[n], f, spec))
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
           "compare_to_fp32", "cpu_has_vnni", "cpu_flags", "cpu_features", "default_reduce_range",
           "read_calibration_texts", "tokenized_inputs", "node_sensitivity", "choose_kept",
           "DEFAULT_MIN_COSINE", "DEFAULT_MIN_TOP1"]
