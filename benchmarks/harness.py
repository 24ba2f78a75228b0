"""Shared pieces of the benchmarks: environment, base-size models, interleaved timing, GEMM limit, FLOPs.

Timing rules (the machine is shared and drifts +-10-20% between runs, so only ratios measured in
one run count): every runner of a case is loaded before timing starts, warmed up, then timed in
rounds whose order alternates (forward, reversed, ...), a short pause between runners so spinning
thread pools of one runner do not steal cores from the next. Reported per runner: median and p90
over all calls, and the spread of the round medians ((max - min) / median) as the noise figure.
"""

from __future__ import annotations

import os

# Before transformers is imported anywhere: PyTorch only (no TensorFlow/Flax import, no TF thread pools).
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("USE_JAX", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
REQUIREMENTS = ROOT / "benchmarks" / "requirements.txt"
INSTALL_HINT = f"pip install -c {ROOT / 'constraints.txt'} -r {REQUIREMENTS}   (or: make bench)"

# Base geometry of the three families (random weights; no hub).
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            initializer_range=0.02, num_labels=2)
FAMILY_GEOMETRY = {
    "xlm-roberta": dict(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2),
    "roberta-prelayernorm": dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                 bos_token_id=0, eos_token_id=2),
    "roformer": dict(vocab_size=50000, max_position_embeddings=1536, type_vocab_size=2, pad_token_id=0),
}
HEAD, TASK = "ForSequenceClassification", "text-classification"


def missing_requirements() -> dict[str, str]:
    """Benchmark-only packages that are not importable: {module: what is lost}."""
    wanted = {"optimum.onnxruntime": "the Optimum ORTModel anchor", "matplotlib": "the PNG chart"}
    missing = {}
    for module, what in wanted.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing[module] = what
    return missing


def log(*parts) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------------- models and exports
def base_config(model_type: str, **overrides):
    from onnxport.configs import AutoConfig

    kwargs = {**BASE, **FAMILY_GEOMETRY[model_type], **overrides}  # overrides may replace a family's value
    config_class = AutoConfig.config_class(model_type)
    return config_class(**kwargs)


def build_checkpoint(model_type: str, directory: Path, with_tokenizer: bool = True, seed: int = 0,
                     head: str = HEAD, **overrides) -> Path:
    """A random-weight base-size checkpoint (onnxport's PyTorch class, HF format) + small tokenizer files."""
    import torch

    from onnxport.reference_models.pt import model_class

    if (directory / "config.json").is_file() and any(directory.glob("*.safetensors")):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = base_config(model_type, **overrides)
    model = model_class(model_type, head)(config).eval()
    model.save_pretrained(str(directory))
    if with_tokenizer:
        write_tokenizer(model_type, directory)
    return directory


def write_tokenizer(model_type: str, directory: Path) -> None:
    """Tokenizer files trained on the test corpus (as the parity tests do); ids fit every base vocabulary."""
    from parity_tests import tokenizer_fixtures as tf_

    writer = {"xlm-roberta": tf_.write_xlm_roberta_files, "roberta-prelayernorm": tf_.write_roberta_files,
              "roformer": tf_.write_roformer_files}[model_type]
    scratch = directory / "_tokenizer"
    writer(scratch)
    for item in scratch.iterdir():
        if item.name != "config.json":
            shutil.move(str(item), directory / item.name)
    shutil.rmtree(scratch)


def onnxport_export(checkpoint: Path, out: Path, task: str = TASK) -> Path:
    from onnxport.exporters import export

    if (out / "onnxport.json").is_file():
        return out
    report = export(str(checkpoint), str(out), framework="pt", task=task, force=True)
    log(f"    onnxport export: validation max |diff| {report.max_abs_diff:.2e}, {report.seconds}")
    return out


def hf_model(checkpoint: Path, attn_implementation: str | None = None):
    """transformers' PyTorch class on the checkpoint: what a user runs today."""
    import transformers

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint), **kwargs).eval()


