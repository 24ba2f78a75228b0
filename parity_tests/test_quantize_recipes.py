"""int8 recipes, calibration texts and the gate on real text (issue 17).

References: the fp32 export of the same checkpoint run through ONNX Runtime (validated against the native
model at export). Two models: a tiny RoBERTa fill-mask head (random weights at transformers' 0.02 scale) that
carries the trained model's byte-level BPE files, so texts tokenize with the export's own tokenizer; and the
small RoBERTa masked-LM trained on real text (``trained_roberta.py``), whose int8 model must keep the default
gate on held-out text after calibrating on training-side text. No timing assertions.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("torch")

import trained_roberta  # noqa: E402

from onnxport.errors import InputError, QuantizationError  # noqa: E402
from onnxport.exporters import export, load_spec  # noqa: E402
from onnxport.exporters.quantize import (  # noqa: E402
    BASE_RECIPES,
    KEEP_FP32,
    RECIPES,
    smoothing_unavailable,
    SPEED_TIE,
    compare_to_fp32,
    read_calibration_texts,
    tokenized_inputs,
    quantize,
    weight_matmuls,
)
from onnxport.artifact.layout import model_path  # noqa: E402

TASK = "fill-mask"
# The tiny model's random weights spread 2000 logits thinly: near-ties flip under int8 (measured: 97.3% top-1 on
# real text, cosine 0.99987, for every recipe). Random weights are no test of int8 accuracy; the default gate
# (99%) is asserted on the trained model below. Their predictions at masked positions are near-ties throughout
# (measured 90% under static-qdq-percentile on 290 positions): the tiny model is gated on all positions.
TINY_TOP1 = 0.95
TINY_GATE = "all-outputs"


@pytest.fixture(scope="module")
def trained():
    return trained_roberta.cached_checkpoint()


@pytest.fixture(scope="module")
def tiny_export(trained, tmp_path_factory):
    """A tiny random RoBERTa fill-mask export (transformers' 0.02 weight scale) with the trained model's byte-level
    BPE files, so texts tokenize with the export's own tokenizer."""
    import torch

    from onnxport.configs import AutoConfig
    from onnxport.reference_models.pt import RobertaForMaskedLM

    root = tmp_path_factory.mktemp("quant-recipes")
    checkpoint = root / "checkpoint"
    config = AutoConfig.for_model("roberta", vocab_size=len(json.loads((trained / "vocab.json").read_text())),
                                  hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, initializer_range=0.02)
    torch.manual_seed(0)
    RobertaForMaskedLM(config).eval().save_pretrained(checkpoint)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(trained / name, checkpoint / name)
    out = root / "fp32"
    export(str(checkpoint), str(out), framework="pt", task=TASK)
    return out


@pytest.fixture(scope="module")
def texts():
    return trained_roberta.train_text()[:96]


def _fresh_inputs(export_dir):
    """Held-out sentences, never used for calibration or the gate."""
    return tokenized_inputs(str(export_dir), load_spec(str(export_dir)), trained_roberta.held_out_text()[:96])


# ----------------------------------------------------------------------------- calibration files
def test_calibration_file_formats(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first text\n\n  second text  \nthird\n", encoding="utf-8")
    assert read_calibration_texts(plain) == ["first text", "second text", "third"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(json.dumps({"text": "a question?", "text_pair": "a context."}) + "\n\n"
                     + json.dumps({"text": "alone", "label": 3}) + "\n", encoding="utf-8")
    assert read_calibration_texts(jsonl) == [("a question?", "a context."), "alone"]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "is empty"),
    ("\n  \n", "is empty"),
    ('{"text": "ok"}\n{"text": broken}\n', r"texts.txt:2: not a JSON object"),
    ('{"text": "ok"}\n{"label": 1}\n', r"texts.txt:2: .*\"text\""),
    ('{"text": "ok", "text_pair": 5}\n', r"texts.txt:1: .*text_pair"),
    ('{"text": ""}\n', r"texts.txt:1: .*non-empty"),
])
def test_calibration_file_errors(tmp_path, content, message):
    path = tmp_path / "texts.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_calibration_texts(path)


