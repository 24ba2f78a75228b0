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
import sys
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

    kwargs = dict(BASE, **FAMILY_GEOMETRY[model_type], **overrides)
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
    sys.path.insert(0, str(ROOT / "parity_tests"))
    import tokenizer_fixtures as tf_

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


# ----------------------------------------------------------------------------- ONNX Runtime sessions
def ort_session(path: str | bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def gemm_limit(threads: int, rounds: int = 5, seconds_per_shape: float = 1.5) -> dict:
    """ONNX Runtime fp32 MatMul throughput on large shapes (GFLOP/s): the ceiling for these models."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shapes = [(1024, 768, 3072), (1024, 3072, 768), (2048, 768, 768), (4096, 768, 3072)]
    sessions = {}
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["X", "W"], ["Y"])], "gemm",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        x = rng.standard_normal((m, k)).astype(np.float32)
        sessions[(m, k, n)] = (ort_session(model.SerializeToString(), threads), x)
    rates: dict[str, list[float]] = {f"{m}x{k}x{n}": [] for m, k, n in shapes}
    for (m, k, n), (session, x) in sessions.items():
        session.run(None, {"X": x})
    for r in range(rounds):
        order = list(sessions.items()) if r % 2 == 0 else list(sessions.items())[::-1]
        for (m, k, n), (session, x) in order:
            times = []
            deadline = time.perf_counter() + seconds_per_shape / rounds
            while time.perf_counter() < deadline or len(times) < 2:
                t = time.perf_counter()
                session.run(None, {"X": x})
                times.append(time.perf_counter() - t)
            rates[f"{m}x{k}x{n}"].append(2 * m * k * n / statistics.median(times) / 1e9)
    per_shape = {key: statistics.median(v) for key, v in rates.items()}
    best = max(per_shape, key=per_shape.get)
    return {"gflops": per_shape[best], "best_shape": best, "per_shape": per_shape,
            "spread": (max(rates[best]) - min(rates[best])) / per_shape[best]}


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


def machine_info(threads: int) -> dict:
    import platform

    import onnxruntime
    import torch

    flags = set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads,
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "avx512": "avx512f" in flags,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}
