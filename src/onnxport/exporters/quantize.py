"""Dynamic int8 quantization of an export directory, validated against its fp32 model.

``quantize(export_dir, out_dir)`` writes a complete export directory (int8
``model.onnx``, ``config.json``, tokenizer files, ``onnxport.json`` with a
``quantization`` block) that ``onnxport.runtime`` loads like any other.

Options that make ``onnxruntime.quantization.quantize_dynamic`` work on every
onnxport graph without hand-fed settings:

* only ``MatMul`` is quantized, and only where B is a constant weight
  (``MatMulConstBOnly``): the Q/K/V/O, FFN and head projections. Attention's
  activation x activation products stay fp32 (quantizing them costs accuracy for
  little speed), and every other node — RoFormer's ``onnxport.RotaryEmbedding``
  function nodes, LayerNorm, Softmax, contrib ops of optimized graphs (Attention,
  SkipLayerNormalization) — is left as it is, so custom and fused nodes survive.
  ``DefaultTensorType=FLOAT`` lets it through graphs whose contrib-op outputs
  shape inference cannot type (without it quantize_dynamic fails on optimized graphs).
* weights int8 symmetric (``QInt8``), activations uint8 computed per call.
* ``reduce_range`` (7-bit weights) only on x86 CPUs without VNNI, where the
  u8 x s8 multiply-add can saturate; VNNI CPUs (and ARM) keep the full range.
* ``per_channel`` is optional: one scale per output column, better accuracy on
  weights with uneven column norms.

Validation runs fp32 and int8 through ONNX Runtime on inputs made from the IO
spec (``io_spec.make_inputs``: several shapes and seeds, padded rows) and
reports, for the head's main output, the cosine similarity and the top-1
agreement (arg-max over the last axis; padded token positions excluded).
Below ``min_cosine`` or ``min_top1`` the call raises :class:`QuantizationError`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
from ..errors import QuantizationError  # noqa: F401  (re-exported: the old import path keeps working)

logger = logging.getLogger("onnxport")

DEFAULT_MIN_COSINE = 0.999
DEFAULT_MIN_TOP1 = 0.99
OP_TYPES = ("MatMul",)
# Validation inputs: (batch, sequence) pairs cycled over seeds; sequences are capped by the position table.
VALIDATION_SHAPES = ((8, 16), (8, 48), (8, 128), (4, 32))
VALIDATION_SETS = 12


@dataclass
class OutputAgreement:
    output: str
    cosine: float  # over every (unpadded) element of the output
    min_row_cosine: float  # worst single prediction row
    top1_agreement: float  # fraction of rows whose arg-max over the last axis matches fp32
    rows: int
    max_abs_diff: float


@dataclass
class QuantizationReport:
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
        return bool(self.cosine >= self.min_cosine and self.top1_agreement >= self.min_top1)

    def table(self) -> str:
        lines = [
            f"int8 dynamic quantization: {self.quantized_nodes} MatMul weights quantized "
            f"({self.weight_type}, per_channel={self.per_channel}, reduce_range={self.reduce_range}), "
            f"{self.custom_nodes} custom nodes kept; {self.fp32_bytes / 2**20:.1f} MiB -> {self.int8_bytes / 2**20:.1f} MiB",
            f"{'output':<20} {'rows':>7} {'cosine':>10} {'min row cos':>12} {'top-1 agree':>12} {'max abs diff':>13}",
        ]
        for o in self.outputs:
            lines.append(f"{o.output:<20} {o.rows:>7} {o.cosine:>10.6f} {o.min_row_cosine:>12.6f} "
                         f"{o.top1_agreement:>11.2%} {o.max_abs_diff:>13.3e}")
        if self.validated:
            verdict = "passed" if self.passed else "FAILED"
            lines.append(f"thresholds: cosine >= {self.min_cosine}, top-1 >= {self.min_top1:.2%}: {verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(cosine=self.cosine, top1_agreement=self.top1_agreement, passed=self.passed, validated=self.validated)
        return d


def cpu_has_vnni(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[bool]:
    """True/False from the CPU flags on Linux x86; None where that cannot be read."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return None