def test_cli_refuses_bad_calibration_and_writes_nothing(tiny_export, tmp_path, capsys):
    from onnxport.cli import main

    out = tmp_path / "int8"
    (tmp_path / "empty.txt").write_text("")
    assert main(["quantize", str(tiny_export), "--out", str(out), "--calibration", str(tmp_path / "empty.txt")]) == 1
    assert "is empty" in capsys.readouterr().err
    assert main(["quantize", str(tiny_export), "--out", str(out), "--calibration", str(tmp_path / "nope.txt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_tokenized_inputs_use_the_exports_tokenizer(tiny_export, trained):
    from tokenizers import ByteLevelBPETokenizer

    spec = load_spec(str(tiny_export))
    sentences = ["A short one.", "A somewhat longer sentence with more words in it than the first."]
    feeds = tokenized_inputs(str(tiny_export), spec, sentences)
    bpe = ByteLevelBPETokenizer(str(trained / "vocab.json"), str(trained / "merges.txt"))
    bos, eos, pad = bpe.token_to_id("<s>"), bpe.token_to_id("</s>"), bpe.token_to_id("<pad>")
    rows = [row for f in feeds for row in zip(f["input_ids"], f["attention_mask"])]
    for sentence, (ids, mask) in zip(sentences, rows):  # sorted by length: the input order here
        want = [bos] + bpe.encode(sentence).ids + [eos]
        assert list(ids[mask == 1]) == want and set(ids[mask == 0]) <= {pad}


# ----------------------------------------------------------------------------- each recipe
def _runs_here(name: str) -> bool:
    return not (BASE_RECIPES[name.removesuffix(KEEP_FP32)].smooth and smoothing_unavailable())


@pytest.fixture(scope="module")
def recipe_reports(tiny_export, texts, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-recipe-out")
    return {name: quantize(str(tiny_export), str(root / name), recipe=name, calibration=texts, min_top1=TINY_TOP1,
                           gate=TINY_GATE)
            for name in RECIPES if _runs_here(name)}


def test_smoothing_without_neural_compressor_is_refused_with_the_reason(tiny_export, texts, tmp_path):
    if not smoothing_unavailable():
        pytest.skip("neural-compressor is installed: static-qdq-smooth runs with the other recipes")
    with pytest.raises(QuantizationError, match="static-qdq-smooth cannot run here: .*neural-compressor"):
        quantize(str(tiny_export), str(tmp_path / "s"), recipe="static-qdq-smooth", calibration=texts)
    report = quantize(str(tiny_export), str(tmp_path / "search"), calibration=texts, min_top1=TINY_TOP1,
                      gate=TINY_GATE)
    skipped = {t.recipe: t.skipped for t in report.search if t.skipped}
    assert "neural-compressor" in skipped["static-qdq-smooth"]


@pytest.mark.parametrize("recipe", [r for r in RECIPES if _runs_here(r)])
def test_each_recipe_serves_and_agrees_with_fp32(recipe, recipe_reports, tiny_export):
    from onnxport.runtime import OnnxModelForMaskedLM

    report = recipe_reports[recipe]
    assert report.recipe == recipe and report.passed and report.gate_inputs == "calibration"
    model = onnx.load(report.model_path)
    ops = [n.op_type for n in model.graph.node]
    if recipe.startswith("static"):
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "MatMulInteger" not in ops
    else:
        # Q/K/V read one input: merged into one GEMM (int8_graph), 2 fewer per layer
        assert ops.count("MatMulInteger") + report.merged_gemms == report.quantized_nodes and "QuantizeLinear" not in ops
        quantized_qkv = [sum(1 for p in ("query", "key", "value")
                             if f"layer.{layer}/attention/self/{p}/MatMul" not in report.kept_fp32) for layer in (0, 1)]
        assert report.merged_gemms == sum(max(0, n - 1) for n in quantized_qkv)
    # The nodes the recipe keeps in fp32 are exactly the weight MatMuls left in fp32.
    assert sorted(weight_matmuls(model)) == sorted(report.kept_fp32)
    if not recipe.endswith(KEEP_FP32):
        assert report.kept_fp32 == []
    total = len(weight_matmuls(onnx.load(model_path(tiny_export))))
    assert total == 13 and report.quantized_nodes == total - len(report.kept_fp32)  # 2 x 6 layer weights + head dense

    # Served by the runtime, against the fp32 export on sentences neither the gate nor calibration saw.
    fp32 = OnnxModelForMaskedLM.from_pretrained(str(tiny_export), provider="cpu")
    int8 = OnnxModelForMaskedLM.from_pretrained(report.out_dir, provider="cpu")
    want, got = [], []
    for feeds in _fresh_inputs(tiny_export):
        mask = feeds["attention_mask"].astype(bool)
        want.append(fp32(**feeds)["logits"][mask])
        got.append(int8(**feeds)["logits"][mask])
    want, got = np.concatenate(want).astype(np.float64), np.concatenate(got).astype(np.float64)
    assert len(want) > 1000
    assert want.ravel() @ got.ravel() / (np.linalg.norm(want) * np.linalg.norm(got)) >= 0.999
    assert np.mean(want.argmax(-1) == got.argmax(-1)) >= TINY_TOP1
    assert 0 < np.max(np.abs(want - got)) < 0.5  # really quantized, and close


def test_onnxport_json_records_recipe_cpu_and_gate(recipe_reports, texts):
    report = recipe_reports["static-qdq"]
    q = json.loads(open(os.path.join(report.out_dir, "onnxport.json")).read())["quantization"]
    assert q["recipe"] == "static-qdq" and q["kept_fp32"] == [] and q["per_channel"] is True
    assert q["gate_inputs"] == "calibration" and q["gate_texts"] == len(texts)
    assert q["calibration"] == {"texts": len(texts), "method": "MinMax", "used": True}
    assert q["passed"] and q["top1_agreement"] == report.top1_agreement and q["cosine"] == report.cosine
    assert q["outputs"][0]["rows"] == report.main.rows > 1000
    flags = open("/proc/cpuinfo").read() if os.path.isfile("/proc/cpuinfo") else ""
    vnni = any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    assert q["cpu"]["reduce_range"] == q["reduce_range"] and q["cpu"]["reduce_range_chosen_by"] == "cpu"
    if flags:
        assert q["cpu"]["vnni"] is vnni and q["reduce_range"] is (not vnni)
        assert set(q["cpu"]["flags"]) <= set(flags.split())


def test_search_picks_the_fastest_passing_recipe(tiny_export, texts, tmp_path):
    report = quantize(str(tiny_export), str(tmp_path / "int8"), calibration=texts, min_top1=TINY_TOP1,
                      gate=TINY_GATE)
    tried = {t.recipe: t for t in report.search}
    assert set(tried) >= {"dynamic", "dynamic-per-channel", "static-qdq", "static-qdq-entropy",
                          "static-qdq-percentile", "static-qdq-smooth"}
    passing = [t for t in report.search if t.passed]
    assert passing and report.recipe in {t.recipe for t in passing}
    if len(passing) > 1:  # the fastest, or within timing noise of it the farthest inside the gate
        fastest = min(t.latency_ms for t in passing)
        ties = [t for t in passing if t.latency_ms <= fastest * SPEED_TIE]
        assert tried[report.recipe] in ties
        assert tried[report.recipe].shortfall == min(t.shortfall for t in ties)
    q = json.loads((tmp_path / "int8" / "onnxport.json").read_text())["quantization"]
    assert q["recipe"] == report.recipe and [t["recipe"] for t in q["search"]] == [t.recipe for t in report.search]


def test_cli_recipe_pins_and_generated_inputs_without_calibration(tiny_export, tmp_path, capsys):
    from onnxport.cli import main

    out = tmp_path / "pinned"
    assert main(["quantize", str(tiny_export), "--out", str(out), "--recipe", "dynamic-per-channel",
                 "--min-top1", str(TINY_TOP1), "--gate", TINY_GATE]) == 0
    assert "int8 recipe dynamic-per-channel" in capsys.readouterr().out
    q = json.loads((out / "onnxport.json").read_text())["quantization"]
    assert q["recipe"] == "dynamic-per-channel" and [t["recipe"] for t in q["search"]] == ["dynamic-per-channel"]
    assert q["gate_inputs"] == "generated" and q["gate_texts"] == 0


def test_failing_gate_with_calibration_leaves_nothing(tiny_export, texts, tmp_path):
    out = tmp_path / "int8"
    with pytest.raises(QuantizationError, match="beyond the thresholds(.|\n)*Nothing was written"):
        quantize(str(tiny_export), str(out), recipe="static-qdq", calibration=texts, min_cosine=1.0 + 1e-9)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == []


# ----------------------------------------------------------------------------- trained weights
@pytest.fixture(scope="module")
def trained_int8(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-trained")
    fp32 = root / "fp32"
    export(str(trained), str(fp32), framework="pt", task=TASK)
    # Calibration on training-side text only: the gate below is measured on held-out text.
    report = quantize(str(fp32), str(root / "int8"), recipe="dynamic-per-channel" + KEEP_FP32,
                      calibration=trained_roberta.train_text()[:256])
    return fp32, report


def test_trained_int8_keeps_the_default_gate_on_held_out_text(trained_int8):
    fp32, report = trained_int8
    assert report.passed and report.gate_texts == 256
    # Measured: quantized alone, the LM head's dense projection costs ~1% top-1 (all others <= 0.4%).
    assert "/model/lm_head/dense/MatMul" in report.kept_fp32 and len(report.kept_fp32) <= 4
    spec = load_spec(str(fp32))
    held_out = tokenized_inputs(str(fp32), spec, trained_roberta.held_out_text()[:384])
    main = compare_to_fp32(model_path(fp32), report.model_path, spec, inputs=held_out)[0]
    assert main.rows > 5000
    assert main.top1_agreement >= 0.99 and main.cosine >= 0.999, main


def test_merged_qkv_gemms_leave_the_outputs_as_they_are(tiny_export, tmp_path):
    """Q, K and V read one quantized input: int8_graph merges their GEMMs into one (weights, per-column scales and
    biases concatenated, a Split after). Against ONNX Runtime's own quantize_dynamic output, unmerged: the same
    numbers, bit for bit, on held-out text, with one GEMM per layer instead of three."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxport.exporters import int8_graph

    unmerged = str(tmp_path / "unmerged.onnx")
    for per_channel, weights in ((False, QuantType.QInt8), (True, QuantType.QInt8), (False, QuantType.QUInt8)):
        quantize_dynamic(model_path(tiny_export), unmerged, per_channel=per_channel, weight_type=weights,
                         op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
        model = onnx.load(unmerged)
        before = [n.op_type for n in model.graph.node].count("MatMulInteger")
        assert int8_graph.fuse_shared_input_gemms(model) == 4 and int8_graph.merged_gemms(model) == 4
        assert [n.op_type for n in model.graph.node].count("MatMulInteger") == before - 4
        onnx.checker.check_model(model)
        a = ort.InferenceSession(unmerged, providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for feeds in _fresh_inputs(tiny_export)[:3]:
            want, got = a.run(None, feeds)[0], b.run(None, feeds)[0]
            assert np.array_equal(want, got), (per_channel, weights, float(np.abs(want - got).max()))


def test_merging_rewrites_a_model_with_external_data(tiny_export, tmp_path):
    """A dynamic model past the protobuf limit is built with external data: the merge reads it, writes one fresh
    data file (onnx appends to an existing one), and the model computes as before."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    from onnxport.exporters.quantize import _merge_shared_input_gemms

    plain, external = str(tmp_path / "plain.onnx"), str(tmp_path / "external" / "model.onnx")
    os.makedirs(os.path.dirname(external))
    options = dict(op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    quantize_dynamic(model_path(tiny_export), plain, **options)
    quantize_dynamic(model_path(tiny_export), external, use_external_data_format=True, **options)
    data = [f for f in os.listdir(os.path.dirname(external)) if f != "model.onnx"]
    assert len(data) == 1
    before = os.path.getsize(os.path.join(os.path.dirname(external), data[0]))
    assert _merge_shared_input_gemms(external, external=True) == 4
    files = sorted(os.listdir(os.path.dirname(external)))
    assert files == ["model.onnx", "model.onnx.data"]
    # The same weights (Q/K/V concatenated, not copied twice): no appended duplicate.
    assert os.path.getsize(os.path.join(os.path.dirname(external), "model.onnx.data")) <= before * 1.02
    a = ort.InferenceSession(plain, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(external, providers=["CPUExecutionProvider"])
    for feeds in _fresh_inputs(tiny_export)[:2]:
        assert np.array_equal(a.run(None, feeds)[0], b.run(None, feeds)[0])