def model_flops(config, batch: int, sequence: int, last_layer_rows: int | None = None) -> float:
    """Multiply-adds x 2 of the forward pass from the geometry (matrix products only; the rest is < 1%).

    ``last_layer_rows=1``: the FLOPs of onnxport's text-classification graph, whose last layer computes
    query, attention output and feed-forward for the first token only (keys and values for all).
    """
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * sequence
    emb = getattr(config, "embedding_size", h) or h
    flops = 0.0
    if emb != h:
        flops += 2 * tokens * emb * h  # embeddings_project
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inter)  # q, k, v, o projections + FFN
    per_layer += 2 * 2 * batch * sequence * sequence * h  # scores and context
    flops += layers * per_layer
    if last_layer_rows:
        rows = batch * last_layer_rows
        last = 2 * tokens * 2 * h * h + 2 * rows * (2 * h * h + 2 * h * inter) + 2 * 2 * rows * sequence * h
        flops += last - per_layer
    flops += 2 * batch * (h * h + h * config.num_labels)  # classification head on one token
    return flops


OUTPUT_OF_TASK = {TASK: "logits", "feature-extraction": "last_hidden_state"}


def plain_torch_export(model, model_type: str, path: Path, output: str = "logits") -> Path:
    """What a user writes: torch.onnx.export of transformers' model, dynamic batch and sequence, one output."""
    import torch

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model_type == "roformer" else [])

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return getattr(self.inner(**dict(zip(names, args))), output)

    example = tuple(torch.ones(1, 16, dtype=torch.long) for _ in names)
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes[output] = {0: "batch_size"} if output == "logits" else {0: "batch_size", 1: "sequence_length"}
    with torch.no_grad():
        torch.onnx.export(Wrapper(model).eval(), example, str(path), input_names=names, output_names=[output],
                          dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False)
    return path


OPTIMUM_CLASSES = {"text-classification": "ORTModelForSequenceClassification",
                   "token-classification": "ORTModelForTokenClassification"}


def optimum_export(checkpoint: Path, model_type: str, directory: Path, task: str = TASK) -> str | None:
    """Export with Optimum's ORTModel (export=True) once, saved to ``directory``; returns a skip reason or None."""
    if model_type == "roberta-prelayernorm":
        return "Optimum has no ONNX export config for roberta-prelayernorm (it refuses the model)"
    if "optimum.onnxruntime" in missing_requirements():
        return f"optimum-onnx is not installed: {INSTALL_HINT}"
    if (directory / "model.onnx").is_file():
        return None
    try:
        import optimum.onnxruntime

        ort_class = getattr(optimum.onnxruntime, OPTIMUM_CLASSES[task])
        model = ort_class.from_pretrained(str(checkpoint), export=True)
        model.save_pretrained(str(directory))
        del model
        return None
    except Exception as err:  # a failed anchor must not stop the others
        return f"Optimum failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"


def make_feeds(model_type: str, config, batch: int, sequence: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 1000 + sequence)
    ids = rng.integers(5, config.vocab_size, size=(batch, sequence), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if model_type == "roformer":
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def attention_flops(config, batch: int, sequence: int) -> float:
    """The activation x activation products (scores and context) of all layers: never int8 in a dynamic recipe."""
    return config.num_hidden_layers * 2 * 2 * batch * sequence * sequence * config.hidden_size


# ----------------------------------------------------------------------------- ONNX Runtime sessions
def ort_session(path: str | bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


LARGE_SHAPES = ((1024, 768, 3072), (1024, 3072, 768), (2048, 768, 768), (4096, 768, 3072))
# int8: large squares and the base model's own GEMMs at 1x128 and 8x128 tokens (Q/K/V/O, FFN up, FFN down).
INT8_LARGE_SQUARES = ((1024, 1024, 1024), (2048, 2048, 2048))
INT8_SHAPES = INT8_LARGE_SQUARES + ((128, 768, 768), (128, 768, 3072), (128, 3072, 768),
               (1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768))


def _matmul_model(kind: str, m: int, k: int, n: int, rng):
    """One GEMM with a constant weight: fp32 ``MatMul``, or u8 x s8 ``MatMulInteger`` (int32 out) or
    ``QLinearMatMul`` (u8 out), the two int8 GEMM kernels ONNX Runtime's quantized models run."""
    from onnx import TensorProto, helper, numpy_helper

    if kind == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
        node, inputs, x_type, out_type, x = helper.make_node("MatMul", ["X", "W"], ["Y"]), [weight], \
            TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((m, k)).astype(np.float32)
    else:
        # 7-bit weights (reduce_range's): without VNNI, u8 x s8 pairs are summed in int16 (vpmaddubsw) and
        # full-range weights saturate there; 255 x 64 x 2 cannot. The speed does not depend on the values.
        weight = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "W")
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        scalars = [numpy_helper.from_array(np.array(v, dtype=d), name) for name, v, d in
                   (("xs", 0.02, np.float32), ("xz", 128, np.uint8), ("ws", 0.01, np.float32), ("wz", 0, np.int8),
                    ("ys", 0.5, np.float32), ("yz", 128, np.uint8))]
        if kind == "MatMulInteger":
            node, out_type = helper.make_node("MatMulInteger", ["X", "W", "xz", "wz"], ["Y"]), TensorProto.INT32
        else:
            node, out_type = helper.make_node("QLinearMatMul", ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz"], ["Y"]), \
                TensorProto.UINT8
        inputs, x_type = [weight, *scalars], TensorProto.UINT8
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("X", x_type, [m, k])],
                              [helper.make_tensor_value_info("Y", out_type, [m, n])], inputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), x


