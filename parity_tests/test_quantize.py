"""Dynamic int8 quantization of export directories (``onnxport quantize``, ``export --quantize int8``).

References: the fp32 export of the same checkpoint run through ONNX Runtime (itself validated against
the native model at export), and transformers' PyTorch class on the checkpoint for the runtime check.
Tiny token-classification models: many prediction rows per call, so top-1 agreement is a measured rate
(on tiny random models with 2-4 labels near-ties exist; token rows keep the rate well above 99%).
No timing here: speed is measured by ``python -m benchmarks.run``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("torch")

from conftest import hf_class, sample_inputs  # noqa: E402

from onnxport.exporters import export, load_spec  # noqa: E402
from onnxport.exporters.io_spec import make_inputs  # noqa: E402
from onnxport.exporters.quantize import (  # noqa: E402
    QuantizationError,
    compare_to_fp32,
    cpu_has_vnni,
    default_reduce_range,
    quantize,
    weight_matmuls,
)
from onnxport.artifact.layout import model_path  # noqa: E402

FAMILIES = ("xlm-roberta", "roberta-prelayernorm", "roformer")
HEAD, TASK = "ForTokenClassification", "token-classification"


@pytest.fixture(scope="module")
def exports(checkpoint_factory, tmp_path_factory):
    """fp32 export directory per family, and its checkpoint."""
    root = tmp_path_factory.mktemp("quant-exports")
    out = {}
    for model_type in FAMILIES:
        # transformers' weight scale (initializer_range 0.02, as trained checkpoints have), not the suite's 0.2:
        # weights 10x too large make activation outliers that int8 cannot hold, and their 2-label heads then
        # sit on the gate's edge (measured: top-1 98.9-99.7%; at 0.02: 99.6-100%, cosine >= 0.99993).
        checkpoint = checkpoint_factory(model_type, HEAD, initializer_range=0.02)
        directory = str(root / model_type)
        export(checkpoint, directory, framework="pt", task=TASK)
        out[model_type] = (checkpoint, directory)
    return out


@pytest.fixture(scope="module")
def quantized(exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-int8")
    return {mt: quantize(directory, str(root / mt)) for mt, (_, directory) in exports.items()}


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_int8_agrees_with_fp32(model_type, quantized, exports):
    report = quantized[model_type]
    assert report.passed
    assert report.quantized_nodes >= 12  # 2 layers x (q, k, v, out, intermediate, output) weight MatMuls
    main = report.main
    assert main.output == "logits" and main.rows > 1000
    assert main.cosine >= 0.999 and main.top1_agreement >= 0.99
    assert 0 < main.max_abs_diff < 0.5  # really quantized (not a copy of fp32), and close
    # The graph really holds int8 MatMuls (integer kernels, or QDQ pairs for static recipes) and no weight
    # MatMul in fp32 beyond those the recipe keeps.
    model = onnx.load(report.model_path)
    ops = [n.op_type for n in model.graph.node]
    if report.recipe.startswith("dynamic"):
        assert ops.count("MatMulInteger") + report.merged_gemms == report.quantized_nodes
    else:
        assert ops.count("DequantizeLinear") >= report.quantized_nodes and "QuantizeLinear" in ops
    assert sorted(weight_matmuls(model)) == sorted(report.kept_fp32)
    # Independent recomputation of the reported numbers on fresh inputs.
    spec = load_spec(exports[model_type][1])
    recomputed = compare_to_fp32(model_path(exports[model_type][1]), report.model_path, spec, sets=3)
    assert recomputed[0].cosine >= 0.999


def test_roformer_keeps_rotary_nodes(quantized, exports):
    fp32 = onnx.load(model_path(exports["roformer"][1]))
    int8 = onnx.load(quantized["roformer"].model_path)
    rotary = lambda m: [n for n in m.graph.node if n.domain == "onnxport" and n.op_type == "RotaryEmbedding"]  # noqa: E731
    assert len(rotary(int8)) == len(rotary(fp32)) == 4 == quantized["roformer"].custom_nodes  # 2 layers x (q, k)
    assert [f.name for f in int8.functions if f.domain == "onnxport"] == ["RotaryEmbedding", "Attention"]
    onnx.checker.check_model(int8, full_check=True)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_int8_directory_serves_through_runtime(model_type, quantized, exports):
    """The int8 directory loads with onnxport.runtime (RoFormer: rotary lowered at load) and stays close to
    transformers' PyTorch model on the checkpoint."""
    import torch

    from onnxport.runtime import OnnxModelForTokenClassification

    checkpoint, _ = exports[model_type]
    report = quantized[model_type]
    meta = json.load(open(os.path.join(report.out_dir, "onnxport.json")))
    assert meta["quantization"]["passed"] and meta["task"] == TASK
    model = OnnxModelForTokenClassification.from_pretrained(report.out_dir, provider="cpu")
    inputs = sample_inputs(model_type, batch=3, seq=12)
    feeds = {k: v for k, v in inputs.items() if k in model.spec.input_names}
    got = model(**feeds)["logits"]
    reference = hf_class(model_type, HEAD).from_pretrained(checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        want = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    mask = inputs["attention_mask"].astype(bool)
    assert _cosine(got[mask], want[mask]) >= 0.999
    assert np.mean(got[mask].argmax(-1) == want[mask].argmax(-1)) >= 0.95  # 30 tokens: at most one near-tie flip


def test_thresholds_fail_loudly(exports, tmp_path):
    _, directory = exports["xlm-roberta"]
    with pytest.raises(QuantizationError, match="beyond the thresholds"):
        quantize(directory, str(tmp_path / "a"), min_cosine=1.0 + 1e-9)
    with pytest.raises(QuantizationError, match="top-1"):
        quantize(directory, str(tmp_path / "b"), min_top1=1.01)
    report = quantize(directory, str(tmp_path / "c"), min_top1=1.01, raise_on_failure=False)
    assert not report.passed and report.top1_agreement <= 1.0
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize(str(tmp_path / "c"), str(tmp_path / "d"))
    with pytest.raises(QuantizationError, match="own directory"):
        quantize(directory, directory)


def test_per_channel_and_reduce_range(exports, tmp_path):
    _, directory = exports["roberta-prelayernorm"]
    report = quantize(directory, str(tmp_path / "pc"), per_channel=True, reduce_range=True)
    assert report.per_channel and report.reduce_range and report.cosine >= 0.999
    model = onnx.load(report.model_path)
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1]
    assert scales, "per-channel quantization writes one scale per output column"