def default_reduce_range(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """7-bit weights only on x86 without VNNI (u8 x s8 pairs can overflow int16 in pmaddubsw there)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    vnni = cpu_has_vnni(cpuinfo_path)
    return vnni is False


def quantize(
    export_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    per_channel: bool = False,
    reduce_range: Optional[bool] = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    min_top1: float = DEFAULT_MIN_TOP1,
    validate: bool = True,
    force: bool = False,
    raise_on_failure: bool = True,
) -> QuantizationReport:
    """Quantize ``export_dir``'s model to int8 into ``out_dir`` (default ``<export_dir>-int8``); see module doc.

    ``out_dir`` is written all or nothing (built and gated beside it, then swapped in): a model below the
    thresholds raises ``QuantizationError`` and leaves ``out_dir`` as it was, unless ``raise_on_failure=False``
    asks for the report and the directory anyway (its ``onnxport.json`` then says ``"passed": false``).
    ``force`` replaces the export files of a non-empty ``out_dir`` and keeps the user's other files; an
    ``out_dir`` that is the export, inside it or around it is refused.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from . import SPEC_FILE, artifact, export_file_names, load_spec, rotary_op

    export_dir = os.fspath(export_dir).rstrip(os.sep) or os.sep
    out_dir = os.fspath(out_dir) if out_dir is not None else export_dir + "-int8"
    source = os.path.join(export_dir, artifact.MODEL_FILE)
    if not os.path.isfile(source) or not os.path.isfile(os.path.join(export_dir, SPEC_FILE)):
        raise QuantizationError(f"{export_dir!r} is not an onnxport export directory (model.onnx + {SPEC_FILE}); "
                                "create one with `onnxport export`.")
    if artifact.overlapping(export_dir, out_dir):
        raise QuantizationError(f"The int8 model needs its own directory: {out_dir!r} is the export {export_dir!r}, "
                                "inside it or around it; pass an --out outside the export.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise QuantizationError(f"Output path {out_dir!r} exists and is not a directory; choose a directory path.")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise QuantizationError(f"Output directory {out_dir!r} exists and is not empty; choose another or pass --force.")
    with open(os.path.join(export_dir, SPEC_FILE), encoding="utf-8") as fh:
        metadata = json.load(fh)
    if metadata.get("quantization"):
        raise QuantizationError(f"{export_dir} is already quantized; quantize the fp32 export instead.")
    if metadata.get("dtype", "fp32") != "fp32":
        raise QuantizationError(f"{export_dir} is a {metadata['dtype']} export; int8 quantization starts from the fp32 "
                                "export (export again without --fp16).")
    spec = load_spec(export_dir)
    reduce_range = default_reduce_range() if reduce_range is None else bool(reduce_range)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    external = os.path.isfile(os.path.join(export_dir, artifact.EXTERNAL_DATA_FILE))
    # Built and gated beside out_dir, then swapped in: a model the gate refuses is never left where
    # `onnxport run` would serve it, and a previous out_dir stays as it was. User files in out_dir survive --force.
    owned = export_file_names(out_dir)
    with artifact.staged_directory(out_dir, owned.__contains__, QuantizationError) as build_dir, \
            tempfile.TemporaryDirectory(prefix="onnxport-quantize-") as workdir:
        raw = os.path.join(workdir, "int8.onnx")
        logger.info("quantizing %s (per_channel=%s, reduce_range=%s)", source, per_channel, reduce_range)
        quant_logger = logging.getLogger()  # quantize_dynamic warns on the root logger about pre-processing
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                source,
                raw,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
                # Shape inference cannot type outputs of contrib ops (Attention, SkipLayerNormalization) in
                # optimized graphs; every activation of our fp32 exports is float, so say so.
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        except Exception as err:  # ORT raises plain exceptions from deep inside its graph walk
            raise QuantizationError(f"onnxruntime's quantize_dynamic failed on {source}: {err}") from err
        finally:
            quant_logger.setLevel(level)
        model = onnx.load(raw)
        seconds["quantize"] = round(time.perf_counter() - clock, 3)
        quantized_nodes = sum(1 for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"))
        custom_nodes = len(rotary_op.rotary_nodes(model))
        rotary_op.attach_function(model)  # keep the function body beside the kept custom nodes
        model.ir_version = min(max(model.ir_version, artifact.MIN_IR_VERSION), artifact.MAX_IR_VERSION)
        model_files = artifact.save(model, build_dir)
        del model
        built_model = os.path.join(build_dir, artifact.MODEL_FILE)

        report = QuantizationReport(
            out_dir=out_dir, model_path=os.path.join(out_dir, artifact.MODEL_FILE), weight_type="int8",
            per_channel=per_channel, reduce_range=reduce_range, op_types=list(OP_TYPES),
            quantized_nodes=quantized_nodes, custom_nodes=custom_nodes,
            fp32_bytes=_files_bytes(export_dir, (artifact.MODEL_FILE, artifact.EXTERNAL_DATA_FILE)),
            int8_bytes=sum(os.path.getsize(f) for f in model_files), min_cosine=min_cosine, min_top1=min_top1,
            seconds=seconds,
        )
        if validate:
            clock = time.perf_counter()
            report.outputs = compare_to_fp32(source, built_model, spec)
            seconds["validate"] = round(time.perf_counter() - clock, 3)
        logger.debug("%s", report.table())
        if raise_on_failure and not report.passed:
            raise QuantizationError(
                f"The int8 model disagrees with fp32 beyond the thresholds:\n{report.table()}\n"
                f"Nothing was written to {out_dir}{' (it is as it was)' if os.path.isdir(out_dir) else ''}; "
                "lower --min-cosine / --min-top1 to accept it, or try --per-channel."
            )

        # Everything but the model files comes along, so the directory serves like the fp32 one.
        for name in sorted(os.listdir(export_dir)):
            src = os.path.join(export_dir, name)
            if name in (artifact.MODEL_FILE, artifact.EXTERNAL_DATA_FILE, SPEC_FILE) or not os.path.isfile(src):
                continue
            shutil.copyfile(src, os.path.join(build_dir, name))
        metadata["quantization"] = report.to_dict()
        metadata["files"] = sorted(set(os.listdir(build_dir)) | {SPEC_FILE})
        with open(os.path.join(build_dir, SPEC_FILE), "w", encoding="utf-8") as fh:
            json.dump(metadata, fh, indent=2, sort_keys=True, default=float)
            fh.write("\n")
    return report


def _files_bytes(directory: str, names) -> int:
    return sum(os.path.getsize(os.path.join(directory, n)) for n in names if os.path.isfile(os.path.join(directory, n)))


def _session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def validation_inputs(spec, sets: int = VALIDATION_SETS):
    """Input dicts from the IO spec: several (batch, sequence) shapes and seeds, padded rows included."""
    from .io_spec import make_inputs

    limit = int(spec.extra.get("max_sequence_length", 512))
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


def compare_to_fp32(fp32_path: str, int8_path: str, spec, sets: int = VALIDATION_SETS) -> list[OutputAgreement]:
    """Cosine similarity and top-1 agreement of each non-cache output, int8 vs fp32."""
    fp32, int8 = _session(fp32_path), _session(int8_path)
    names = [n for n in spec.output_names if not n.startswith("present.")]
    # Rows may differ in length between input sets (e.g. start_logits over positions): keep them as a list.
    rows: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for feeds in validation_inputs(spec, sets):
        a = dict(zip(names, fp32.run(names, feeds)))
        b = dict(zip(names, int8.run(names, feeds)))
        for n in names:
            rows[n][0].extend(_valid_rows(a[n], feeds, spec))
            rows[n][1].extend(_valid_rows(b[n], feeds, spec))
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


__all__ = ["quantize", "QuantizationReport", "QuantizationError", "OutputAgreement", "compare_to_fp32",
           "cpu_has_vnni", "default_reduce_range", "DEFAULT_MIN_COSINE", "DEFAULT_MIN_TOP1"]