def _gemm_rates(cases: list[tuple[str, tuple[int, int, int]]], threads: int, rounds: int,
                seconds_per_case: float) -> dict[str, list[float]]:
    """GFLOP/s of each (kernel, shape) case, one figure per round, cases interleaved in alternating order."""
    rng = np.random.default_rng(0)
    sessions = {}
    for kind, (m, k, n) in cases:
        model, x = _matmul_model(kind, m, k, n, rng)
        sessions[f"{kind} {m}x{k}x{n}"] = (ort_session(model, threads), x, 2 * m * k * n)
    rates: dict[str, list[float]] = {key: [] for key in sessions}
    for session, x, _ in sessions.values():
        session.run(None, {"X": x})
    for r in range(rounds):
        order = list(sessions.items()) if r % 2 == 0 else list(sessions.items())[::-1]
        for key, (session, x, flops) in order:
            times = []
            deadline = time.perf_counter() + seconds_per_case / rounds
            while time.perf_counter() < deadline or len(times) < 2:
                t = time.perf_counter()
                session.run(None, {"X": x})
                times.append(time.perf_counter() - t)
            rates[key].append(flops / statistics.median(times) / 1e9)
    return rates


def _best(rates: dict[str, list[float]]) -> dict:
    per_case = {key: statistics.median(v) for key, v in rates.items()}
    best = max(per_case, key=per_case.get)
    return {"gflops": per_case[best], "best_shape": best, "per_shape": per_case,
            "spread": (max(rates[best]) - min(rates[best])) / per_case[best]}


def gemm_limit(threads: int, rounds: int = 5, seconds_per_shape: float = 1.5) -> dict:
    """ONNX Runtime fp32 MatMul throughput on large shapes (GFLOP/s): the ceiling for these models."""
    rates = _gemm_rates([("fp32", shape) for shape in LARGE_SHAPES], threads, rounds, seconds_per_shape)
    return _best({key.split(" ", 1)[1]: v for key, v in rates.items()})


def int8_gemm_limit(threads: int, rounds: int = 5, seconds_per_shape: float = 1.0) -> dict:
    """ONNX Runtime's u8 x s8 GEMM throughput (GOP/s, an int multiply-add counted as 2 like fp32's FLOPs):
    ``MatMulInteger`` and ``QLinearMatMul`` on large squares and on the base model's GEMM shapes. The limit
    is the best large square; ``per_shape`` keeps every figure (``int8_floor_ms`` uses them per shape)."""
    cases = [(kind, shape) for shape in INT8_SHAPES for kind in ("MatMulInteger", "QLinearMatMul")]
    rates = _gemm_rates(cases, threads, rounds, seconds_per_shape)
    large = {f"{kind} {m}x{k}x{n}" for kind, (m, k, n) in cases if (m, k, n) in INT8_LARGE_SQUARES}
    limit = _best({key: v for key, v in rates.items() if key in large})
    limit["per_shape"] = {key: statistics.median(v) for key, v in rates.items()}
    return limit