def test_reduce_range_follows_vnni(tmp_path):
    with_vnni = tmp_path / "vnni"
    with_vnni.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_vnni\n")
    without = tmp_path / "plain"
    without.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert cpu_has_vnni(str(with_vnni)) is True and cpu_has_vnni(str(without)) is False
    assert cpu_has_vnni(str(tmp_path / "missing")) is None
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        assert default_reduce_range(str(with_vnni)) is False
        assert default_reduce_range(str(without)) is True


def test_cli_quantize_and_export_quantize(exports, tmp_path, capsys):
    from onnxport.cli import main

    checkpoint, directory = exports["roformer"]
    assert main(["quantize", directory, "--out", str(tmp_path / "q")]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["quantize", directory, "--out", str(tmp_path / "q2"), "--min-cosine", "1.0000001"]) == 1
    assert "beyond the thresholds" in capsys.readouterr().err
    assert main(["export", checkpoint, str(tmp_path / "e"), "--task", TASK, "--quantize", "int8"]) == 0
    meta = json.load(open(tmp_path / "e" / "onnxport.json"))
    assert meta["quantization"]["passed"] and meta["custom_ops"][0]["count"] == 4
    ops = {n.op_type for n in onnx.load(str(Path(model_path(tmp_path / "e")))).graph.node}
    assert ("MatMulInteger" in ops or "DequantizeLinear" in ops) and "RotaryEmbedding" in ops
    spec = load_spec(str(tmp_path / "e"))
    assert spec.task == TASK and make_inputs(spec, 1, 4)["input_ids"].shape == (1, 4)


def test_optimized_graph_quantizes_with_fusions_kept(exports, tmp_path):
    """An export after ONNX Runtime's transformers optimizer (contrib SkipLayerNormalization / BiasGelu, whose
    outputs shape inference cannot type) quantizes without hand-fed options and keeps its fused nodes."""
    import logging
    import shutil

    optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
    _, directory = exports["xlm-roberta"]
    fused = tmp_path / "fused"
    shutil.copytree(directory, fused)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimizer.optimize_model(model_path(directory), model_type="bert", num_heads=4,
                                         hidden_size=32)
    # The export's attention is one onnxport.Attention node per layer (onnxport's runtime lowers it to
    # MultiHeadAttention at load); the optimizer inlines its function body and fuses around it.
    assert optimized.get_fused_operator_statistics()["SkipLayerNormalization"] == 4
    assert [n.op_type for n in optimized.model.graph.node].count("Softmax") == 2
    optimized.save_model_to_file(str(Path(model_path(fused))))
    report = quantize(str(fused), str(tmp_path / "fused-int8"))
    assert report.passed and report.cosine >= 0.999 and report.quantized_nodes >= 6
    ops = [n.op_type for n in onnx.load(report.model_path).graph.node]
    assert ops.count("Softmax") == 2 and ops.count("SkipLayerNormalization") == 4
    # The fastest passing recipe is timed on a shared CPU: dynamic (integer MatMuls) or static (QDQ pairs).
    assert ("MatMulInteger" if report.recipe.startswith("dynamic") else "DequantizeLinear") in ops
    # A recipe whose quantizer fails on the fused graph (measured: onnxruntime's histogram calibrators, which
    # collect nothing here) is recorded as skipped with the reason; the search goes on.
    for t in report.search:
        if t.skipped:
            assert any(why in t.skipped for why in ("onnxruntime's quantizer failed", "neural-compressor",
                                                    "full-range")), t.skipped
