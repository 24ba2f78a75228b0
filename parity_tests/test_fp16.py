"""fp16 exports (``export(..., dtype="fp16")``, ``onnxport export --fp16``) against the fp32 native model.

Reference: transformers' PyTorch class on the same checkpoint, in fp32. The fp16 graph runs on ONNX Runtime's
CPU provider (and, for RoFormer, on ``onnx.reference`` too, which computes every fp16 op in numpy half
precision). The bar is ``fp16.FP16_TOLERANCE`` times the output's scale (see its comment for the measurement).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from conftest import build_hf_checkpoint, hf_class, sample_inputs  # noqa: E402
from tokenizer_fixtures import write_roberta_files, write_roformer_files, write_xlm_roberta_files  # noqa: E402

from onnxport.exporters import ExportError, artifact, export, load_spec  # noqa: E402
from onnxport.exporters.fp16 import FP16_MAX, FP16_TOLERANCE, MASK_FILL, long_masked_run  # noqa: E402
from onnxport.artifact.layout import model_path

FAMILIES = ("xlm-roberta", "roberta-prelayernorm", "roformer")
TOKENIZER_WRITERS = {"xlm-roberta": write_xlm_roberta_files, "roberta-prelayernorm": write_roberta_files,
                     "roformer": write_roformer_files}
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Per family: a fill-mask checkpoint with tokenizer files, its fp32 and its fp16 export directory."""
    from onnxport.tokenizers import AutoTokenizer

    root = tmp_path_factory.mktemp("fp16")
    out = {}
    for model_type in FAMILIES:
        tokenizer = TOKENIZER_WRITERS[model_type](root / f"tok-{model_type}")
        checkpoint = root / f"ckpt-{model_type}"
        vocab_size = len(AutoTokenizer.from_pretrained(tokenizer))
        build_hf_checkpoint(checkpoint, model_type, "ForMaskedLM", vocab_size=vocab_size, max_position_embeddings=66)
        for f in tokenizer.iterdir():
            if f.name != "config.json":
                shutil.copy(f, checkpoint / f.name)
        dirs = {dt: str(root / f"{model_type}-{dt}") for dt in ("fp32", "fp16")}
        for dt, directory in dirs.items():
            export(str(checkpoint), directory, framework="pt", task="fill-mask", dtype=dt)
        out[model_type] = (str(checkpoint), dirs)
    return out


def _native(checkpoint, head, feeds):
    model = hf_class(_model_type(checkpoint), head).from_pretrained(checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()})


def _model_type(checkpoint) -> str:
    return json.load(open(os.path.join(checkpoint, "config.json")))["model_type"]