def weight_gemms(config, batch: int, sequence: int) -> list[tuple[tuple[int, int, int], int]]:
    """The GEMMs with a weight operand (the ones a dynamic int8 recipe quantizes): ((M, K, N), count)."""
    h, inter, layers, tokens = config.hidden_size, config.intermediate_size, config.num_hidden_layers, batch * sequence
    gemms = [((tokens, h, h), 4 * layers), ((tokens, h, inter), layers), ((tokens, inter, h), layers)]
    emb = getattr(config, "embedding_size", h) or h
    if emb != h:
        gemms.append(((tokens, emb, h), 1))
    return gemms + [((batch, h, h), 1), ((batch, h, config.num_labels), 1)]  # classification head, first token


def int8_floor_ms(config, batch: int, sequence: int, int8_limit: dict, fp32_gflops: float) -> float:
    """The int8 model's floor: each weight GEMM's ops over the int8 rate measured at its shape (the best kernel;
    the large-shape limit where that shape was not measured), plus attention's fp32 products over the fp32 limit."""
    by_shape: dict[str, float] = {}
    for key, rate in int8_limit["per_shape"].items():
        shape = key.split(" ")[-1]
        by_shape[shape] = max(rate, by_shape.get(shape, 0.0))
    seconds = attention_flops(config, batch, sequence) / (fp32_gflops * 1e9)
    for (m, k, n), count in weight_gemms(config, batch, sequence):
        seconds += count * 2 * m * k * n / (by_shape.get(f"{m}x{k}x{n}", int8_limit["gflops"]) * 1e9)
    return 1e3 * seconds


# ----------------------------------------------------------------------------- interleaved timing
@dataclass
class Runner:
    name: str
    call: Callable[[], object]
    anchor: bool  # counts toward "best anchor"
    note: str = ""


@dataclass
class Timing:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds, every timed call
    round_medians: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.samples)

    @property
    def p90_ms(self) -> float:
        return 1e3 * float(np.percentile(self.samples, 90))

    @property
    def best_round_ms(self) -> float:
        """The quietest round's median: the least disturbed estimate when other jobs share the cores."""
        return 1e3 * min(self.round_medians)

    @property
    def spread(self) -> float:
        m = statistics.median(self.samples)
        return (max(self.round_medians) - min(self.round_medians)) / m if m else 0.0


def interleaved(runners: list[Runner], rounds: int, calls_per_round: int, warmup: int = 2,
                pause: float = 0.05) -> dict[str, Timing]:
    timings = {r.name: Timing(r.name) for r in runners}
    for runner in runners:
        for _ in range(warmup):
            runner.call()
    for round_index in range(rounds):
        order = runners if round_index % 2 == 0 else runners[::-1]
        for runner in order:
            time.sleep(pause)
            times = []
            for _ in range(calls_per_round):
                start = time.perf_counter()
                runner.call()
                times.append(time.perf_counter() - start)
            timings[runner.name].samples.extend(times)
            timings[runner.name].round_medians.append(statistics.median(times))
    return timings


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")


CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
                "amx_tile", "amx_int8", "amx_bf16")


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU model and the SIMD flags that decide int8 / bf16 speed, read at run time ({} fields if unreadable).
    The flags and the VNNI rule are the quantizer's (what it tunes reduce_range by)."""
    from onnxport.exporters.quantize import VNNI_FLAGS, cpu_flags

    flags = cpu_flags(cpuinfo) or set()
    model = ""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            model = next((line.partition(":")[2].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    present = [f for f in CPU_FEATURES if f in flags]
    return {"cpu": model, "cpu_flags": present, "vnni": bool(set(VNNI_FLAGS) & flags), "avx512": "avx512f" in flags}


def machine_info(threads: int) -> dict:
    import platform

    import onnxruntime
    import torch

    return {**cpu_features(), "cores": os.cpu_count(), "threads": threads,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def run_child_process(module: str, result_prefix: str, work, *args: str) -> dict:
    """``python -m benchmarks.<module> --work WORK --child ARGS`` in a fresh process (its own peak RSS, its own
    session); the JSON it printed after ``result_prefix``, or ``{"error": ...}`` with its stderr's tail logged."""
    import json
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", f"benchmarks.{module}", "--work", str(work), "--child", *args]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(result_prefix)]
    if proc.returncode or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        log(f"    failed (exit {proc.returncode}) after {time.perf_counter() - started:.0f}s:\n{tail}")
        return {"error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else 'no output'}"}
    return json.loads(lines[-1][len(result_prefix):])
