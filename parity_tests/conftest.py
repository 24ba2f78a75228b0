"""Shared fixtures: tiny random HF-format checkpoints built by transformers (the independent reference)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # exact fp32 kernels for parity
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")

import hashlib
import json

import numpy as np
import pytest

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    type_vocab_size=2,
    initializer_range=0.2,  # large weights so a wrong op shows up well above float noise
)

MODEL_TYPES = ("xlm-roberta", "roberta-prelayernorm", "roformer")
HEADS = (
    "Model",
    "ForCausalLM",
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForMultipleChoice",
    "ForTokenClassification",
    "ForQuestionAnswering",
)
HF_PREFIX = {"xlm-roberta": "XLMRoberta", "roberta": "Roberta", "roberta-prelayernorm": "RobertaPreLayerNorm",
             "roformer": "RoFormer"}


def hf_class(model_type: str, head: str, framework: str = "pt"):
    """transformers' class for a family and head (PyTorch, TF or Flax)."""
    import transformers

    prefix = {"pt": "", "tf": "TF", "flax": "Flax"}[framework]
    return getattr(transformers, prefix + HF_PREFIX[model_type] + head)


def hf_config(model_type: str, head: str = "Model", **overrides):
    import transformers

    kwargs = dict(TINY, **overrides)
    if head == "ForCausalLM":
        kwargs.setdefault("is_decoder", True)
    return transformers.AutoConfig.for_model(model_type, **kwargs)


def build_hf_checkpoint(path, model_type: str, head: str = "Model", seed: int = 0, **overrides) -> str:
    """Save a randomly initialised transformers PyTorch model as an HF checkpoint directory."""
    import torch

    torch.manual_seed(seed)
    config = hf_config(model_type, head, **overrides)
    config._attn_implementation = "eager"
    model = hf_class(model_type, head)(config).eval()
    # Biases and LayerNorm params start at 0/1 in transformers; randomise them so they are tested too.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """``checkpoint_factory(model_type, head, **config_overrides)`` -> path, cached per argument set."""
    cache: dict[str, str] = {}
    root = tmp_path_factory.mktemp("checkpoints")

    def make(model_type: str, head: str = "Model", seed: int = 0, **overrides) -> str:
        key = json.dumps([model_type, head, seed, overrides], sort_keys=True, default=str)
        if key not in cache:
            digest = hashlib.sha1(key.encode()).hexdigest()[:12]
            cache[key] = build_hf_checkpoint(root / f"{model_type}-{head}-{digest}", model_type, head, seed, **overrides)
        return cache[key]

    return make


def sample_inputs(model_type: str, batch: int = 3, seq: int = 9, seed: int = 1, vocab_size: int = TINY["vocab_size"]):
    """input_ids / attention_mask / token_type_ids with right padding of varying lengths (numpy int64)."""
    rng = np.random.default_rng(seed)
    pad = 0 if model_type == "roformer" else 1
    ids = rng.integers(3, vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):  # first row full length, others padded
        length = max(2, seq - 2 * b)
        ids[b, length:] = pad
        mask[b, length:] = 0
    token_type_ids = np.zeros((batch, seq), dtype=np.int64)
    token_type_ids[:, seq // 2 :] = 1
    token_type_ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type_ids}


def max_abs_diff(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def feed_forward_rows(model_path: str, feeds: dict, width: int = TINY["intermediate_size"]) -> list[int]:
    """Rows per sequence that each feed-forward product of an exported graph computes, in graph order.

    Every MatMul / Gemm / Einsum output whose last axis is the intermediate width (37 only occurs
    there in the tiny models) is exposed as a graph output and run; rows = elements / (batch x width),
    whatever layout (3-D or flattened 2-D) the front end chose.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(model_path)
    products = [n.output[0] for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Einsum")]
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in products
                              if name not in existing)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = feeds["input_ids"].shape[0]
    values = session.run(products, feeds)
    return [v.size // (batch * width) for v in values if v.ndim and v.shape[-1] == width]


def assert_last_layer_on_first_token_only(export_of, batch: int = 3, sequence: int = 13, seed: int = 7) -> dict:
    """Text-classification exports run the last layer for token 0 only; token-classification ones for all.

    ``export_of(task) -> (export report, model path)``. Returns the text-classification inputs used.
    """
    from onnxport.exporters import load_spec
    from onnxport.exporters.io_spec import make_inputs

    layers = TINY["num_hidden_layers"]
    used = {}
    for task, last_rows in (("text-classification", 1), ("token-classification", sequence)):
        report, path = export_of(task)
        assert report.validation.passed  # validated against the full native model, not the pruned one
        used[task] = feeds = make_inputs(load_spec(report.out_dir), batch, sequence, seed=seed)
        assert feed_forward_rows(path, feeds) == [sequence] * (layers - 1) + [last_rows], task
    return used["text-classification"]