def _rel_diff(got, want) -> float:
    """Max abs difference as a fraction of the output scale: the quantity FP16_TOLERANCE bounds."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / max(1.0, np.max(np.abs(want))))


def _run(directory, feeds):
    session = ort.InferenceSession(model_path(directory), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


@pytest.mark.parametrize("model_type", FAMILIES)
def test_fp16_graph_holds_fp16_weights(model_type, exports):
    _, dirs = exports[model_type]
    m16, m32 = (onnx.load(model_path(dirs[dt])) for dt in ("fp16", "fp32"))
    inits = {i.name: i for i in m16.graph.initializer}
    weights = [n.input[1] for n in m16.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    assert len(weights) >= 13  # 2 layers x 6 projections + the LM head transform
    assert all(inits[w].data_type == FLOAT16 for w in weights)
    embeddings = [i for name, i in inits.items() if "word_embeddings" in name]
    assert embeddings and all(i.data_type == FLOAT16 for i in embeddings)
    # The only fp32 tensors left are LayerNorm parameters (LayerNorm runs in fp32) and scalars.
    consumers = {}
    for node in m16.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    fp32 = [i.name for i in inits.values() if i.data_type == FLOAT and int(np.prod(i.dims)) > 1]
    assert all(consumers.get(name) == {"LayerNormalization"} for name in fp32), fp32
    ratio = artifact.weights_bytes(m16) / artifact.weights_bytes(m32)
    assert 0.45 < ratio < 0.53, ratio
    size16, size32 = (os.path.getsize(model_path(dirs[dt])) for dt in ("fp16", "fp32"))
    assert size16 < 0.75 * size32  # tiny model: the graph itself is a large part of the file
    meta = json.load(open(os.path.join(dirs["fp16"], "onnxport.json")))
    assert meta["dtype"] == "fp16" and meta["validation"]["passed"]
    # the attention node (its softmax inside) reads the mask: fp32, as Softmax was before the op existed
    assert {"LayerNormalization", "Attention"} <= set(meta["precision"]["fp32_nodes"])
    assert [o["dtype"] for o in meta["io_spec"]["outputs"]] == ["float32"]
    onnx.checker.check_model(m16, full_check=True)
    assert m16.ir_version <= 11


def test_fp16_file_is_about_half(checkpoint_factory, tmp_path):
    """A model whose weights dominate the file: the fp16 file is about half the fp32 one."""
    # Trained-model-sized weights (transformers' initializer_range): the suite's default of 0.2 makes this
    # 128-wide model's pooler differ by ~1.5e-2 in fp16 on some inputs (seen with and without token types).
    checkpoint = checkpoint_factory("xlm-roberta", "Model", hidden_size=128, intermediate_size=512, vocab_size=2000,
                                    initializer_range=0.02)
    sizes = {}
    for dt in ("fp32", "fp16"):
        export(checkpoint, str(tmp_path / dt), task="feature-extraction", dtype=dt, validate=dt == "fp16")
        sizes[dt] = os.path.getsize(Path(model_path(tmp_path / dt)))
    assert 0.45 < sizes["fp16"] / sizes["fp32"] < 0.56, sizes


@pytest.mark.parametrize("model_type", FAMILIES)
def test_fp16_matches_fp32_native(model_type, exports):
    """Padded batch (padding masked) and a long masked run: finite everywhere, within the fp16 bar of fp32 native."""
    checkpoint, dirs = exports[model_type]
    spec = load_spec(dirs["fp16"])
    padded = sample_inputs(model_type, batch=4, seq=16, vocab_size=spec.extra["vocab_size"])
    long_run = long_masked_run(spec, batch=3, sequence=60, real=2)  # rows 2-3: 58 masked positions
    for feeds in (padded, long_run):
        feeds = {k: v for k, v in feeds.items() if k in spec.input_names}
        (got,) = _run(dirs["fp16"], feeds)
        want = _native(checkpoint, "ForMaskedLM", feeds).logits.numpy()
        assert got.dtype == np.float32 and np.isfinite(got).all()
        assert _rel_diff(got, want) < FP16_TOLERANCE
        assert 1e-5 < _rel_diff(got, want)  # really fp16 arithmetic, not an fp32 copy
        real = feeds["attention_mask"].astype(bool)
        assert (got[real].argmax(-1) == want[real].argmax(-1)).mean() >= 0.95  # near-ties may flip one token


@pytest.mark.parametrize("model_type", FAMILIES)
def test_mask_values_finite_in_half_precision(model_type, exports):
    """The additive mask holds 0 / MASK_FILL, finite in fp16; no float constant of the graph leaves the fp16 range."""
    _, dirs = exports[model_type]
    model = onnx.load(model_path(dirs["fp16"]))
    values = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type in (FLOAT, FLOAT16)]
    values += [onnx.numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value" and a.t.data_type in (FLOAT, FLOAT16)]
    assert all(np.all(np.abs(v) <= FP16_MAX) for v in values)
    scalars = {n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
               if a.name == "value" and int(np.prod(a.t.dims)) == 1}
    scalars.update({i.name: i for i in model.graph.initializer if int(np.prod(i.dims)) == 1})
    fills = {name for name, t in scalars.items() if onnx.numpy_helper.to_array(t).reshape(-1)[0] == MASK_FILL}
    mask_nodes = [n for n in model.graph.node if n.op_type == "Mul" and fills & set(n.input)]
    assert len(mask_nodes) == 1
    # Expose the additive mask and read it on a long masked run.
    mask_name = mask_nodes[0].output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(mask_name, FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = long_masked_run(load_spec(dirs["fp16"]), batch=2, sequence=50, real=3)
    *_, mask = session.run(None, feeds)
    assert np.isfinite(mask.astype(np.float16)).all()
    assert set(np.unique(mask)) == {0.0, MASK_FILL}
    assert (mask[1].reshape(-1) == MASK_FILL).sum() == 47


def test_rotary_in_fp16_function_body_reference_and_fused(exports):
    """RoFormer's custom rotary op in fp16: its function body under onnx.reference (fp16 numpy arithmetic) and
    ONNX Runtime's fused com.microsoft.RotaryEmbedding (the runtime's CPU/CUDA lowering) agree with fp32 native."""
    from onnx.reference import ReferenceEvaluator

    from onnxport.exporters import rotary_op

    checkpoint, dirs = exports["roformer"]
    model = onnx.load(model_path(dirs["fp16"]))
    nodes = rotary_op.rotary_nodes(model)
    assert len(nodes) == 4
    assert [f.name for f in model.functions] == ["RotaryEmbedding", "Attention"]
    vocab_size = load_spec(dirs["fp16"]).extra["vocab_size"]
    feeds = sample_inputs("roformer", batch=3, seq=12, vocab_size=vocab_size)
    want = _native(checkpoint, "ForMaskedLM", feeds).logits.numpy()
    reference = ReferenceEvaluator(model).run(None, feeds)[0]
    assert _rel_diff(reference, want) < FP16_TOLERANCE
    lowered = rotary_op.lower_to_contrib(model)
    fused = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _rel_diff(fused, want) < FP16_TOLERANCE


@pytest.mark.parametrize("model_type", FAMILIES)
def test_runtime_pipeline_same_top1_as_fp32(model_type, exports):
    from onnxport.runtime import pipeline
    from onnxport.tokenizers import AutoTokenizer

    checkpoint, dirs = exports[model_type]
    mask = AutoTokenizer.from_pretrained(checkpoint).mask_token
    texts = [f"hello world, the quick brown {mask}", f"今天天气{mask}好", f"{mask}",
             f"the lazy dog jumps over the {mask} brown fox and the fox is happy about it"]
    results = {dt: pipeline("fill-mask", dirs[dt], provider="cpu")(texts, top_k=3) for dt in dirs}
    for a, b in zip(results["fp32"], results["fp16"]):
        assert a[0]["token"] == b[0]["token"]
        assert abs(a[0]["score"] - b[0]["score"]) < 1e-2


def test_text_generation_with_past_fp16(checkpoint_factory, tmp_path):
    """The decoding cache is float16 in and out; two steps through the runtime match fp32 native on the full text."""
    from onnxport.runtime import OnnxModelForCausalLM

    checkpoint = checkpoint_factory("roformer", "ForCausalLM")
    out = tmp_path / "gen"
    report = export(checkpoint, str(out), task="text-generation", with_past=True, dtype="fp16")
    assert report.validation.passed and {r.case for r in report.validation.rows} >= {"fresh", "empty-past", "long-mask"}
    spec = load_spec(str(out))
    assert {t.dtype for t in spec.inputs if t.name.startswith("past_key_values.")} == {"float16"}
    assert {t.dtype for t in spec.outputs if t.name.startswith("present.")} == {"float16"}
    model = OnnxModelForCausalLM.from_pretrained(str(out), provider="cpu")
    feeds = sample_inputs("roformer", batch=2, seq=10)
    ids, types = feeds["input_ids"], feeds["token_type_ids"]
    mask = np.ones_like(ids)
    first = model(input_ids=ids[:, :7], attention_mask=mask[:, :7], token_type_ids=types[:, :7])
    assert first.past_key_values[0][0].dtype == np.float16 and first.logits.dtype == np.float32
    second = model(input_ids=ids[:, 7:], attention_mask=mask, token_type_ids=types[:, 7:],
                   past_key_values=first.past_key_values)
    want = _native(checkpoint, "ForCausalLM", {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    got = np.concatenate([first.logits, second.logits], axis=1)
    assert np.isfinite(got).all() and _rel_diff(got, want.logits.numpy()) < FP16_TOLERANCE


def test_cli_fp16_and_rejected_combinations(exports, tmp_path, capsys):
    from onnxport.cli import main
    from onnxport.exporters.quantize import QuantizationError, quantize

    checkpoint, dirs = exports["xlm-roberta"]
    assert main(["export", checkpoint, str(tmp_path / "cli"), "--fp16"]) == 0
    assert "fp16" in capsys.readouterr().out
    meta = json.load(open(tmp_path / "cli" / "onnxport.json"))
    assert meta["dtype"] == "fp16" and meta["task"] == "fill-mask" and meta["validation"]["passed"]
    assert main(["export", checkpoint, str(tmp_path / "both"), "--fp16", "--quantize", "int8"]) == 2
    assert "--fp16 and --quantize int8 do not combine" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()
    with pytest.raises(QuantizationError, match="fp16 export"):
        quantize(dirs["fp16"], str(tmp_path / "q"))
    with pytest.raises(ExportError, match="dtype='bf16'"):
        export(checkpoint, str(tmp_path / "bf16"), dtype="bf16")
